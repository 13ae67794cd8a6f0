package criu

import (
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/siginfo"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/timer"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/kernel"
	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/criu/ptrace"
)

// restoreMm sets the mm fields (code/data/brk/stack/arg/env bounds,
// auxv, executable) with one prctl(PR_SET_MM, PR_SET_MM_MAP) and the
// task's name.
//
// Preconditions: runs on the tracer thread; the puppet's mappings are
// gone (the kernel refuses a new exe_fd while the old file is mapped).
func (t *restoringTask) restoreMm() error {
	if t.shareVM {
		// The mm is the creator's, set already: only the name is its own.
		return t.setName(t.img.core.Tc.GetComm())
	}
	m := t.img.mm
	fe := t.cp.files[m.GetExeFileId()]
	exe := fe.GetReg()
	// A deleted executable is a ghost: the inode restore recreated (for
	// its mappings already) and unlinked.
	f, ok, err := openGhostFile(t.tree.files, fe)
	if !ok {
		f, err = openInTree(t.pid, exe.GetName(), unix.O_RDONLY)
	}
	if err != nil {
		return fmt.Errorf("%s: executable: %w", t.where(), err)
	}
	exeFd, err := t.sendFd(f)
	f.Close()
	if err != nil {
		return err
	}
	b := t.ctl.newBatch()
	auxvAddr, err := b.put(m.MmSavedAuxv)
	if err != nil {
		return err
	}
	mm := kernel.PrctlMmMap{
		StartCode: m.GetMmStartCode(), EndCode: m.GetMmEndCode(),
		StartData: m.GetMmStartData(), EndData: m.GetMmEndData(),
		StartBrk: m.GetMmStartBrk(), Brk: m.GetMmBrk(), StartStack: m.GetMmStartStack(),
		ArgStart: m.GetMmArgStart(), ArgEnd: m.GetMmArgEnd(), EnvStart: m.GetMmEnvStart(), EnvEnd: m.GetMmEnvEnd(),
		Auxv: auxvAddr, AuxvSize: uint32(8 * len(m.MmSavedAuxv)), ExeFd: uint32(exeFd),
	}
	mmAddr, err := b.put(&mm)
	if err != nil {
		return err
	}
	what := map[int]string{}
	what[b.add(unix.SYS_PRCTL, kernel.PR_SET_MM, kernel.PR_SET_MM_MAP, mmAddr, kernel.PrctlMmMapSize)] = "set mm fields"
	what[b.add(unix.SYS_CLOSE, uint64(exeFd))] = "close the executable"
	if m.GetThpDisabled() {
		what[b.add(unix.SYS_PRCTL, unix.PR_SET_THP_DISABLE, 1, 0, 0, 0)] = "disable THP"
	}
	comm := t.img.core.Tc.GetComm()
	if len(comm) > 15 {
		comm = comm[:15]
	}
	name, err := b.put(comm)
	if err != nil {
		return err
	}
	what[b.add(unix.SYS_PRCTL, unix.PR_SET_NAME, name)] = "set name"
	if res, err := b.run(); err != nil {
		return fmt.Errorf("%s: %s: %w", t.where(), what[len(res)], err)
	}
	return nil
}

