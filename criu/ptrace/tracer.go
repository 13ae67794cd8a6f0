package ptrace

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// The main goroutine keeps the main thread to itself, so no tracer
// goroutine is ever locked to it: Go never ends the main thread (a
// goroutine that exits locked to it wedges it instead), so tasks a
// tracer there held would stay attached, and stopped, until ctcr
// exits. Seen in a test: after Close the thread was still the tracer
// of its task, and the task, killed, never finished dying.
func init() {
	runtime.LockOSThread()
}

// Tracer is the one OS thread from which ctcr traces tasks.
type Tracer struct {
	reqs chan func()
	done chan struct{}
	tid  int // the tracer thread's ID, set before done is closed
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
	t.tid = unix.Gettid()
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
//
// Close returns once the thread is gone, or after threadExitWait: the
// thread ends just after its goroutine, and until it has, its tasks are
// still attached (a caller that looks at them, or waits for one to die,
// would see them traced).
func (t *Tracer) Close() {
	close(t.reqs)
	<-t.done
	task := fmt.Sprintf("/proc/self/task/%d", t.tid)
	for deadline := time.Now().Add(threadExitWait); time.Now().Before(deadline); time.Sleep(50 * time.Microsecond) {
		if _, err := os.Stat(task); err != nil {
			return
		}
	}
}

// threadExitWait bounds how long Close waits for the tracer thread to
// end; it takes microseconds.
const threadExitWait = time.Second

// ErrExited is returned when a task exits or is killed while ctcr works on it.
var ErrExited = errors.New("task exited")
