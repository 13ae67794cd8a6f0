package test

import (
	"fmt"
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

// TestTTYDumpRestore dumps the tty workload, which holds both ends of
// three ptys (termios, locked termios, window size, exclusive mode, the
// slave as its controlling terminal; a locked master in packet mode; a
// canonical echoing pair) with bytes buffered both ways, restores it and
// expects it to find every setting, the buffered bytes exactly once and
// a working connection; dumped with --leave-running it must find the
// same.
func TestTTYDumpRestore(t *testing.T) {
	t.Run("a pty pair held by the tree comes back with its settings and carries bytes both ways", func(t *testing.T) {
		dumpRestoreWorkload(t, "tty")
	})
	t.Run("with --leave-running the tree runs on with the bytes buffered in its ptys given back", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "tty")
		img := filepath.Join(t.TempDir(), "img")
		r := runCtcr(t, 120*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img, "--leave-running")
		if r.code() != 0 {
			t.Fatalf("%s: exit status %d, want 0; stderr: %s", r, r.code(), r.stderr())
		}
		if _, err := os.Stat(filepath.Join(img, "tty-data.img")); err != nil {
			t.Errorf("the dump wrote no tty-data.img: %v", err)
		}
		w.checkPasses(30*time.Second, "tty after dump --leave-running")
	})
	t.Run("the tty workload passes when it is never dumped", func(t *testing.T) {
		w := startWorkload(t, "tty")
		w.checkPasses(30*time.Second, "tty")
	})
}

// openPty opens a new pty pair the way posix_openpt, unlockpt and
// ptsname do: /dev/ptmx, TIOCSPTLCK 0, TIOCGPTN, /dev/pts/N.
func openPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	fd := int(m.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("TIOCSPTLCK: %v", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("TIOCGPTN: %v", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// readUntil reads the non-blocking master m until what it read contains
// want or timeout passes; it returns what it read.
func readUntil(m *os.File, want string, timeout time.Duration) string {
	var got []byte
	buf := make([]byte, 4096)
	for end := time.Now().Add(timeout); time.Now().Before(end) && !strings.Contains(string(got), want); {
		n, err := unix.Read(int(m.Fd()), buf)
		if n > 0 {
			got = append(got, buf[:n]...)
			continue
		}
		if err != nil && err != unix.EAGAIN && err != unix.EINTR {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return string(got)
}

// TestShellJob runs the ttyjob workload on a pty the test holds the
// master of, as a job on a user's terminal: a dump without --shell-job is
// refused and leaves it running; with --shell-job it is dumped, and
// restored with --shell-job from a ctcr whose stdin is another terminal,
// the job's fds 0-2 are that terminal and what it writes arrives there.
func TestShellJob(t *testing.T) {
	needCtcr(t)
	m1, s1 := openPty(t)
	dir := t.TempDir()
	w := &workload{t: t, name: "ttyjob", dir: dir}
	w.cmd = exec.Command(workloadBin(t, "ttyjob"), dir)
	w.cmd.Stdin, w.cmd.Stdout, w.cmd.Stderr = s1, s1, s1
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.pid = w.cmd.Process.Pid
	t.Cleanup(w.cleanup)
	w.waitReady()
	s1.Close()

	img := filepath.Join(dir, "img")
	r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img)
	if r.code() != 1 || !strings.Contains(r.stderr(), "--shell-job") || !strings.Contains(r.stderr(), "/dev/pts/") {
		t.Fatalf("%s: exit status %d, stderr %q; want 1 and a message naming the terminal and --shell-job", r, r.code(), r.stderr())
	}
	if err := assertRunnable(w.pid); err != nil {
		t.Fatalf("after the refused dump: %v", err)
	}
	os.RemoveAll(img)

	r = runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img, "--shell-job")
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d; stderr: %s%s", r, r.code(), r.stderr(), w.report())
	}
	if _, err := w.waitOriginal(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	m1.Close()

	// ctcr restore -d on another terminal: the job's fds become it.
	m2, s2 := openPty(t)
	errP := filepath.Join(dir, "restore.stderr")
	errf, err := os.Create(errP)
	if err != nil {
		t.Fatal(err)
	}
	restore := exec.Command(ctcrBin, "restore", "-D", img, "-d", "--shell-job")
	restore.Stdin, restore.Stdout, restore.Stderr = s2, errf, errf
	err = restore.Run()
	errf.Close()
	w.logs = append(w.logs, errP)
	if err != nil {
		t.Fatalf("ctcr restore -d --shell-job: %v%s", err, w.report())
	}
	s2.Close()
	w.requestCheck()
	ws, _, err := reap(w.pid, 30*time.Second)
	if err != nil {
		t.Fatalf("%v%s", err, w.report())
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("the restored job ended with %s, want exit status 0%s", exitText(ws), w.report())
	}
	w.assertPassed()
	want := fmt.Sprintf("ttyjob %d says hello", w.pid)
	if got := readUntil(m2, want, 5*time.Second); !strings.Contains(got, want) {
		t.Errorf("ctcr's terminal got %q, want the job's %q", got, want)
	}
}
