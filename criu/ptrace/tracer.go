package ptrace

import (
	"errors"
	"fmt"
	"runtime"
)

// Tracer is the one OS thread from which ctcr traces tasks.
type Tracer struct {
	reqs chan func()
	done chan struct{}
}

// NewTracer starts the tracer thread. Close stops it.
func NewTracer() *Tracer {
	t := &Tracer{reqs: make(chan func()), done: make(chan struct{})}
	go t.loop()
	return t
}

func (t *Tracer) loop() {
	// Never unlocked: a thread that traced tasks must not be handed back
	// to the Go scheduler, so when loop returns the thread exits with the
	// goroutine and the kernel detaches whatever is still attached.
	runtime.LockOSThread()
	defer close(t.done)
	for fn := range t.reqs {
		fn()
	}
}

// Do runs fn on the tracer thread and returns its error. A panic in fn is
// returned as an error rather than killing ctcr with tasks still stopped.
func (t *Tracer) Do(fn func() error) (err error) {
	errc := make(chan error, 1)
	t.reqs <- func() {
		defer func() {
			if r := recover(); r != nil {
				errc <- fmt.Errorf("ptrace: panic on tracer thread: %v", r)
			}
		}()
		errc <- fn()
	}
	return <-errc
}

// Close stops the tracer thread. Tasks still attached are detached by the
// kernel when the thread exits (killed if they were attached with
// PTRACE_O_EXITKILL).
func (t *Tracer) Close() {
	close(t.reqs)
	<-t.done
}

// ErrExited is returned when a task exits or is killed while ctcr works on it.
var ErrExited = errors.New("task exited")
