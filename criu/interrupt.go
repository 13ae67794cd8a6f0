package criu

import (
	"errors"
	"sync"
)

// ErrInterrupted is returned by an operation that a signal to ctcr
// (SIGINT, SIGTERM, SIGHUP) stopped: it rolled back as any failure does.
var ErrInterrupted = errors.New("interrupted")

// interruption is the state shared by the command's signal handler and
// the operations it may stop.
var interruption struct {
	mu      sync.Mutex
	busy    int    // operations running (Begin without End)
	started bool   // an operation began
	waiting bool   // a restored task is being waited for
	reason  string // why they must stop, "" while they may go on
}

// InterruptAction is what a signal to ctcr should do, given what ctcr is
// doing (see Interrupt).
type InterruptAction int

const (
	// RollBack: an operation runs and will stop and roll back.
	RollBack InterruptAction = iota
	// NotStarted: nothing was changed yet; exit saying so.
	NotStarted
	// Finish: the operation succeeded and ctcr is only reporting it;
	// finish that rather than misreport a success as a failure.
	Finish
	// StopWaiting: ctcr only waits for a restored task, which runs
	// on; exit as the signal would have made it.
	StopWaiting
)

// Begin marks the start of an operation that a signal must roll back
// rather than cut short (Dump and Restore mark themselves; callers that
// do more around them, such as a container checkpoint, mark the whole).
// End marks its end.
func Begin() {
	interruption.mu.Lock()
	interruption.started = true
	interruption.busy++
	interruption.mu.Unlock()
}

// End ends what Begin began.
func End() {
	interruption.mu.Lock()
	interruption.busy--
	interruption.mu.Unlock()
}

// Interrupt asks the running operations to stop at their next step and
// roll back, giving reason in their error, and says what else the
// caller should do.
func Interrupt(reason string) InterruptAction {
	interruption.mu.Lock()
	defer interruption.mu.Unlock()
	if interruption.reason == "" {
		interruption.reason = reason
	}
	switch {
	case interruption.busy > 0:
		return RollBack
	case interruption.waiting:
		return StopWaiting
	case interruption.started:
		return Finish
	}
	return NotStarted
}

// waitingForRestored marks the time ctcr only waits for a task it
// restored.
func waitingForRestored(on bool) {
	interruption.mu.Lock()
	interruption.waiting = on
	interruption.mu.Unlock()
}

// Interrupted returns ErrInterrupted, with the reason, once Interrupt
// was called, and nil before.
func Interrupted() error {
	interruption.mu.Lock()
	defer interruption.mu.Unlock()
	if interruption.reason == "" {
		return nil
	}
	return interruptedError(interruption.reason)
}

// interruptedError says why an operation stopped; it is ErrInterrupted.
type interruptedError string

func (e interruptedError) Error() string     { return string(e) + ", rolled back" }
func (e interruptedError) Is(err error) bool { return err == ErrInterrupted }
