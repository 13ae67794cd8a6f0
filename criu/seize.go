package criu

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/criu/ptrace"
)

// Seizing a tree that runs. A process cannot fork or clone once all its
// threads are seized, so listing threads until no new one appears, then
// children, finds every task it made. What that walk alone misses, and
// what this file handles:
//
//   - a task listed as a child exits before or while it is seized (a
//     fork storm's short-lived children): its parent is seized and
//     cannot reap it, so it is a zombie now and is dumped as one; if its
//     parent lets the kernel reap its children (SIGCHLD ignored), it is
//     gone and left out;
//   - a thread exits between the listing and its seize (a thread storm):
//     the kernel answers ESRCH, or EPERM for a thread already exiting;
//   - a task becomes the child of a task seized earlier (an orphan given
//     to a child subreaper of the tree; CLONE_PARENT): the tree is
//     walked again, children of every seized task listed anew, until a
//     walk finds nothing new.
//
// A task already traced by someone else cannot be seized: the error
// names its tracer.

// seizeRounds bounds how many times the tree is walked again for tasks
// that joined it during the seize. Each new round needs a task that was
// still running (not seized) to make a child of a seized one, and every
// round seizes what it finds, so a tree settles in a few.
const seizeRounds = 50

// errSeizeGone says a process of the tree (not its root) exited and was
// reaped while it was being seized: it is no longer part of the tree.
var errSeizeGone = errors.New("task gone while being seized")

// seize stops every thread of every process under root, walking the
// tree again until it is stable.
//
// Preconditions: runs on the tracer thread.
func (d *dumpTree) seize(root int) error {
	// A process that had no child once all its threads were stopped can
	// never gain one while they stay stopped: only its own threads can
	// fork, an orphan is given only to a reaper among its ancestors, and
	// CLONE_PARENT makes a sibling of a child. The walks again skip it.
	parents := map[*dumpProc]bool{}
	visit := func(p *dumpProc) ([]int, error) {
		kids, err := d.seizeProc(p)
		if len(kids) > 0 {
			parents[p] = true
		}
		return kids, err
	}
	if err := d.walk(root, []int{root}, visit); err != nil {
		return err
	}
	for round := 1; ; round++ {
		fresh, err := d.unseenChildren(parents)
		if err != nil {
			return err
		}
		if len(fresh) == 0 {
			return nil
		}
		if round > seizeRounds {
			return fmt.Errorf("task %d: the tree still gains tasks (%v) after %d walks", root, fresh, seizeRounds)
		}
		d.opts.logf("seize: walk %d finds %d more tasks (%v)", round+1, len(fresh), fresh)
		if err := d.walk(root, fresh, visit); err != nil {
			return err
		}
	}
}

// unseenChildren lists the children of the tree's live processes among
// parents that are not in the tree yet.
func (d *dumpTree) unseenChildren(parents map[*dumpProc]bool) ([]int, error) {
	var out []int
	for _, p := range d.procs {
		if p.zombie || !parents[p] {
			continue
		}
		for _, th := range p.threads {
			kids, err := proc.Children(p.pid, th.tid)
			if err != nil {
				return nil, fmt.Errorf("task %d thread %d: %w", p.pid, th.tid, err)
			}
			for _, k := range kids {
				if _, ok := d.byPid[k]; !ok {
					out = append(out, k)
				}
			}
		}
	}
	return out, nil
}

