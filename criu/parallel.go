package criu

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
)

// eachParallel calls fn(i) for every i in [0, n) on GOMAXPROCS
// goroutines, in increasing order of i as far as they go, and returns
// when every call has. Per-task work that needs no ptrace runs this way
// on both cores of the machines ctcr targets.
func eachParallel(n int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range max(1, min(runtime.GOMAXPROCS(0), n)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// writeQueued runs the image writes of jobs in parallel and returns the
// error of the first job in order that failed. In a tree of 1,000
// processes they took a sixth of the dump on one thread: each is an
// open, an encoding, a checksum and a close.
func writeQueued(jobs []func() error) error {
	errs := make([]error, len(jobs))
	eachParallel(len(jobs), func(i int) { errs[i] = jobs[i]() })
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// readAheadOf computes fn(i) for every i in [0, n) on background
// goroutines, in increasing order of i, while the caller (the tracer
// thread) works through the same indexes and takes each value with get.
// end stops the goroutines and waits for them.
type readAheadOf[T any] struct {
	ready []chan struct{}
	vals  []T
	errs  []error
	stop  atomic.Bool
	wg    sync.WaitGroup
}

func startReadAheadOf[T any](n int, fn func(i int) (T, error)) *readAheadOf[T] {
	a := &readAheadOf[T]{ready: make([]chan struct{}, n), vals: make([]T, n), errs: make([]error, n)}
	for i := range a.ready {
		a.ready[i] = make(chan struct{})
	}
	var next atomic.Int64
	for range max(1, min(runtime.GOMAXPROCS(0), n)) {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || a.stop.Load() {
					return
				}
				a.vals[i], a.errs[i] = fn(i)
				close(a.ready[i])
			}
		}()
	}
	return a
}

// get waits for the value of index i.
func (a *readAheadOf[T]) get(i int) (T, error) {
	<-a.ready[i]
	return a.vals[i], a.errs[i]
}

// end stops the goroutines and waits for them; get must not be called
// after.
func (a *readAheadOf[T]) end() {
	a.stop.Store(true)
	a.wg.Wait()
}

// pendingImages are images whose contents are known and whose files are
// written later, all at once: a dump with snapshots keeps them while the
// tree is stopped and writes them once it runs.
type pendingImages struct {
	names []string
	jobs  map[string]func() error
}

// writer returns a function that keeps image name of the staging
// directory stage, with its messages, for write. An image kept again
// under the same name replaces the one kept before. The messages must
// not change until write.
func (pi *pendingImages) writer(stage *images.Staging) func(k images.Kind, name string, msgs ...proto.Message) error {
	return func(k images.Kind, name string, msgs ...proto.Message) error {
		if pi.jobs == nil {
			pi.jobs = map[string]func() error{}
		}
		if pi.jobs[name] == nil {
			pi.names = append(pi.names, name)
		}
		pi.jobs[name] = func() error {
			if err := images.WriteFile(stage.Path(name), k, msgs...); err != nil {
				return fmt.Errorf("write %s: %w", name, err)
			}
			return nil
		}
		return nil
	}
}

// write writes every image kept, in parallel (writeQueued); nil writes
// nothing.
func (pi *pendingImages) write() error {
	if pi == nil {
		return nil
	}
	jobs := make([]func() error, len(pi.names))
	for i, name := range pi.names {
		jobs[i] = pi.jobs[name]
	}
	pi.names, pi.jobs = nil, nil
	return writeQueued(jobs)
}

// besideRun is work of a dump that needs no ptrace, only the tree held,
// running in a goroutine of its own while the tasks are dumped.
type besideRun struct {
	done chan error
	err  error
}

// startBeside runs fn in a goroutine. The rollback rb waits for it
// before anything of its own runs (the rollback runs newest first): the
// staging directory is removed only once fn is done writing there, and
// the tree is let go only once fn is done reading it.
func startBeside(fn func() error, rb *rollback) *besideRun {
	b := &besideRun{done: make(chan error, 1)}
	go func() { b.done <- fn() }()
	rb.add(func() { b.wait() })
	return b
}

// wait returns fn's error once it has returned; it may be called again.
// A nil besideRun has nothing to wait for.
func (b *besideRun) wait() error {
	if b == nil {
		return nil
	}
	if b.done != nil {
		b.err = <-b.done
		b.done = nil
	}
	return b.err
}
