package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestEventsAndLocks checkpoints a task that holds eventfds, an epoll
// with registered targets, inotify watches, a signalfd, timerfds, a
// sealed memfd, an unlinked file and flock, POSIX and OFD locks (the
// events workload), and expects each back after restore, as the
// workload checks itself. The dump without --file-locks must fail first,
// naming the lock, and leave the task running.
func TestEventsAndLocks(t *testing.T) {
	w := startWorkload(t, "events")

	t.Run("a dump without --file-locks fails and names the lock", func(t *testing.T) {
		img := filepath.Join(t.TempDir(), "img")
		r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img)
		if r.code() != 1 {
			t.Fatalf("%s: exit status %d, want 1; stderr: %s", r, r.code(), r.stderr())
		}
		msg := r.stderr()
		if !strings.Contains(msg, "lock") || !strings.Contains(msg, "--file-locks") {
			t.Errorf("stderr %q should name the held lock and --file-locks", msg)
		}
		if !exists(w.pid) {
			t.Fatalf("the task did not survive the failed dump")
		}
		if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
			t.Errorf("a failed dump left a checkpoint in %s", img)
		}
	})
	if t.Failed() {
		return
	}

	img := filepath.Join(t.TempDir(), "img")
	logFile := filepath.Join(t.TempDir(), "dump.log")
	w.logs = append(w.logs, logFile)
	r := runCtcr(t, 120*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img, "--file-locks", "-v", "--log-file", logFile)
	w.logs = append(w.logs, r.errP)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d, want 0; stderr: %s%s", r, r.code(), r.stderr(), w.report())
	}
	if _, err := w.waitOriginal(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"memfd.img", "filelocks.img", "remap-fpath.img", "ghost-file-1.img"} {
		if _, err := os.Stat(filepath.Join(img, name)); err != nil {
			t.Errorf("the dump wrote no %s: %v", name, err)
		}
	}
	decodeWithCrit(t, img)
	if _, err := os.Stat(w.path("ghost.dat")); err == nil {
		t.Fatalf("ghost.dat exists after the dump")
	}

	rr := startCtcr(t, "restore", "-D", img, "--file-locks")
	w.logs = append(w.logs, rr.errP)
	// The workload checks once the whole tree runs; give restore a moment
	// to hand over, then ask.
	deadline := time.Now().Add(60 * time.Second)
	for !exists(w.pid) && !rr.exited() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	w.requestCheck()
	if err := rr.wait(120 * time.Second); err != nil {
		t.Fatalf("%v%s", err, w.report())
	}
	if rr.code() != 0 {
		t.Fatalf("%s: exit status %d, want 0 (the restored task's own status)%s", rr, rr.code(), w.report())
	}
	w.assertPassed()
	if _, err := os.Stat(w.path("ghost.dat")); err == nil {
		t.Errorf("ghost.dat reappeared in the workload's directory after restore")
	}
}

// decodeWithCrit decodes every image of dir with Debian's crit, when it
// is installed: what ctcr writes must read as CRIU's format.
func decodeWithCrit(t *testing.T, dir string) {
	t.Helper()
	crit, err := exec.LookPath("crit")
	if err != nil {
		t.Logf("crit is not installed; images not cross-checked")
		return
	}
	imgs, _ := filepath.Glob(filepath.Join(dir, "*.img"))
	for _, p := range imgs {
		base := filepath.Base(p)
		if rawImage(base) {
			continue
		}
		out, err := exec.Command(crit, "decode", "-i", p).CombinedOutput()
		if err != nil {
			t.Errorf("crit decode -i %s: %v\n%s", base, err, tail(string(out), 2000))
		}
	}
}

// rawImage reports an image CRIU writes raw, which crit does not decode
// either: pages, a tmpfs's tar.gz, `ip addr save` and `ip route save`
// output.
func rawImage(base string) bool {
	return strings.HasPrefix(base, "pages-") || strings.HasSuffix(base, ".tar.gz.img") || strings.HasPrefix(base, "ifaddr-") ||
		strings.HasPrefix(base, "route-") || strings.HasPrefix(base, "route6-")
}

// TestInotifyQueuedEventsWarned: events queued on an inotify fd cannot
// be queued again; the dump says so in a warning and goes on.
func TestInotifyQueuedEventsWarned(t *testing.T) {
	needCtcr(t)
	dir := t.TempDir()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "inotify")
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "new"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sleep", "100")
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(cmd.Process.Pid), "-D", filepath.Join(t.TempDir(), "img"), "--leave-running")
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d; stderr: %s", r, r.code(), r.stderr())
	}
	if !strings.Contains(r.stderr(), "warning:") || !strings.Contains(r.stderr(), "events queued") || !strings.Contains(r.stderr(), "fd 3") {
		t.Errorf("%s: stderr %q, want a warning that fd 3's queued events are dropped", r, r.stderr())
	}
}
