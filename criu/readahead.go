package criu

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	criucore "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/kernel"
	"github.com/ctcr/ctcr/criu/proc"
)

// The part of a dump's per-task work that needs no ptrace (the /proc files
// of every process and thread, prlimit, get_robust_list, sched_getattr)
// is read ahead of the tracer thread, by goroutines on the other cores,
// while the tracer thread runs remote calls. In a tree of 1,000
// processes the /proc reads were half of what the tracer thread spent
// per task, and a process with 1,000 threads read each thread's status
// four times.
//
// Everything read ahead is read while the tree is seized: what the
// tracer thread reads itself later could only differ by what the tasks
// cannot change while stopped.

// procFacts is what readState needs of one process from /proc.
// Immutable once ready is closed.
type procFacts struct {
	ready chan struct{}
	err   error // the first failure; readState returns it

	// maps is nil for a process whose memory another process of the tree
	// shares: the tracer thread reads those itself, after the scratch
	// area of the process before it is gone (a list read ahead could
	// still show that area, and a scratch area mapped at the same
	// address again would be taken for one a dead ctcr left).
	maps        []proc.Mapping
	timers      []proc.PosixTimer
	personality uint32
	rlimits     *criucore.TaskRlimitsEntry
	knobs       criucore.TaskCoreEntry // OomScoreAdj and Loginuid only
	auxv        []uint64
	leftUffds   []int // fds of userfaultfds a dead ctcr left
	threads     []threadFacts
}

// threadFacts is what readState needs of one thread from outside it.
type threadFacts struct {
	status            *proc.Status
	stat              *proc.Stat
	robust, robustLen uint64
	sched             *unix.SchedAttr
}

// readAhead reads the facts of d's live processes on background
// goroutines, in tree order so that the tracer thread, which walks the
// tree in the same order, rarely waits. stop ends it early; it returns
// once every goroutine has.
type readAhead struct {
	facts map[*dumpProc]*procFacts
	stop  atomic.Bool
	wg    sync.WaitGroup
}

// startReadAhead starts reading the facts of procs. The caller must call
// end when done with them.
func startReadAhead(procs []*dumpProc) *readAhead {
	ra := &readAhead{facts: map[*dumpProc]*procFacts{}}
	sharesMm := map[*dumpProc]bool{}
	for _, p := range procs {
		if p.vmOf != nil {
			sharesMm[p], sharesMm[p.vmOf] = true, true
		}
	}
	// A job is one process's own files, or a slice of its threads: a
	// process with 1,000 threads spreads over every worker too.
	type job struct {
		p        *dumpProc
		f        *procFacts
		from, to int // threads [from, to); from < 0: the process's files
		left     *atomic.Int32
	}
	var jobs []job
	for _, p := range procs {
		if p.zombie {
			continue
		}
		f := &procFacts{ready: make(chan struct{}), threads: make([]threadFacts, len(p.threads))}
		ra.facts[p] = f
		left := new(atomic.Int32)
		n := 1
		jobs = append(jobs, job{p: p, f: f, from: -1, left: left})
		for from := 0; from < len(p.threads); from += threadsPerJob {
			jobs = append(jobs, job{p: p, f: f, from: from, to: min(from+threadsPerJob, len(p.threads)), left: left})
			n++
		}
		left.Store(int32(n))
	}
	var errMu sync.Mutex
	var next atomic.Int64
	workers := max(1, runtime.GOMAXPROCS(0))
	for range workers {
		ra.wg.Add(1)
		go func() {
			defer ra.wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(jobs) || ra.stop.Load() {
					return
				}
				j := jobs[i]
				var err error
				if j.from < 0 {
					err = readProcFacts(j.p, j.f, !sharesMm[j.p])
				} else {
					for k := j.from; k < j.to && err == nil; k++ {
						err = readThreadFacts(j.p.pid, j.p.threads[k].tid, &j.f.threads[k])
					}
				}
				if err != nil {
					errMu.Lock()
					if j.f.err == nil {
						j.f.err = err
					}
					errMu.Unlock()
				}
				if j.left.Add(-1) == 0 {
					close(j.f.ready)
				}
			}
		}()
	}
	return ra
}