// restoreFiles opens every file of the image in ctcr, positions it, and
// passes it to the task, then puts cwd, root and umask back.
func (t *restoringTask) restoreFiles() error {
	// While the transport is sure to be open, before cwd and root move
	// and before the credentials change.
	if err := t.restoreLoginuid(); err != nil {
		return err
	}
	if o := t.filesOwner; o != nil {
		// The table is the owner's, restored already; the last task
		// sharing it closes the transport.
		o.sharers--
		transport := -1
		if o.sharers == 0 {
			transport = t.tfd
		}
		t.tfd = -1
		return t.restoreFS(transport)
	}
	fds := append(t.img.fds[:0:0], t.img.fds...)
	sort.Slice(fds, func(i, j int) bool { return fds[i].GetFd() < fds[j].GetFd() })
	// Every open file description once, all in one message; then one
	// batch moves each received fd above every number in use and dups it
	// to each fd that had it (the received ones take the lowest free
	// numbers, which may be targets of others).
	slot := map[uint32]int{} // file id -> index in files
	var files []*os.File
	high := t.tfd
	for _, e := range fds {
		high = max(high, int(e.GetFd()))
		if _, ok := slot[e.GetId()]; ok {
			continue
		}
		f, err := t.tree.files.get(e.GetId())
		if err != nil {
			return fmt.Errorf("%s fd %d: %w", t.where(), e.GetFd(), err)
		}
		slot[e.GetId()] = len(files)
		files = append(files, f)
	}
	if len(files) > 0 {
		got, err := t.sendFds(files)
		if err != nil {
			return err
		}
		for _, g := range got {
			high = max(high, g)
		}
		base := uint64(high + 1)
		b := t.ctl.newBatch()
		what := map[int]string{}
		for i, g := range got {
			what[b.add(unix.SYS_FCNTL, uint64(g), unix.F_DUPFD_CLOEXEC, base+uint64(i))] = fmt.Sprintf("move received fd %d", g)
			b.add(unix.SYS_CLOSE, uint64(g))
		}
		for _, e := range fds {
			cloexec := uint64(0)
			if e.GetFlags()&unix.FD_CLOEXEC != 0 {
				cloexec = unix.O_CLOEXEC
			}
			what[b.add(unix.SYS_DUP3, base+uint64(slot[e.GetId()]), uint64(e.GetFd()), cloexec)] = fmt.Sprintf("install fd %d", e.GetFd())
		}
		for i := range got {
			b.add(unix.SYS_CLOSE, base+uint64(i))
		}
		res, err := b.run()
		if err != nil {
			return fmt.Errorf("%s: %s: %w", t.where(), what[len(res)], err)
		}
		for i := range got {
			if res[2*i] != base+uint64(i) {
				return fmt.Errorf("%s: received fd %d moved to %d, not %d", t.where(), got[i], res[2*i], base+uint64(i))
			}
		}
		if err := t.rearmAsync(fds, files, slot); err != nil {
			return err
		}
	}
	for _, e := range fds {
		fe := t.cp.files[e.GetId()]
		if k := fileKindOf(fe.GetType()); k != nil && k.fixup != nil {
			if err := k.fixup(t.tree.files, t, int(e.GetFd()), fe); err != nil {
				return fmt.Errorf("%s fd %d: %w", t.where(), e.GetFd(), err)
			}
		}
	}
	transport := -1
	if t.sharers == 0 {
		// Tasks sharing the table still need the transport otherwise.
		transport, t.tfd = t.tfd, -1
	}
	return t.restoreFS(transport)
}

// rearmAsync sets O_ASYNC again through the task's own fd on each file
// in O_ASYNC mode it is the first to get: the signal then carries that
// fd (si_fd), not the number ctcr had the file at. (The kernel keeps one
// fd per file, the last one O_ASYNC was set through: the lowest fd of
// the first task is the restore's choice.)
func (t *restoringTask) rearmAsync(fds []*fdinfo.FdinfoEntry, files []*os.File, slot map[uint32]int) error {
	b := t.ctl.newBatch()
	for _, e := range fds {
		id := e.GetId()
		if t.tree.files.asyncArmed[id] {
			continue
		}
		fl, err := fcntlRaw(files[slot[id]], unix.F_GETFL, 0)
		if err != nil || fl&unix.O_ASYNC == 0 {
			continue
		}
		t.tree.files.asyncArmed[id] = true
		b.add(unix.SYS_FCNTL, uint64(e.GetFd()), unix.F_SETFL, uint64(fl&^unix.O_ASYNC))
		b.add(unix.SYS_FCNTL, uint64(e.GetFd()), unix.F_SETFL, uint64(fl))
	}
	if _, err := b.run(); err != nil {
		return fmt.Errorf("%s: set O_ASYNC through its own fds: %w", t.where(), err)
	}
	return nil
}

