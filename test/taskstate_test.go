package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTaskState checks the per-task state that the other scenarios do
// not: credentials, capabilities, securebits, no_new_privs, limits,
// personality, scheduling, pdeathsig, dumpable, the task name, the
// alternate signal stack, a virtual itimer, /proc/self/exe, and the
// general purpose, AVX and AVX-512 registers held across the dump.
func TestTaskState(t *testing.T) {
	sc := scenario{
		name:     "credentials, limits, prctl state and vector registers survive",
		workload: "taskstate",
		json:     true,
	}
	t.Run(sc.name, func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, sc.workload, sc.args...)
		img := filepath.Join(t.TempDir(), "img")
		d := dump(t, w, img, sc.json, sc.minPagesBytes)
		restoreForeground(t, w, img, sc, d)
	})
}

// TestSharedAcrossFork checks that MAP_SHARED anonymous memory inherited
// across fork is one object after restore, seen by parent and child.
func TestSharedAcrossFork(t *testing.T) {
	sc := scenario{
		name: "shared anonymous memory stays shared between parent and child", workload: "sharedfork",
		// The killed child is re-parented to this test (a subreaper):
		// reap it, or its PID stays taken.
		beforeRestore: reapChild,
	}
	t.Run(sc.name, func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, sc.workload, sc.args...)
		img := filepath.Join(t.TempDir(), "img")
		d := dump(t, w, img, sc.json, sc.minPagesBytes)
		sc.beforeRestore(t, w)
		restoreForeground(t, w, img, sc, d)
	})
}

// TestSharedFdTableAndFS checks that a child cloned with CLONE_FILES and
// CLONE_FS still shares its parent's fd table, cwd and umask.
func TestSharedFdTableAndFS(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "sharefiles")
	img := filepath.Join(t.TempDir(), "img")
	sc := scenario{name: "a CLONE_FILES|CLONE_FS child shares its parent's fd table and fs", workload: "sharefiles"}
	d := dump(t, w, img, sc.json, sc.minPagesBytes)
	reapChild(t, w)
	restoreForeground(t, w, img, sc, d)
}

// reapChild reaps the workload's child (child=PID in DIR/ready), which
// the dump killed and this test, a subreaper, inherited.
func reapChild(t *testing.T, w *workload) {
	for _, line := range strings.Split(w.read("ready"), "\n") {
		if v, ok := strings.CutPrefix(line, "child="); ok {
			pid, _ := strconv.Atoi(v)
			if _, reaped, err := reap(pid, 10*time.Second); !reaped {
				t.Fatalf("the dumped child %d was not reaped: %v", pid, err)
			}
		}
	}
}

// TestSharedMemoryAndHandlers checks that a child cloned with CLONE_VM
// and CLONE_SIGHAND still shares its parent's memory and handlers.
func TestSharedMemoryAndHandlers(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "sharevm")
	img := filepath.Join(t.TempDir(), "img")
	sc := scenario{name: "a CLONE_VM|CLONE_SIGHAND child shares its parent's memory and handlers", workload: "sharevm"}
	d := dump(t, w, img, sc.json, sc.minPagesBytes)
	reapChild(t, w)
	restoreForeground(t, w, img, sc, d)
}

// TestVforkRefused checks that a parent waiting in vfork, which ptrace
// cannot stop, makes the dump fail after a second, naming it, instead of
// hanging.
func TestVforkRefused(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "vforker")
	// The vfork child outlives the workload's own cleanup: kill it too,
	// and its parent, so that it comes to this subreaper to be reaped.
	t.Cleanup(func() {
		kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", w.pid, w.pid))
		unix.Kill(w.pid, unix.SIGKILL)
		for _, f := range strings.Fields(string(kids)) {
			if pid, err := strconv.Atoi(f); err == nil {
				unix.Kill(pid, unix.SIGKILL)
				reap(pid, 5*time.Second)
			}
		}
	})
	r := runCtcr(t, 20*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", filepath.Join(t.TempDir(), "img"))
	errOut, _ := os.ReadFile(r.errP)
	if r.status.ExitCode() != 1 || !strings.Contains(string(errOut), "vfork") || !strings.Contains(string(errOut), strconv.Itoa(w.pid)) {
		t.Errorf("dump of a vfork parent exited %d: %s", r.status.ExitCode(), errOut)
	}
}

// TestVforkReleased checks that a dump finding a parent in vfork waits
// for its child to exec (here after 300 ms), then dumps and restores the
// parent and the exec'd child, which the parent finds alive.
func TestVforkReleased(t *testing.T) {
	kids := dumpRestoreWorkload(t, "vforker", "late")
	// The restored parent killed its child and left it to this subreaper.
	for pid := range kids {
		if _, reaped, err := reap(pid, 10*time.Second); !reaped {
			t.Errorf("the restored vfork child %d was not reaped: %v", pid, err)
		}
	}
}

// TestPosixTimers dumps the ptimers workload (three POSIX timers: a
// periodic one signalling the process with a value, one without a
// signal, one signalling a thread), restores it and expects the same
// timers with their ids, signals, targets and time left, ticking on.
func TestPosixTimers(t *testing.T) {
	t.Run("POSIX timers come back with their ids, signals, targets and time left", func(t *testing.T) {
		dumpRestoreWorkload(t, "ptimers")
	})
	t.Run("the ptimers workload passes when it is never dumped", func(t *testing.T) {
		w := startWorkload(t, "ptimers")
		w.checkPasses(30*time.Second, "ptimers")
	})
}

// TestSeccomp dumps the seccomp workload (two filters in the main
// thread, none in a worker), restores it and expects the same filters in
// the same threads, denying what they denied.
func TestSeccomp(t *testing.T) {
	t.Run("seccomp filters come back in the threads that had them", func(t *testing.T) {
		dumpRestoreWorkload(t, "seccomp")
	})
	t.Run("the seccomp workload passes when it is never dumped", func(t *testing.T) {
		w := startWorkload(t, "seccomp")
		w.checkPasses(30*time.Second, "seccomp")
	})
}

// TestSharedAnonymousWrittenByChildren dumps shmemchild, whose shared
// anonymous memory was written by children that exited: its pages are in
// the shared object but in no page table of the dumped task (as the
// buffers of a PostgreSQL server its backends filled). After restore the
// task and a new child find every page.
func TestSharedAnonymousWrittenByChildren(t *testing.T) {
	t.Run("pages only exited children touched come back", func(t *testing.T) {
		dumpRestoreWorkload(t, "shmemchild")
	})
	t.Run("the shmemchild workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "shmemchild").checkPasses(30*time.Second, "shmemchild")
	})
	t.Run("an object no task maps whole comes back whole, each part where it was", func(t *testing.T) {
		kids := dumpRestoreWorkload(t, "shmemparts")
		for pid := range kids {
			reap(pid, 10*time.Second)
		}
	})
	t.Run("the shmemparts workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "shmemparts").checkPasses(30*time.Second, "shmemparts")
	})
}
