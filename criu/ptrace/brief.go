package ptrace

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// WaitTimeout waits like Wait for the next state change of tid, for at
// most d: a task that neither stops nor exits by then (asleep in the
// kernel, unkillable) fails the wait with ErrWaitTimeout instead of
// holding ctcr forever.
func WaitTimeout(tid int, d time.Duration) (Stop, error) {
	if ws, ok := takeReaped(tid); ok {
		return Stop{Status: ws}, nil
	}
	start := time.Now()
	deadline := start.Add(d)
	// Polled, so that no wait outlives d; the stops awaited here come in
	// microseconds, so the polling starts fast and stays fast (a 200 µs
	// pause is ~5,000 wait4 calls a second: nothing next to a stop held
	// longer by a slow poll).
	pause := 5 * time.Microsecond
	// As in Wait, a dead leader's report waits for its dead seized
	// threads, which only ctcr can collect: collect them too.
	nextReap := start.Add(peerReapAfter)
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(tid, &ws, unix.WALL|unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err == unix.ECHILD {
			if ws, ok := takeReaped(tid); ok {
				return Stop{Status: ws}, nil
			}
		}
		if err != nil {
			return Stop{}, os.NewSyscallError(fmt.Sprintf("wait4 %d", tid), err)
		}
		if got == tid {
			return Stop{Status: ws}, nil
		}
		if now := time.Now(); now.After(nextReap) {
			reapPeers(tid)
			nextReap = now.Add(peerReapAfter)
			if ws, ok := takeReaped(tid); ok {
				return Stop{Status: ws}, nil
			}
		}
		if time.Now().After(deadline) {
			return Stop{}, fmt.Errorf("task %d: no stop within %v: %w", tid, d, ErrWaitTimeout)
		}
		time.Sleep(pause)
		pause = min(2*pause, 200*time.Microsecond)
	}
}

// ErrWaitTimeout says a task did not reach the awaited state in time.
var ErrWaitTimeout = fmt.Errorf("wait timed out")

// SeizeBriefly attaches to tid and brings it to an interrupt stop, for a
// short call in a task that runs on (ctcr does not keep it): a signal it
// dequeues on the way is delivered as it would have been untraced,
// rather than kept, so nothing needs queueing again afterwards. It
// fails with ErrWaitTimeout if the task does not stop within d; the
// caller then lets the tracer thread end, which detaches it.
func SeizeBriefly(tid int, options int, d time.Duration) error {
	if err := Attach(tid, options); err != nil {
		return err
	}
	deadline := time.Now().Add(d)
	for {
		st, err := WaitTimeout(tid, time.Until(deadline))
		if err != nil {
			return err
		}
		switch {
		case st.Exited():
			return fmt.Errorf("task %d %v while being seized: %w", tid, st, ErrExited)
		case st.Event() == unix.PTRACE_EVENT_STOP:
			return nil
		case st.SignalDelivery():
			if err := Cont(tid, st.Signal()); err != nil {
				return err
			}
		default:
			if err := Cont(tid, 0); err != nil {
				return err
			}
		}
	}
}

// killDeadline bounds CollectExits. A task SIGKILL woke dies at once,
// unless it sleeps uninterruptibly (state D): then it dies when the
// sleep ends, which may be never.
const killDeadline = 10 * time.Second

// CollectExits collects the deaths of the traced threads in tids, which
// ctcr killed, in whatever order the kernel reports them (a leader
// after its other threads, the init of a PID namespace after every task
// in it). A thread not dead within killDeadline fails it, named.
//
// Polled, with WNOHANG, so that it ends by itself. It collects the
// deaths of ctcr's other children too (as any wait for any child does):
// run it when ctcr has none it waits for.
func CollectExits(tids []int) error {
	return collectExits(tids, killDeadline)
}

// collectExits is CollectExits with deadline d.
func collectExits(tids []int, d time.Duration) error {
	left := make(map[int]bool, len(tids))
	for _, tid := range tids {
		if _, ok := takeReaped(tid); !ok {
			left[tid] = true
		}
	}
	deadline := time.Now().Add(d)
	pause := 20 * time.Microsecond
	for len(left) > 0 {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, unix.WALL|unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err == unix.ECHILD {
			// No child left to report: what remains was collected
			// already (by a watchdog) or is not ctcr's to collect.
			for tid := range left {
				if _, ok := takeReaped(tid); ok || !alive(tid) {
					delete(left, tid)
				}
			}
			if len(left) == 0 {
				return nil
			}
		} else if err != nil {
			return os.NewSyscallError(fmt.Sprintf("wait4 for the %d killed tasks left", len(left)), err)
		}
		if got > 0 {
			if ws.Exited() || ws.Signaled() {
				delete(left, got)
			}
			pause = 20 * time.Microsecond
			continue
		}
		if time.Now().After(deadline) {
			for tid := range left {
				return fmt.Errorf("%s (and %d more) not dead %v after SIGKILL (asleep in %s): %w", taskName(tid), len(left)-1, d, wchan(tid), ErrWaitTimeout)
			}
		}
		time.Sleep(pause)
		pause = min(2*pause, time.Millisecond)
	}
	return nil
}

// alive reports whether thread tid exists and is not a zombie.
func alive(tid int) bool {
	tg := threadGroup(tid)
	return tg != 0 && !zombie(tg, tid)
}