// restoreFS gives the task its root, cwd and umask, unless it shares
// them with its creator, which set them already, after closing its fd
// transport (unless transport is -1). The calls wait in t.fsCalls for
// the first batch of restoreTaskState, which comes next: one round trip
// less per process (the close was a lone call, the rest a batch of its
// own).
func (t *restoringTask) restoreFS(transport int) error {
	if t.shareFS {
		if transport < 0 {
			return nil
		}
		t.fsCalls = func(b *batch, what map[int]string) error {
			what[b.add(unix.SYS_CLOSE, uint64(transport))] = fmt.Sprintf("close fd %d", transport)
			return nil
		}
		return nil
	}
	fs := t.img.fs
	// A removed directory is made again first (files_ghostkinds.go).
	root, err := fsDirPath(t.tree.files, fs.GetRootId())
	if err != nil {
		return fmt.Errorf("%s root: %w", t.where(), err)
	}
	cwd, err := fsDirPath(t.tree.files, fs.GetCwdId())
	if err != nil {
		return fmt.Errorf("%s cwd: %w", t.where(), err)
	}
	t.fsCalls = func(b *batch, what map[int]string) error {
		if transport >= 0 {
			what[b.add(unix.SYS_CLOSE, uint64(transport))] = fmt.Sprintf("close fd %d", transport)
		}
		// Both paths are the tree's, not the task's own root's: chdir
		// first, then chroot, which leaves the cwd where it is (inside
		// the new root or, as it may have been, outside it).
		p, err := b.put(cwd)
		if err != nil {
			return err
		}
		what[b.add(unix.SYS_CHDIR, p)] = "cwd " + cwd
		if root != "/" {
			p, err := b.put(root)
			if err != nil {
				return err
			}
			what[b.add(unix.SYS_CHROOT, p)] = "root " + root
		}
		what[b.add(unix.SYS_UMASK, uint64(fs.GetUmask()))] = "umask"
		return nil
	}
	return nil
}

