package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Task states beyond a running process (issue 10, "Task state"): tasks
// stopped by job control, zombies of restored parents, scheduling
// policies, SIGTRAP, the audit login uid, membarrier registrations,
// seccomp filters synchronised across threads, chrooted tasks.

// readyValues returns every value of "key VALUE" lines of the workload's
// ready file, as numbers.
func readyValues(t *testing.T, w *workload, key string) []int {
	t.Helper()
	var out []int
	for _, line := range strings.Split(w.read("ready"), "\n") {
		if v, ok := strings.CutPrefix(line, key+" "); ok {
			n, err := strconv.Atoi(strings.Fields(v)[0])
			if err != nil {
				t.Fatalf("ready: %q: %v", line, err)
			}
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		t.Fatalf("ready has no %q line: %q", key, w.read("ready"))
	}
	return out
}

// waitStopped waits until every pid is stopped by job control (state T),
// then checks that each stays so for a while (a task that only passes
// through a stop would fail here).
func waitStopped(t *testing.T, w *workload, pids []int, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, pid := range pids {
		for {
			st, err := readStat(pid)
			if err == nil && st.state == 'T' {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: task %d is not stopped: %s%s", what, pid, describe(pid), w.report())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	time.Sleep(300 * time.Millisecond)
	for _, pid := range pids {
		if st, err := readStat(pid); err != nil || st.state != 'T' {
			t.Fatalf("%s: task %d did not stay stopped: %s%s", what, pid, describe(pid), w.report())
		}
	}
}

// TestStoppedTasks dumps tasks stopped by SIGSTOP or SIGTSTP and expects
// them stopped after restore (and after a dump with --leave-running);
// SIGCONT then resumes them and they check their state.
func TestStoppedTasks(t *testing.T) {
	for _, c := range []struct {
		name, mode string
	}{
		{"a process stopped by SIGSTOP comes back stopped", "self"},
		{"a stopped thread group comes back stopped, every thread counting on after SIGCONT", "threads"},
		{"a process group of tasks stopped by SIGTSTP comes back stopped and resumes with SIGCONT to the group", "pgrp"},
	} {
		t.Run(c.name, func(t *testing.T) {
			needCtcr(t)
			w := startWorkload(t, "stopped", c.mode)
			stopped := readyValues(t, w, "stopped")
			waitStopped(t, w, stopped, "before the dump")
			img := filepath.Join(t.TempDir(), "img")
			dump(t, w, img, false, 0)
			reapChild(t, w)
			r := startCtcr(t, "restore", "-D", img)
			w.logs = append(w.logs, r.errP)
			waitStopped(t, w, stopped, "after restore")
			target := stopped[0]
			if c.mode == "pgrp" {
				target = -readyValues(t, w, "pgrp")[0]
			}
			if err := unix.Kill(target, unix.SIGCONT); err != nil {
				t.Fatal(err)
			}
			if err := r.wait(60 * time.Second); err != nil {
				t.Fatalf("%v%s", err, w.report())
			}
			if r.code() != 0 {
				t.Fatalf("%s: exit status %d%s", r, r.code(), w.report())
			}
			w.assertPassed()
		})
	}
	t.Run("a stopped process stays stopped after a dump with --leave-running", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "stopped", "threads")
		stopped := readyValues(t, w, "stopped")
		waitStopped(t, w, stopped, "before the dump")
		r := runCtcr(t, 60*time.Second, "dump", "--leave-running", "-t", strconv.Itoa(w.pid), "-D", filepath.Join(t.TempDir(), "img"))
		if r.code() != 0 {
			t.Fatalf("%s: exit status %d: %s", r, r.code(), r.stderr())
		}
		waitStopped(t, w, stopped, "after dump --leave-running")
		if tr := statusField(w.pid, "TracerPid"); tr != "0" {
			t.Fatalf("still traced by %s", tr)
		}
		unix.Kill(w.pid, unix.SIGCONT)
		w.checkPasses(30*time.Second, "stopped threads")
	})
}

// TestZombiesOfRestoredParent dumps a task with zombie children it has
// not waited for (one exited, one killed by SIGKILL, one by SIGTERM, one
// in a process group whose leader is gone); after restore it reaps each
// with the status it had.
func TestZombiesOfRestoredParent(t *testing.T) {
	t.Run("zombies come back with their exit status under their restored parent", func(t *testing.T) {
		dumpRestoreWorkload(t, "zombies")
	})
	t.Run("the zombies workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "zombies").checkPasses(30*time.Second, "zombies")
	})
}

// TestSchedPolicies dumps a process whose threads run under
// SCHED_BATCH (nice 5), SCHED_IDLE, SCHED_FIFO 10, SCHED_RR 5 with
// SCHED_RESET_ON_FORK, and SCHED_OTHER nice -3; each thread finds its
// own after restore.
func TestSchedPolicies(t *testing.T) {
	t.Run("each thread keeps its scheduling policy, priority, nice value and reset-on-fork flag", func(t *testing.T) {
		dumpRestoreWorkload(t, "sched")
	})
	t.Run("the sched workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "sched").checkPasses(30*time.Second, "sched")
	})
}

