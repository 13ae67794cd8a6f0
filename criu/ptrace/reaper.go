package ptrace

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// peerReapAfter is how long a wait for a task lasts before the watchdog
// looks for dead threads of its group to collect, and then how often it
// looks again. A stop ctcr asks for comes in microseconds; a wait this
// long is one on a task that is dying or running on its own.
const peerReapAfter = 50 * time.Millisecond

var (
	reapedMu sync.Mutex
	// reaped holds the exit statuses of threads the watchdog collected,
	// by thread ID, until a Wait asks for them.
	reaped = map[int]unix.WaitStatus{}
)

// forgetReaped drops a status kept for tid: a task ctcr attaches to
// anew is not the one that died under that ID.
func forgetReaped(tid int) {
	reapedMu.Lock()
	delete(reaped, tid)
	reapedMu.Unlock()
}

// takeReaped returns (and forgets) the status the watchdog collected
// for tid, if it did.
func takeReaped(tid int) (unix.WaitStatus, bool) {
	reapedMu.Lock()
	defer reapedMu.Unlock()
	ws, ok := reaped[tid]
	if ok {
		delete(reaped, tid)
	}
	return ws, ok
}

// peerReaper is the watchdog of one Wait: it reaps dead peers of the
// awaited task and enforces the wait's deadline.
type peerReaper struct {
	mu      sync.Mutex
	stopped bool
	timer   *time.Timer
	// fired is set, with asleep (where the task slept), once the
	// deadline passed and the task was sent SIGSTOP. Guarded by mu.
	fired  bool
	asleep string
	// gaveUp is set once OnStuck was called. Guarded by mu.
	gaveUp bool
}

// OnStuck, if set, is called (once, on the watchdog's goroutine) with
// an error naming the task when a wait's task has not stopped
// stuckGrace after the SIGSTOP its deadline sent: it sleeps where no
// signal reaches it (state D: a stuck file system or device, a frozen
// cgroup), and the wait4 of the tracer thread would block until it
// wakes, which may be never. ctcr's commands set it to report the error
// and exit: a ctcr that dies lets every task it holds go on, as a
// SIGKILL would, which is the only end such a wait can have. Unset, the
// wait goes on blocking.
var OnStuck func(error)

// stuckGrace is how long after its SIGSTOP a task that has not stopped
// counts as stuck: a task in an interruptible sleep stops at once, one
// finishing a long system call within seconds.
var stuckGrace = 10 * time.Second

// startPeerReaper arms the watchdog of a wait for tid: each
// peerReapAfter until stopped, it collects the dead threads of tid's
// group other than tid (reapPeers); once d has passed (d > 0), it
// sends tid SIGSTOP (see waitFor).
func startPeerReaper(tid int, d time.Duration) *peerReaper {
	w := &peerReaper{}
	start := time.Now()
	var tick func()
	tick = func() {
		reapPeers(tid)
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.stopped {
			return
		}
		if d > 0 && !w.fired && time.Since(start) >= d {
			w.fired = true
			w.asleep = wchan(tid)
			// tkill, not tgkill: tid's thread group is not known here,
			// and the stop must be this thread's.
			unix.Syscall(unix.SYS_TKILL, uintptr(tid), uintptr(unix.SIGSTOP), 0)
		}
		if w.fired && !w.gaveUp && OnStuck != nil && time.Since(start) >= d+stuckGrace {
			w.gaveUp = true
			err := fmt.Errorf("%s: no stop within %v, nor %v after SIGSTOP: asleep in %s, where no signal reaches it; once it wakes it stops on that SIGSTOP (kill -CONT resumes it): %w",
				taskName(tid), d, stuckGrace, wchan(tid), ErrWaitTimeout)
			go OnStuck(err)
		}
		w.timer = time.AfterFunc(peerReapAfter, tick)
	}
	w.timer = time.AfterFunc(peerReapAfter, tick)
	return w
}

// expired reports whether the deadline passed, and where the task slept
// then.
func (w *peerReaper) expired() (bool, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fired, w.asleep
}

func (w *peerReaper) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.timer.Stop()
}

// reapPeers collects, with wait4 calls that do not block, the dead
// tracees that hold back the report of tid's death:
//
//   - when tid is a group leader that died, every other thread of its
//     group that is a zombie: the kernel reports a leader's exit only
//     once its other threads are released;
//   - when tid's process is exiting, every child of it that is a zombie
//     ctcr traces (its dead threads first, then itself): the init of a
//     PID namespace (a container's) kills every task of the namespace as
//     it exits and waits, inside the kernel, until each is reaped, but a
//     traced child's death goes to its tracer first.
//
// Any thread of ctcr may collect a tracee, not only its tracer. What it
// collects is kept for the Wait that asks for it (takeReaped).
func reapPeers(tid int) {
	tgid := threadGroup(tid)
	if tgid == 0 {
		return
	}
	if tgid == tid && zombie(tgid, tid) {
		reapThreads(tgid)
	}
	if exiting(tgid) {
		reapDeadChildren(tgid)
	}
}

// reapThreads collects the zombie threads of process tgid but its
// main one.
func reapThreads(tgid int) {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", tgid))
	if err != nil {
		return
	}
	for _, e := range entries {
		peer, err := strconv.Atoi(e.Name())
		if err != nil || peer == tgid || !zombie(tgid, peer) {
			continue
		}
		collect(peer)
	}
}

// reapDeadChildren collects the zombie children of process pid that
// ctcr traces, each with its zombie threads.
func reapDeadChildren(pid int) {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return
	}
	for _, e := range entries {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, e.Name()))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			child, err := strconv.Atoi(f)
			if err != nil || !zombie(child, child) {
				continue
			}
			reapThreads(child)
			collect(child)
		}
	}
}

// collect reaps tid if it is a dead tracee (or child) of ctcr and keeps
// its status.
//
// The lock is held from the wait4 until the status is kept: a Wait for
// tid whose own wait4 finds it gone (ECHILD) looks in reaped under the
// lock, so it cannot miss a status this call has taken but not stored
// yet (it did, about 1 time in 15 under load).
func collect(tid int) {
	reapedMu.Lock()
	defer reapedMu.Unlock()
	var ws unix.WaitStatus
	got, err := unix.Wait4(tid, &ws, unix.WALL|unix.WNOHANG, nil)
	if err != nil || got != tid {
		return // not ours, or not dead yet
	}
	reaped[tid] = ws
}

// exiting reports whether process pid is exiting (PF_EXITING in its
// stat flags, include/linux/sched.h).
func exiting(pid int) bool {
	const pfExiting = 0x4
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 7 {
		return false
	}
	flags, err := strconv.ParseUint(f[6], 10, 64)
	return err == nil && flags&pfExiting != 0
}

// threadGroup returns the thread group ID of tid, or 0 if it is gone.
func threadGroup(tid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// zombie reports whether thread tid of tgid is a zombie (state Z).
func zombie(tgid, tid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", tgid, tid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}
