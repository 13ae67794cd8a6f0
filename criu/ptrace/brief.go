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
	deadline := time.Now().Add(d)
	// Polled, so that no wait outlives d; the stops awaited here come in
	// microseconds, so the polling starts fast and stays fast (a 200 µs
	// pause is ~5,000 wait4 calls a second: nothing next to a stop held
	// longer by a slow poll).
	pause := 5 * time.Microsecond
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(tid, &ws, unix.WALL|unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return Stop{}, os.NewSyscallError(fmt.Sprintf("wait4 %d", tid), err)
		}
		if got == tid {
			return Stop{Status: ws}, nil
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