// TestSigtrap dumps a process with a SIGTRAP handler (and, pending, a
// blocked SIGTRAP queued with a value); after restore the handler is
// there, the queued SIGTRAP arrives once unblocked, and int3 reaches the
// handler.
//
// A forced SIGTRAP (a single step, an int3) resets a blocked or ignored
// SIGTRAP's handler to SIG_DFL and unblocks it (force_sig_info_to_task),
// and takes the place of a queued one. The dump forces none: its lone
// calls stop at syscall stops and its batches end on a signal of their
// own. The restore's batches end on int3, so it queues a pending SIGTRAP
// last, between syscall stops, with every signal blocked (finish).
func TestSigtrap(t *testing.T) {
	modes := []string{"handler", "pending"}
	for _, mode := range modes {
		t.Run("SIGTRAP "+mode+" survives", func(t *testing.T) {
			dumpRestoreWorkload(t, "sigtrap", mode)
		})
		t.Run("the sigtrap workload passes when it is never dumped ("+mode+")", func(t *testing.T) {
			startWorkload(t, "sigtrap", mode).checkPasses(30*time.Second, "sigtrap")
		})
	}
}

// TestLoginuid dumps a process that set its audit login uid and then
// dropped CAP_AUDIT_CONTROL; after restore the login uid is the same and
// the capability still gone.
func TestLoginuid(t *testing.T) {
	if _, err := os.Stat("/proc/self/loginuid"); err != nil {
		t.Skip("this kernel has no audit login uid")
	}
	t.Run("the audit login uid is written back by the task before it drops its capabilities", func(t *testing.T) {
		dumpRestoreWorkload(t, "loginuid")
	})
	t.Run("the loginuid workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "loginuid").checkPasses(30*time.Second, "loginuid")
	})
}

// TestMembarrier dumps a process registered for every expedited
// membarrier the kernel offers; after restore it has the same
// registrations and a private expedited barrier works.
func TestMembarrier(t *testing.T) {
	t.Run("membarrier registrations are made again at restore", func(t *testing.T) {
		dumpRestoreWorkload(t, "membarrier")
	})
	t.Run("the membarrier workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "membarrier").checkPasses(30*time.Second, "membarrier")
	})
}

// TestSeccompTsync dumps a process whose threads share a seccomp filter
// installed with SECCOMP_FILTER_FLAG_TSYNC, and its child, which added
// one of its own; after restore the threads still share one filter: a
// new TSYNC filter is accepted and reaches every thread.
func TestSeccompTsync(t *testing.T) {
	t.Run("threads keep sharing a TSYNC filter: another TSYNC works after restore", func(t *testing.T) {
		dumpRestoreWorkload(t, "seccomptsync")
	})
	t.Run("the seccomptsync workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "seccomptsync").checkPasses(30*time.Second, "seccomptsync")
	})
}