// restoreTaskState gives back the process-wide state (signal
// dispositions, limits, personality, interval timers, the shared signal
// queue) in one batch in the main thread, then each thread's own state
// and credentials, then what a change of credentials resets.
func (t *restoringTask) restoreTaskState(f *restoreFacts) error {
	core := t.img.core
	tc := core.Tc
	where := t.where()
	st, lims := f.status, f.limits
	b := t.ctl.newBatch()
	what := map[int]string{} // call index -> what it restores, for errors
	// First what restoreFS left: the transport's close, cwd, root, umask.
	if t.fsCalls != nil {
		if err := t.fsCalls(b, what); err != nil {
			return err
		}
		t.fsCalls = nil
	}
	sig := 1
	sigactions := tc.Sigactions
	if t.shareSighand {
		sigactions = nil // shared with the creator, which set them
	}
	for _, sa := range sigactions {
		for sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			sig++
		}
		if sig > kernel.NSIG {
			break
		}
		act := kernel.Sigaction{Handler: sa.GetSigaction(), Flags: sa.GetFlags(), Restorer: sa.GetRestorer(), Mask: sa.GetMask()}
		// The new task has every signal at its default but those ctcr's
		// own parent ignored (exec keeps SIG_IGN): skip what is already so.
		if act != (kernel.Sigaction{}) || st.SigIgn&(1<<(sig-1)) != 0 {
			p, err := b.put(&act)
			if err != nil {
				return err
			}
			what[b.add(unix.SYS_RT_SIGACTION, uint64(sig), p, 0, 8)] = fmt.Sprintf("signal %d disposition", sig)
		}
		sig++
	}
	for i, l := range tc.GetRlimits().GetRlimits() {
		if i < len(lims) && lims[i].Soft == l.GetCur() && lims[i].Hard == l.GetMax() {
			continue
		}
		lim := struct{ Cur, Max uint64 }{l.GetCur(), l.GetMax()}
		p, err := b.put(&lim)
		if err != nil {
			return err
		}
		what[b.add(unix.SYS_PRLIMIT64, 0, uint64(i), p, 0)] = fmt.Sprintf("rlimit %d (soft %d, hard %d)", i, l.GetCur(), l.GetMax())
	}
	what[b.add(unix.SYS_PERSONALITY, uint64(tc.GetPersonality()))] = "personality"
	if tc.GetChildSubreaper() {
		what[b.add(unix.SYS_PRCTL, unix.PR_SET_CHILD_SUBREAPER, 1)] = "child subreaper"
	}
	sched, err := t.tree.schedImage()
	if err != nil {
		return err
	}
	if !t.shareVM { // a shared mm was registered by its creator
		if err := restoreMembarrier(sched, b, what, t.vpid); err != nil {
			return err
		}
	}
	// Per thread group, unlike membarrier's, which is per mm.
	if err := restoreXcompPerm(sched, b, what, t.vpid); err != nil {
		return err
	}
	if err := t.queueSignals(b, what, t.vpid, t.vpid, tc.GetSignalsS().GetSignals(), true); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	if timers := tc.GetTimers(); timers != nil {
		for which, it := range []interface {
			GetIsec() uint64
			GetIusec() uint64
			GetVsec() uint64
			GetVusec() uint64
		}{timers.GetReal(), timers.GetVirt(), timers.GetProf()} {
			v := kernel.Itimerval{IntervalSec: int64(it.GetIsec()), IntervalUsec: int64(it.GetIusec()), ValueSec: int64(it.GetVsec()), ValueUsec: int64(it.GetVusec())}
			if v == (kernel.Itimerval{}) {
				continue
			}
			p, err := b.put(&v)
			if err != nil {
				return err
			}
			what[b.add(unix.SYS_SETITIMER, uint64(which), p, 0)] = fmt.Sprintf("itimer %d", which)
		}
		if err := restorePosixTimers(b, what, timers.GetPosix()); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
	}
	main := &restoringThread{tid: t.pid, vtid: t.vpid, core: t.img.core, ctl: t.ctl}
	if len(t.threads) == 0 {
		// A process of one thread: its thread state, its credentials
		// and its dumpable flag follow the process-wide calls in the
		// same batch, in the order the three round trips had (a tree of
		// 1,000 processes made 3,000 of them). The oom_score_adj ctcr
		// writes from outside needs nothing of the task.
		if err := restoreProcKnobs(t.pid, where, tc); err != nil {
			return err
		}
		if _, err := t.threadStateInto(b, what, main); err != nil {
			return err
		}
		// A change of credentials resets it: after them.
		if d := t.img.mm.GetDumpable(); d == 0 || d == 1 {
			what[b.add(unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, uint64(d))] = "dumpable"
		}
		if res, err := b.run(); err != nil {
			return fmt.Errorf("%s: %s: %w", where, what[len(res)], err)
		}
		return nil
	}
	if res, err := b.run(); err != nil {
		return fmt.Errorf("%s: %s: %w", where, what[len(res)], err)
	}
	if err := restoreProcKnobs(t.pid, where, tc); err != nil {
		return err
	}
	threads := append([]*restoringThread{main}, t.threads...)
	if err := t.restoreThreadStates(threads); err != nil {
		return err
	}
	// A change of credentials resets both of these: set them after.
	if d := t.img.mm.GetDumpable(); d == 0 || d == 1 {
		// 2 (suid_dumpable) cannot be set by prctl; the kernel chose it.
		if _, err := t.ctl.call(unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, uint64(d)); err != nil {
			return fmt.Errorf("%s: dumpable: %w", where, err)
		}
	}
	return nil
}

// restoreFacts is what restoreTaskState reads of a task from /proc
// before it asks the task to change: the signals it ignores (exec kept
// those of ctcr's parent) and its resource limits.
type restoreFacts struct {
	status *proc.Status
	limits [16]proc.Rlimit
}

// readRestoreFacts reads t's restoreFacts, or nil for a task that gets
// no task state (a helper, a zombie).
func readRestoreFacts(t *restoringTask) (*restoreFacts, error) {
	if t.helper || t.img.zombie {
		return nil, nil
	}
	f := &restoreFacts{}
	var err error
	if f.status, err = proc.ReadStatus(t.pid, t.pid); err != nil {
		return nil, fmt.Errorf("%s: %w", t.where(), err)
	}
	if f.limits, err = proc.ReadLimits(t.pid); err != nil {
		return nil, fmt.Errorf("%s: %w", t.where(), err)
	}
	return f, nil
}

