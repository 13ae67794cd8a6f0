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
)

// dumpGhostArgs is dump with more flags: it dumps w into img and expects the
// dump to succeed and kill w.
func dumpGhostArgs(t *testing.T, w *workload, img string, extra ...string) {
	t.Helper()
	logFile := filepath.Join(t.TempDir(), "dump.log")
	w.logs = append(w.logs, logFile)
	args := append([]string{"dump", "-t", strconv.Itoa(w.pid), "-D", img, "-v", "--log-file", logFile}, extra...)
	r := runCtcr(t, 120*time.Second, args...)
	w.logs = append(w.logs, r.errP)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d, want 0; stderr: %s%s", r, r.code(), r.stderr(), w.report())
	}
	if _, err := w.waitOriginal(10 * time.Second); err != nil {
		t.Fatalf("after a dump without --leave-running: %v", err)
	}
}

// ghostBytes returns the total size of the ghost images in img.
func ghostBytes(t *testing.T, img string) int64 {
	t.Helper()
	ghosts, _ := filepath.Glob(filepath.Join(img, "ghost-file-*.img"))
	var n int64
	for _, g := range ghosts {
		fi, err := os.Stat(g)
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// TestGhostSizeAndSparse dumps the ghostsparse workload: a 100 MiB
// unlinked file with about 100 KiB of data in islands (and, with
// "dense", a 70 MiB unlinked file written densely). The sparse file must
// be saved by its data extents (images of about its data, the limit
// counting its data, not its size) and come back with its holes, which
// the workload checks with SEEK_DATA/SEEK_HOLE and st_blocks. The dense
// one is over the default --ghost-limit (64M): the dump fails naming it
// and the flag, and the workload runs on; with --ghost-limit 128M it is
// kept.
func TestGhostSizeAndSparse(t *testing.T) {
	t.Run("a 100 MiB sparse unlinked file is saved by its data and restored with its holes", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "ghostsparse")
		img := filepath.Join(t.TempDir(), "img")
		dumpGhostArgs(t, w, img)
		// About 100 KiB of data, and the chunk headers.
		if n := ghostBytes(t, img); n == 0 || n > 1<<20 {
			t.Errorf("the ghost images hold %d bytes, want the sparse file's data only (about 100 KiB)", n)
		}
		decodeWithCrit(t, img)
		restoreForeground(t, w, img, scenario{}, nil)
	})
	t.Run("a dense 70 MiB unlinked file over the default ghost limit fails the dump, naming it and --ghost-limit", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "ghostsparse", "dense")
		img := filepath.Join(t.TempDir(), "img")
		r := runCtcr(t, 120*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img)
		w.logs = append(w.logs, r.errP)
		if r.code() != 1 {
			t.Fatalf("%s: exit status %d, want 1; stderr: %s%s", r, r.code(), r.stderr(), w.report())
		}
		msg := r.stderr()
		for _, want := range []string{filepath.Join(w.dir, "dense.dat"), "73400320 bytes of data", "--ghost-limit", "67108864"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s said %q, want it to name %q", r, strings.TrimSpace(msg), want)
			}
		}
		if strings.Count(strings.TrimSpace(msg), "\n") != 0 {
			t.Errorf("%s printed more than one line: %q", r, msg)
		}
		if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
			t.Errorf("the failed dump left a checkpoint in %s", img)
		}
		w.checkPasses(60*time.Second, "the workload after the refused dump")
	})
	t.Run("with --ghost-limit 128M the dense 70 MiB unlinked file is kept", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "ghostsparse", "dense")
		img := filepath.Join(t.TempDir(), "img")
		dumpGhostArgs(t, w, img, "--ghost-limit", "128M")
		if n := ghostBytes(t, img); n < 70<<20 || n > 71<<20 {
			t.Errorf("the ghost images hold %d bytes, want the 70 MiB of the dense file and the sparse one's 100 KiB", n)
		}
		restoreForeground(t, w, img, scenario{}, nil)
	})
	t.Run("a bad --ghost-limit is bad usage naming the flag", func(t *testing.T) {
		needCtcr(t)
		r := runCtcr(t, 30*time.Second, "dump", "-t", "1", "-D", t.TempDir(), "--ghost-limit", "12X")
		if r.code() != 2 || !strings.Contains(r.stderr(), "ghost-limit") {
			t.Errorf("%s: exit status %d, stderr %q; want 2 and a message naming --ghost-limit", r, r.code(), r.stderr())
		}
	})
}

// launchCopy starts workload name from a copy of its binary in its own
// DIR (DIR/name), so that the workload may delete or replace it.
func launchCopy(t *testing.T, name string, args ...string) *workload {
	t.Helper()
	w := &workload{t: t, name: name, dir: t.TempDir()}
	bin := w.path(name)
	copyFile(t, workloadBin(t, name), bin, 0o755)
	out, err := os.Create(w.path("out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	errf, err := os.Create(w.path("err"))
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	w.cmd = exec.Command(bin, append([]string{w.dir}, args...)...)
	w.cmd.Stdout, w.cmd.Stderr = out, errf
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := w.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	w.pid = w.cmd.Process.Pid
	t.Cleanup(w.cleanup)
	w.waitReady()
	return w
}

// TestDeletedExecutable dumps a process whose executable was deleted
// (unlink) or replaced by another file at its path (replace) while it
// ran, with a child forked since: the executable is kept as a ghost, once,
// and the restored processes run
// with /proc/self/exe leading to one unlinked file of the same content,
// the one the text mapping maps, which the parent can execute again.
func TestDeletedExecutable(t *testing.T) {
	for _, mode := range []string{"unlink", "replace"} {
		t.Run("an executable removed by "+mode+" is kept and set again", func(t *testing.T) {
			needCtcr(t)
			w := launchCopy(t, "exedeleted", mode)
			kids := childrenOf(w.pid)
			if len(kids) != 1 {
				t.Fatalf("exedeleted has children %v, want one", kids)
			}
			img := filepath.Join(t.TempDir(), "img")
			dumpGhostArgs(t, w, img)
			// The child, killed by the dump, was re-parented to this
			// subreaper: reap it, or its PID stays taken.
			for pid := range kids {
				if _, _, err := reap(pid, 10*time.Second); err != nil {
					t.Fatal(err)
				}
			}
			if ghosts, _ := filepath.Glob(filepath.Join(img, "ghost-file-*.img")); len(ghosts) != 1 {
				t.Errorf("the dump wrote ghost images %v, want one for the executable of both tasks", ghosts)
			}
			decodeWithCrit(t, img)
			restoreForeground(t, w, img, scenario{}, nil)
		})
	}
}