// TestChroot dumps a task chrooted into a subdirectory, with its cwd
// inside the new root and, the other way, left outside it; after
// restore it has the same root and cwd.
func TestChroot(t *testing.T) {
	for _, mode := range []string{"inside", "outside"} {
		t.Run("a chrooted task keeps its root and its cwd "+mode+" it", func(t *testing.T) {
			dumpRestoreWorkload(t, "chroot", mode)
		})
	}
	t.Run("the chroot workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "chroot", "inside").checkPasses(30*time.Second, "chroot")
	})
}

// TestContainerStoppedTask checkpoints a runc container in which one
// task was stopped with SIGSTOP (the tree is frozen by its cgroup, then
// seized: the stop shows in the seize after the thaw). After restore
// the task is stopped again, and SIGCONT lets it go on.
func TestContainerStoppedTask(t *testing.T) {
	c := newContainer(t, "stopped", func(s *specs.Spec) {
		s.Process.Args = []string{"sh", "-c", `sleep 100000 &
kill -STOP $!
echo $! > /data/stopped
touch /data/ready
i=0
while :; do i=$((i+1)); echo $i > /data/count; sleep 0.2; done`}
	})
	c.start()
	c.waitFileHolds(t, "/data/stopped", "")
	state := func() string {
		out := c.mustExec(t, `cut -d' ' -f3 /proc/$(cat /data/stopped)/stat`)
		return strings.TrimSpace(out)
	}
	waitState := func(want, when string) {
		t.Helper()
		got := ""
		for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if got = state(); got == want {
				return
			}
		}
		t.Fatalf("%s the stopped task is in state %q, want %q", when, got, want)
	}
	waitState("T", "before the checkpoint")
	dir := filepath.Join(t.TempDir(), "ck")
	logFile := filepath.Join(t.TempDir(), "checkpoint.log")
	r := startCtcr(t, "checkpoint", c.id, "-D", dir, "-v", "--log-file", logFile)
	if err := r.wait(60 * time.Second); err != nil {
		log, _ := os.ReadFile(logFile)
		t.Fatalf("%v\nlog:\n%s", err, log)
	}
	if r.code() != 0 {
		log, _ := os.ReadFile(logFile)
		t.Fatalf("%s: exit status %d: %s\nlog:\n%s", r, r.code(), r.stderr(), log)
	}
	restoreContainer(t, c, dir)
	waitState("T", "after restore")
	time.Sleep(300 * time.Millisecond)
	waitState("T", "300 ms after restore")
	c.mustExec(t, `kill -CONT $(cat /data/stopped)`)
	waitState("S", "after SIGCONT")
}

// TestAMX dumps a process given AMX's tile data (ARCH_REQ_XCOMP_PERM) on
// a CPU with AMX: restore gives the permission back, without which its
// next AMX instruction kills it; a thread whose tiles are configured is
// refused by name, since the images have no field for the tiles.
func TestAMX(t *testing.T) {
	cpu, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cpu), " amx_tile") {
		t.Skip("this CPU has no AMX (amx_tile in /proc/cpuinfo)")
	}
	t.Run("the permission to use AMX is asked for again at restore", func(t *testing.T) {
		dumpRestoreWorkload(t, "amx", "perm")
	})
	t.Run("a thread whose tiles are in use is refused by name", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "amx", "inuse")
		r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", filepath.Join(t.TempDir(), "img"))
		want := fmt.Sprintf("task %d thread %d: its AMX tile registers are in use", w.pid, w.pid)
		if r.code() != 1 || !strings.Contains(r.stderr(), want) {
			t.Fatalf("%s: exit %d, want 1 and %q: %s", r, r.code(), want, r.stderr())
		}
		w.checkPasses(30*time.Second, "the amx workload after the refused dump")
	})
	t.Run("the amx workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "amx", "perm").checkPasses(30*time.Second, "amx")
	})
}