// Threads restored at once. Each thread's batch waits for that thread
// to be scheduled; one after the other, a process of 1,000 threads paid
// two such waits per thread in a row. Up to threadStateWindow threads
// run their batch together, each with its own threadStateSlot bytes of
// the control area for its data and call table.
const (
	threadStateWindow = 16
	threadStateSlot   = 32 << 10
)

// restoreThreadStates gives every thread of threads its own state
// (threadStateBatch), several threads at once.
//
// Preconditions: runs on the tracer thread; no batch runs in t.
func (t *restoringTask) restoreThreadStates(threads []*restoringThread) error {
	type flight struct {
		slot  int
		run   *batchRun
		what  map[int]string
		where string
	}
	slots := min(threadStateWindow, int(t.ctl.size/threadStateSlot))
	if t.ctl.runner == 0 || len(threads) < 3 || slots < 2 {
		slots = 0
	}
	var fly []flight
	var free []int
	for k := range slots {
		free = append(free, k)
	}
	collect := func() error {
		f := fly[0]
		fly = fly[1:]
		free = append(free, f.slot)
		if res, err := f.run.wait(); err != nil {
			return fmt.Errorf("%s: %s: %w", f.where, f.what[len(res)], err)
		}
		return nil
	}
	// A failure leaves no batch running: the rollback kills every task,
	// and needs them stopped.
	drain := func(err error) error {
		errs := []error{err}
		for len(fly) > 0 {
			errs = append(errs, collect())
		}
		return errors.Join(errs...)
	}
	for _, th := range threads {
		if len(free) == 0 && len(fly) > 0 {
			if err := collect(); err != nil {
				return drain(err)
			}
		}
		traps := len(t.traps)
		if len(free) > 0 {
			k := free[len(free)-1]
			c := *th.ctl
			c.scratch, c.size = t.ctl.scratch+uint64(k)*threadStateSlot, threadStateSlot
			b, what, where, err := t.threadStateBatch(th, &c)
			if err == nil {
				run, err := b.start()
				if err != nil {
					return drain(fmt.Errorf("%s: %w", where, err))
				}
				free = free[:len(free)-1]
				fly = append(fly, flight{slot: k, run: run, what: what, where: where})
				continue
			}
			// Too big for a slot (a long seccomp filter), or wrong: on
			// its own, with the whole area, once the others are done.
			t.traps = t.traps[:traps]
		}
		if err := drain(nil); err != nil {
			return err
		}
		b, what, where, err := t.threadStateBatch(th, th.ctl)
		if err != nil {
			return err
		}
		if res, err := b.run(); err != nil {
			return fmt.Errorf("%s: %s: %w", where, what[len(res)], err)
		}
	}
	return drain(nil)
}

// threadStateBatch sets thread th's scheduling from outside and returns
// the batch, run in th with c (th's, or a copy in a slot of the control
// area), that gives it its alternate stack, futex and rseq
// registrations, private signal queue, name and credentials, what each
// call is, and which thread it is.
func (t *restoringTask) threadStateBatch(th *restoringThread, c *taskCtl) (*batch, map[int]string, string, error) {
	b := c.newBatch()
	what := map[int]string{}
	where, err := t.threadStateInto(b, what, th)
	return b, what, where, err
}

