package criu

import (
	"runtime"
	"sync"
	"sync/atomic"
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