// seizeProc seizes every thread of p and returns its children.
//
// The threads of one listing are all attached (PTRACE_SEIZE and
// PTRACE_INTERRUPT) before the first is waited for: each must be
// scheduled to reach its stop, and one after the other a process of
// 1,000 threads paid 1,000 wake-ups in a row; attached together, they
// stop in parallel while ctcr attaches the next ones. A thread attached
// and not yet waited for is never left so: every path waits for all
// of them first, and a ctcr killed meanwhile leaves them running (the
// kernel detaches them and drops the pending interrupt).
//
// Preconditions: runs on the tracer thread.
func (d *dumpTree) seizeProc(p *dumpProc) ([]int, error) {
	pid := p.pid
	seized := map[int]bool{}
	lost := false // a thread exited between the listing and its seize
	// failed returns the error for thread tid's failed seize.
	failed := func(tid int, err error) error {
		if errors.Is(err, unix.EPERM) {
			if terr := tracedBy(pid, tid); terr != nil {
				return terr
			}
		}
		if tid == pid || errors.Is(err, ptrace.ErrExited) {
			return d.lostWhileSeized(p, err)
		}
		return err
	}
	for {
		tids, err := proc.Threads(pid)
		if err != nil {
			return nil, d.lostWhileSeized(p, fmt.Errorf("task %d: %w", pid, err))
		}
		var attached []int
		failTid, failErr := 0, error(nil)
		for _, tid := range tids {
			if seized[tid] {
				continue
			}
			if err := ptrace.Attach(tid, seizeOptions); err != nil {
				if tid != pid && threadGone(pid, tid, err) {
					lost = true
					continue // a thread that exited meanwhile
				}
				failTid, failErr = tid, err
				break
			}
			attached = append(attached, tid)
		}
		fresh := false
		for _, tid := range attached {
			stolen, err := ptrace.WaitSeized(tid)
			if err != nil {
				if tid != pid && threadGone(pid, tid, err) {
					lost = true
					continue
				}
				if failErr == nil {
					failTid, failErr = tid, err
				}
				continue
			}
			seized[tid] = true
			fresh = true
			th := &dumpThread{tid: tid, stolen: stolen}
			if tid == pid {
				p.threads = append([]*dumpThread{th}, p.threads...)
				p.stopSig = jobStopSignal(tid)
			} else {
				p.threads = append(p.threads, th)
			}
		}
		if failErr != nil {
			return nil, failed(failTid, failErr)
		}
		if !fresh {
			break
		}
	}
	if len(p.threads) == 0 || p.threads[0].tid != pid {
		return nil, fmt.Errorf("task %d: its main thread could not be seized", pid)
	}
	if lost && groupExiting(pid) {
		// The thread that left called exit_group (or the process was
		// killed): the threads seized already die with it.
		return nil, d.lostWhileSeized(p, fmt.Errorf("task %d exited while being seized: %w", pid, ptrace.ErrExited))
	}
	// Its state may have changed while it was seized (a new parent
	// or group): read it again now that it holds still.
	if st, err := proc.ReadStat(pid, pid); err == nil {
		p.ppid, p.pgid, p.sid, p.stat = st.PPid, st.Pgrp, st.Session, st
	}
	var children []int
	for _, th := range p.threads {
		kids, err := proc.Children(pid, th.tid)
		if err != nil {
			return nil, fmt.Errorf("task %d thread %d: %w", pid, th.tid, err)
		}
		children = append(children, kids...)
	}
	return children, nil
}

// threadGone reports whether thread tid of pid, which could not be
// seized, exited: ESRCH (gone), or EPERM for a thread already exiting
// (the kernel refuses to attach to one), or it died during the seize.
func threadGone(pid, tid int, err error) bool {
	if errors.Is(err, unix.ESRCH) || errors.Is(err, ptrace.ErrExited) {
		return true
	}
	if !errors.Is(err, unix.EPERM) {
		return false
	}
	st, serr := proc.ReadStat(pid, tid)
	return serr != nil || st.State == 'Z' || st.State == 'X'
}

// tracedBy returns the error for a thread that another tracer holds, or
// nil if none does (EPERM had another cause).
func tracedBy(pid, tid int) error {
	st, err := proc.ReadStatus(pid, tid)
	if err != nil || st.TracerPid == 0 || st.TracerPid == os.Getpid() {
		return nil
	}
	comm := "?"
	if ts, err := proc.ReadStat(st.TracerPid, st.TracerPid); err == nil {
		comm = ts.Comm
	}
	who := fmt.Sprintf("task %d", pid)
	if tid != pid {
		who = fmt.Sprintf("task %d thread %d", pid, tid)
	}
	return fmt.Errorf("%s is traced by PID %d (%s): %w", who, st.TracerPid, comm, ErrUnsupported)
}

// exitSettle bounds how long a process that died while being seized is
// given to finish exiting (its other threads to go).
const exitSettle = 2 * time.Second