// threadStateInto adds the calls of threadStateBatch to b, which runs in
// th, and their descriptions to what; it returns which thread it
// is.
func (t *restoringTask) threadStateInto(b *batch, what map[int]string, th *restoringThread) (string, error) {
	core := th.core
	tcore := core.ThreadCore
	where := fmt.Sprintf("task %d thread %d", t.vpid, th.vtid)
	if sas := tcore.GetSas(); sas != nil {
		ss := kernel.StackT{Sp: sas.GetSsSp(), Size: sas.GetSsSize(), Flags: int32(sas.GetSsFlags())}
		// SS_ONSTACK only reports that the thread ran on it; it is not a
		// flag one sets.
		ss.Flags &^= kernel.SS_ONSTACK
		p, err := b.put(&ss)
		if err != nil {
			return where, err
		}
		what[b.add(unix.SYS_SIGALTSTACK, p, 0)] = "sigaltstack"
	}
	what[b.add(unix.SYS_SET_TID_ADDRESS, core.ThreadInfo.GetClearTidAddr())] = "clear_child_tid"
	if tcore.GetFutexRla() != 0 {
		what[b.add(unix.SYS_SET_ROBUST_LIST, tcore.GetFutexRla(), uint64(tcore.GetFutexRlaLen()))] = "robust futex list"
	}
	if rs := tcore.GetRseqEntry(); rs != nil && rs.GetRseqAbiPointer() != 0 {
		what[b.add(unix.SYS_RSEQ, rs.GetRseqAbiPointer(), uint64(rs.GetRseqAbiSize()), 0, uint64(rs.GetSignature()))] = fmt.Sprintf("rseq registration at %#x", rs.GetRseqAbiPointer())
	}
	if err := t.queueSignals(b, what, t.vpid, th.vtid, tcore.GetSignalsP().GetSignals(), false); err != nil {
		return where, fmt.Errorf("%s: %w", where, err)
	}
	if th.vtid != t.vpid && tcore.GetComm() != "" {
		comm := tcore.GetComm()
		if len(comm) > 15 {
			comm = comm[:15]
		}
		p, err := b.put(comm)
		if err != nil {
			return where, err
		}
		what[b.add(unix.SYS_PRCTL, unix.PR_SET_NAME, p)] = "set name"
	}
	// Before the credentials, while the task may still install filters
	// without no_new_privs; they bind it only once ctcr lets it go.
	if tcore.GetSeccompMode() != 0 {
		filters, err := t.tree.seccompFilters()
		if err != nil {
			return where, err
		}
		if err := restoreSeccomp(b, what, tcore, filters, t.seccompShared); err != nil {
			return where, fmt.Errorf("%s: %w", where, err)
		}
	}
	// Scheduling is set from outside, before the batch runs: nothing in
	// it depends on the thread's policy, and root keeps the right to set
	// it whatever credentials the batch gives the thread.
	attr := schedAttrFromImage(tcore)
	if err := unix.SchedSetAttr(th.tid, &attr, 0); err != nil {
		return where, fmt.Errorf("%s: scheduling policy %d nice %d: %w", where, attr.Policy, attr.Nice, err)
	}
	sched, err := t.tree.schedImage()
	if err != nil {
		return where, err
	}
	if err := restoreSched(sched, th.tid, th.vtid, th.vtid == t.vpid, t.opts.logf); err != nil {
		return where, fmt.Errorf("%s: %w", where, err)
	}
	pdeathsig := tcore.GetPdeathSig()
	if t.parent == nil && t.opts.DropRootPdeathsig {
		pdeathsig = 0
	}
	ambient, err := t.tree.ambientCaps()
	if err != nil {
		return where, err
	}
	// Last: a change of credentials resets what the calls before may
	// need (the right to install a filter without no_new_privs).
	if err := addCreds(b, what, tcore.GetCreds(), ambient[th.vtid], pdeathsig); err != nil {
		return where, fmt.Errorf("%s: %w", where, err)
	}
	return where, nil
}

// pendingTrap is a SIGTRAP that was pending at the dump, queued again
// only by finish: every batch of a restore ends on a breakpoint and a
// lone call is single-stepped, and either forces a SIGTRAP that would
// take the queued one's place.
type pendingTrap struct {
	tid    int // in the task's PID namespace; the process's id when shared
	shared bool
	info   ptrace.Siginfo
}

// queueSignals adds the calls that queue sigs again: on the process
// (shared) or on thread tid. A SIGTRAP is set aside in t.traps.
func (t *restoringTask) queueSignals(b *batch, what map[int]string, pid, tid int, sigs []*siginfo.SiginfoEntry, shared bool) error {
	for _, e := range sigs {
		si := e.GetSiginfo()
		if len(si) != 128 {
			return corruptf("core image", "siginfo of %d bytes", len(si))
		}
		var info ptrace.Siginfo
		copy(info[:], si)
		signo := info.Signo()
		if signo <= 0 || signo > kernel.NSIG {
			return corruptf("core image", "queued signal %d", signo)
		}
		if signo == int(unix.SIGTRAP) {
			t.traps = append(t.traps, pendingTrap{tid: tid, shared: shared, info: info})
			continue
		}
		p, err := b.put(si)
		if err != nil {
			return err
		}
		if shared {
			what[b.add(unix.SYS_RT_SIGQUEUEINFO, uint64(pid), uint64(signo), p)] = fmt.Sprintf("queue signal %d", signo)
		} else {
			what[b.add(unix.SYS_RT_TGSIGQUEUEINFO, uint64(pid), uint64(tid), uint64(signo), p)] = fmt.Sprintf("queue signal %d", signo)
		}
	}
	return nil
}