// threadsPerJob is how many threads one read-ahead job covers: enough to
// keep the jobs' bookkeeping small against the reads (a thread costs
// some 30-60 µs of /proc reads), few enough to share a big process
// among the workers.
const threadsPerJob = 32

// of waits for p's facts. It returns nil for a process that has none
// (a zombie).
func (ra *readAhead) of(p *dumpProc) (*procFacts, error) {
	f := ra.facts[p]
	if f == nil {
		return nil, nil
	}
	<-f.ready
	return f, f.err
}

// end stops the workers and waits for them.
func (ra *readAhead) end() {
	ra.stop.Store(true)
	ra.wg.Wait()
}

// readProcFacts reads the process-wide facts of p; maps too with
// withMaps.
func readProcFacts(p *dumpProc, f *procFacts, withMaps bool) error {
	pid := p.pid
	var err error
	if withMaps {
		if f.maps, err = proc.Maps(pid); err != nil {
			return fmt.Errorf("task %d: %w", pid, err)
		}
	}
	if f.timers, err = proc.ReadTimers(pid); err != nil {
		return fmt.Errorf("task %d: %w", pid, err)
	}
	if f.personality, err = proc.ReadPersonality(pid); err != nil {
		return fmt.Errorf("task %d: %w", pid, err)
	}
	if f.rlimits, err = dumpRlimits(pid); err != nil {
		return fmt.Errorf("task %d: %w", pid, err)
	}
	if err := dumpProcKnobs(pid, &f.knobs); err != nil {
		return err
	}
	if err := sameLSMLabel(pid); err != nil {
		return err
	}
	if f.auxv, err = proc.ReadAuxv(pid); err != nil {
		return fmt.Errorf("task %d: %w", pid, err)
	}
	if p.filesOf == nil { // else the fd table is the parent's
		if f.leftUffds, err = leftUffds(pid); err != nil {
			return err
		}
	}
	return nil
}

// readThreadFacts reads what the dump needs of thread tid of process pid
// from outside it.
func readThreadFacts(pid, tid int, f *threadFacts) error {
	where := fmt.Sprintf("task %d thread %d", pid, tid)
	var err error
	if f.status, err = proc.ReadStatus(pid, tid); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	if f.stat, err = proc.ReadStat(pid, tid); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	if f.robust, f.robustLen, err = getRobustList(tid); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	if f.sched, err = unix.SchedGetAttr(tid, 0); err != nil {
		return fmt.Errorf("%s: sched_getattr: %w", where, err)
	}
	return nil
}

// leftUffds lists the fds of process pid that are userfaultfds which
// never had their API handshake (see dropLeftUffds).
func leftUffds(pid int) ([]int, error) {
	fds, err := proc.Fds(pid)
	if err != nil {
		return nil, fmt.Errorf("task %d: list fds: %w", pid, err)
	}
	var out []int
	prefix := "/proc/" + strconv.Itoa(pid) + "/fd/"
	for _, fd := range fds {
		link, err := os.Readlink(prefix + strconv.Itoa(fd))
		if err != nil || link != "anon_inode:[userfaultfd]" {
			continue
		}
		info, err := proc.ReadFdinfo(pid, fd)
		if err != nil {
			continue
		}
		api, _ := fdinfoField(info.Extra, "API")
		f := strings.Split(api, ":")
		if len(f) != 3 {
			continue
		}
		if features, err := strconv.ParseUint(f[1], 16, 64); err == nil && features&kernel.UFFD_FEATURE_INITIALIZED == 0 {
			out = append(out, fd)
		}
	}
	return out, nil
}
