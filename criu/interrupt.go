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
	mu     sync.Mutex
	busy   int    // operations running (Begin without End)
	reason string // why they must stop, "" while they may go on
}

// Begin marks the start of an operation that a signal must roll back
// rather than cut short (Dump and Restore mark themselves; callers that
// do more around them, such as a container checkpoint, mark the whole).
// End marks its end.
func Begin() {
	interruption.mu.Lock()
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
// roll back, giving reason in their error. It reports whether any runs:
// if none does, the caller may simply exit.
func Interrupt(reason string) bool {
	interruption.mu.Lock()
	defer interruption.mu.Unlock()
	if interruption.reason == "" {
		interruption.reason = reason
	}
	return interruption.busy > 0
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