// finish sets every thread's registers, FPU state and mask, unmaps the
// control areas, and detaches all tasks together.
//
// Preconditions: runs on the tracer thread.
func (rt *restoreTree) finish() error {
	var live []*restoringTask
	for _, t := range rt.procs {
		if t.helper || t.img.zombie {
			continue
		}
		if err := t.finish(); err != nil {
			return err
		}
		live = append(live, t)
	}
	if rt.opts.PlaceTasks != nil {
		pids := map[int]int{}
		for _, t := range live {
			pids[t.vpid] = t.pid
		}
		if err := rt.opts.PlaceTasks(pids); err != nil {
			return err
		}
	}
	if rt.opts.BeforeResume != nil {
		if err := rt.opts.BeforeResume(); err != nil {
			return err
		}
	}
	// Everything is in place: let the tree run, threads before their
	// main thread, children before parents; a task that was stopped by
	// job control gets its stop signal first and stops again at once.
	for i := len(live) - 1; i >= 0; i-- {
		t := live[i]
		if err := t.stopAgain(); err != nil {
			return err
		}
		for _, id := range append(t.threadIDs(), t.pid) {
			if err := ptrace.Detach(id); err != nil {
				// Killed (SIGKILL from outside) as it is let go: it was
				// restored, and its death is its own, as if it came a
				// moment later. Failing here would leave the tasks let
				// go already running while reporting a failed restore.
				if errors.Is(err, unix.ESRCH) && groupExiting(t.pid) {
					rt.opts.logf("task %d (thread %d) was killed as it was let go", t.pid, id)
					continue
				}
				return err
			}
		}
		t.killed = true // no longer ours to kill
	}
	return nil
}

// finish prepares one process to run: the control area goes, each
// thread gets its registers and mask.
func (t *restoringTask) finish() error {
	// The last call unmaps the control area, so it runs from the syscall
	// instruction of the restored vDSO.
	maps, err := proc.Maps(t.pid)
	if err != nil {
		return err
	}
	if ip, ok := findSyscallInsn(t.ctl.mem, maps); ok {
		t.ctl.r.IP = ip
	}
	threads := append([]*restoringThread{{tid: t.pid, core: t.img.core, ctl: t.ctl}}, t.threads...)
	if len(t.traps) > 0 {
		// From here on no call may force a SIGTRAP: they run between
		// syscall stops, with every signal blocked until each thread
		// gets its own mask below.
		for _, th := range threads {
			if err := ptrace.SetSigmask(th.tid, ^uint64(0)); err != nil {
				return err
			}
		}
		t.ctl.r.NoTrap = true
		for _, tr := range t.traps {
			if err := t.ctl.mem.WriteAt(tr.info[:], t.ctl.scratch); err != nil {
				return fmt.Errorf("%s: pending SIGTRAP: %w", t.where(), err)
			}
			var err error
			if tr.shared {
				_, err = t.ctl.call(unix.SYS_RT_SIGQUEUEINFO, uint64(tr.tid), uint64(unix.SIGTRAP), t.ctl.scratch)
			} else {
				_, err = t.ctl.call(unix.SYS_RT_TGSIGQUEUEINFO, uint64(t.vpid), uint64(tr.tid), uint64(unix.SIGTRAP), t.ctl.scratch)
			}
			if err != nil {
				return fmt.Errorf("%s: queue pending SIGTRAP: %w", t.where(), err)
			}
		}
	}
	if _, err := t.ctl.call(unix.SYS_MUNMAP, t.ctlAddr, ctlSize); err != nil {
		return fmt.Errorf("%s: unmap control area: %w", t.where(), err)
	}
	for _, th := range threads {
		if len(th.ctl.r.Stolen) > 0 {
			return fmt.Errorf("task %d thread %d: %d unexpected signals arrived during restore", t.pid, th.tid, len(th.ctl.r.Stolen))
		}
		regs, err := gpregsFromImage(th.core.ThreadInfo.GetGpregs())
		if err != nil {
			return fmt.Errorf("task %d thread %d: %w", t.pid, th.tid, err)
		}
		xs, err := ptrace.GetXState(th.tid)
		if err != nil {
			return err
		}
		if err := fpregsFromImage(th.core.ThreadInfo.GetFpregs(), xs); err != nil {
			return fmt.Errorf("task %d thread %d: %w", t.pid, th.tid, err)
		}
		if err := ptrace.SetXState(th.tid, xs); err != nil {
			return err
		}
		if err := ptrace.SetRegs(th.tid, &regs); err != nil {
			return err
		}
		if err := ptrace.SetSigmask(th.tid, th.core.ThreadCore.GetBlkSigset()); err != nil {
			return err
		}
	}
	t.ctl.mem.Close()
	return nil
}