// lostWhileSeized handles a process whose seize failed with cause: if it
// exited meanwhile (not the root), the threads of it already seized are
// collected and it is kept as the zombie it now is, or dropped if it was
// reaped (errSeizeGone). Otherwise cause is returned.
//
// Preconditions: runs on the tracer thread.
func (d *dumpTree) lostWhileSeized(p *dumpProc, cause error) error {
	pid := p.pid
	deadline := time.Now().Add(exitSettle)
	for {
		_, err := proc.ReadStat(pid, pid)
		dead := err != nil || allExited(pid)
		if !dead {
			if time.Now().After(deadline) {
				return cause
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		// Its seized threads were killed with it: collect their deaths,
		// which the kernel reports to ctcr, their tracer, before the
		// process can become its parent's zombie.
		for _, th := range p.threads {
			for {
				ws, err := ptrace.Wait(th.tid)
				if err != nil || ws.Exited() {
					break
				}
			}
		}
		p.threads = nil
		if pid == d.procs[0].pid {
			return fmt.Errorf("task %d exited while being seized: %w", pid, ErrNoTask)
		}
		if st, err := proc.ReadStat(pid, pid); err == nil && st.State == 'Z' {
			p.zombie, p.exitCode, p.stat = true, uint32(st.ExitCode), st
			d.opts.logf("seize: task %d exited while being seized; it is dumped as a zombie", pid)
			return nil
		}
		d.drop(p)
		d.opts.logf("seize: task %d exited and was reaped while being seized", pid)
		return errSeizeGone
	}
}

// groupExiting reports whether process pid is on its way out: its main
// thread has exited, is exiting (PF_EXITING in its stat flags), or has
// the SIGKILL pending that exit_group (or a fatal signal) sends every
// thread.
func groupExiting(pid int) bool {
	const pfExiting = 0x4 // include/linux/sched.h
	st, err := proc.ReadStatus(pid, pid)
	if err != nil {
		return true
	}
	if stat, err := proc.ReadStat(pid, pid); err != nil || stat.Flags&pfExiting != 0 {
		return true
	}
	return st.State == 'Z' || st.State == 'X' || st.SigPnd&(1<<(unix.SIGKILL-1)) != 0
}

// allExited reports whether every thread of process pid has exited: a
// thread ctcr seized stays listed, a zombie, until ctcr collects it.
func allExited(pid int) bool {
	tids, err := proc.Threads(pid)
	if err != nil {
		return true
	}
	for _, tid := range tids {
		if st, err := proc.ReadStat(pid, tid); err == nil && st.State != 'Z' && st.State != 'X' {
			return false
		}
	}
	return true
}

// drop removes p from the tree.
func (d *dumpTree) drop(p *dumpProc) {
	delete(d.byPid, p.pid)
	for i, q := range d.procs {
		if q == p {
			d.procs = append(d.procs[:i], d.procs[i+1:]...)
			break
		}
	}
}

// walk visits every process of the tree under root not visited yet,
// breadth first from queue, once each: visit (not called for zombies and
// tasks already gone) returns the children to visit next.
func (d *dumpTree) walk(root int, queue []int, visit func(p *dumpProc) ([]int, error)) error {
	// A vfork parent waits inside the kernel until its child execs or
	// exits; ptrace cannot stop it there, so seizing it would hang. The
	// wait is short in practice (posix_spawn's child execs at once): give
	// it vforkWait, unless the tree is frozen and the child cannot run.
	refuseVfork := func(p *dumpProc) error {
		deadline := time.Now().Add(vforkWait)
		for {
			tid := InVfork(p.pid)
			if tid == 0 {
				return nil
			}
			if d.opts.Thaw != nil {
				return fmt.Errorf("task %d (thread %d) waits in vfork for its child, frozen with it: %w", p.pid, tid, ErrUnsupported)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("task %d (thread %d) waits in vfork for its child (for over %v): %w", p.pid, tid, vforkWait, ErrUnsupported)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if _, ok := d.byPid[pid]; ok {
			continue
		}
		p, err := d.addProc(pid, root)
		if err != nil {
			return err
		}
		if p == nil || p.zombie {
			continue // exited and reaped meanwhile, or a zombie: nothing to seize
		}
		if err := refuseVfork(p); err != nil {
			return err
		}
		kids, err := visit(p)
		if errors.Is(err, errSeizeGone) || (err == nil && p.zombie) {
			continue
		}
		if err != nil {
			return err
		}
		queue = append(queue, kids...)
	}
	return nil
}

// addProc records process pid of the tree; nil if it is gone already
// (the root must not be).
func (d *dumpTree) addProc(pid, root int) (*dumpProc, error) {
	st, err := proc.ReadStat(pid, pid)
	if err != nil {
		if pid == root {
			return nil, fmt.Errorf("task %d: %w", pid, ErrNoTask)
		}
		return nil, nil
	}
	p := &dumpProc{pid: pid, ppid: st.PPid, pgid: st.Pgrp, sid: st.Session, stat: st}
	d.procs = append(d.procs, p)
	d.byPid[pid] = p
	if st.State == 'Z' {
		p.zombie = true
		p.exitCode = uint32(st.ExitCode)
	}
	return p, nil
}

// seizeFrozen seizes a tree its cgroup froze: it cannot fork or exit, so
// one walk finds every thread. Each is attached, the cgroup thawed, and
// then each reaches its stop.
//
// A thread stopped by job control is attached only once the
// cgroup is thawed: PTRACE_SEIZE of a stopped task waits, inside the
// kernel, until the task has moved from its job-control stop to a
// ptrace stop, which a frozen task never does (the seize, and ctcr,
// hung). Stopped, it cannot fork or exit meanwhile either.
//
// Preconditions: runs on the tracer thread.
func (d *dumpTree) seizeFrozen(root int) error {
	var all, later []*dumpThread
	thawed := false
	defer func() {
		if !thawed {
			d.opts.Thaw()
		}
	}()
	err := d.walk(root, []int{root}, func(p *dumpProc) ([]int, error) {
		pid := p.pid
		var children []int
		tids, err := proc.Threads(pid)
		if err != nil {
			return nil, fmt.Errorf("task %d: %w", pid, err)
		}
		for _, tid := range tids {
			th := &dumpThread{tid: tid}
			if jobStopped(pid, tid) {
				later = append(later, th)
			} else if err := ptrace.Attach(tid, seizeOptions); err != nil {
				if errors.Is(err, unix.EPERM) {
					if terr := tracedBy(pid, tid); terr != nil {
						return nil, terr
					}
				}
				return nil, err
			}
			if tid == pid {
				p.threads = append([]*dumpThread{th}, p.threads...)
			} else {
				p.threads = append(p.threads, th)
			}
			all = append(all, th)
			kids, err := proc.Children(pid, tid)
			if err != nil {
				return nil, fmt.Errorf("task %d thread %d: %w", pid, tid, err)
			}
			children = append(children, kids...)
		}
		if len(p.threads) == 0 || p.threads[0].tid != pid {
			return nil, fmt.Errorf("task %d: its main thread could not be seized", pid)
		}
		return children, nil
	})
	if err != nil {
		return err
	}
	thawed = true
	if err := d.opts.Thaw(); err != nil {
		return err
	}
	for _, th := range later {
		if err := ptrace.Attach(th.tid, seizeOptions); err != nil {
			return err
		}
	}
	for _, th := range all {
		stolen, err := ptrace.WaitSeized(th.tid)
		th.stolen = stolen
		if err != nil {
			return err
		}
	}
	for _, p := range d.procs {
		if !p.zombie && len(p.threads) > 0 {
			p.stopSig = jobStopSignal(p.pid)
		}
	}
	return nil
}

// jobStopped reports whether thread tid of pid is stopped by job control:
// state T, or, frozen by its cgroup, asleep in do_signal_stop (the
// freezer shows a frozen stopped task as D).
func jobStopped(pid, tid int) bool {
	st, err := proc.ReadStat(pid, tid)
	if err != nil {
		return false
	}
	if st.State == 'T' {
		return true
	}
	wchan, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/wchan", pid, tid))
	return err == nil && string(wchan) == "do_signal_stop"
}

// seizeOptions are the ptrace options of every task a dump seizes:
// no seccomp filter of the task sees ctcr's remote calls, and syscall
// stops are told from SIGTRAPs (ptrace.Remote.Syscall stops at them).
const seizeOptions = unix.PTRACE_O_SUSPEND_SECCOMP | unix.PTRACE_O_TRACESYSGOOD