// setName sets the task's name (comm).
func (t *restoringTask) setName(comm string) error {
	if len(comm) > 15 {
		comm = comm[:15]
	}
	b := t.ctl.newBatch()
	p, err := b.put(comm)
	if err != nil {
		return err
	}
	b.add(unix.SYS_PRCTL, unix.PR_SET_NAME, p)
	if _, err := b.run(); err != nil {
		return fmt.Errorf("%s: set name: %w", t.where(), err)
	}
	return nil
}

// restorePosixTimers queues, in b, the creation of each POSIX timer with
// its id (PR_TIMER_CREATE_RESTORE_IDS asks timer_create for it), its
// clock, its signal and target, then arms it with the time it had left.
// Threads a timer signals must exist already.
func restorePosixTimers(b *batch, what map[int]string, timers []*timer.PosixTimerEntry) error {
	if len(timers) == 0 {
		return nil
	}
	what[b.add(unix.SYS_PRCTL, kernel.PR_TIMER_CREATE_RESTORE_IDS, kernel.PR_TIMER_CREATE_RESTORE_IDS_ON)] = "ask timer_create for ids (PR_TIMER_CREATE_RESTORE_IDS, Linux 6.17)"
	// /proc/PID/timers, which the image follows, lists the newest first:
	// create the oldest first for the same list.
	for i := len(timers) - 1; i >= 0; i-- {
		t := timers[i]
		sev := kernel.Sigevent{Value: t.GetSivalPtr(), Signo: int32(t.GetSiSigno()), Notify: int32(t.GetItSigevNotify()), Tid: t.GetNotifyThreadId()}
		sp, err := b.put(&sev)
		if err != nil {
			return err
		}
		idp, err := b.put(int32(t.GetItId()))
		if err != nil {
			return err
		}
		what[b.add(unix.SYS_TIMER_CREATE, uint64(t.GetClockId()), sp, idp)] = fmt.Sprintf("POSIX timer %d (clock %d)", t.GetItId(), t.GetClockId())
		its := kernel.Itimerspec{IntervalSec: int64(t.GetIsec()), IntervalNsec: int64(t.GetInsec()), ValueSec: int64(t.GetVsec()), ValueNsec: int64(t.GetVnsec())}
		if its.ValueSec == 0 && its.ValueNsec == 0 {
			continue // disarmed
		}
		ip, err := b.put(&its)
		if err != nil {
			return err
		}
		what[b.add(unix.SYS_TIMER_SETTIME, uint64(t.GetItId()), 0, ip, 0)] = fmt.Sprintf("arm POSIX timer %d", t.GetItId())
	}
	what[b.add(unix.SYS_PRCTL, kernel.PR_TIMER_CREATE_RESTORE_IDS, kernel.PR_TIMER_CREATE_RESTORE_IDS_OFF)] = "PR_TIMER_CREATE_RESTORE_IDS off"
	return nil
}
