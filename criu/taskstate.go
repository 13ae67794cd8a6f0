package criu

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/creds"
	criucore "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	criusa "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-sa"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/rlimit"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/siginfo"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/timer"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/kernel"
	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/criu/ptrace"
)

// What a task can only tell about itself is asked with remote syscalls
// (dump side) and given back the same way (restore side, restore.go).

// taskQuery is what one batch of remote syscalls learns about a task.
type taskQuery struct {
	threadQuery
	sigactions []*criusa.SaEntry
	timers     *timer.TaskTimersEntry
	dumpable   uint64
	subreaper  bool
	thpOff     bool
	brk        uint64
	// scratchNamed: the batch named ctcr's scratch area, which made it
	// a mapping of its own (a name keeps it from merging with, or splits
	// it off, a neighbour).
	scratchNamed bool
}

// threadQuery is what each thread is asked for itself.
type threadQuery struct {
	altstack  *criucore.ThreadSasEntry
	pdeathsig uint32
	secbits   uint64
	clearTid  uint64
	// membarrier is the process's membarrier registrations
	// (MEMBARRIER_CMD_GET_REGISTRATIONS), asked of the main thread only.
	membarrier uint64
	// xcompPerm is the dynamic XSAVE features the process was given
	// (ARCH_GET_XCOMP_PERM, on a CPU with AMX): AMX's tile data.
	xcompPerm uint64
}

// getter decodes a value the batch left at addr in the scratch area.
type getter func(addr uint64, v any) error

func scratchGetter(c *taskCtl, data []byte) getter {
	return func(addr uint64, v any) error {
		return binary.Read(bytes.NewReader(data[addr-c.scratch:]), binary.LittleEndian, v)
	}
}

// threadQueries adds to b the calls that ask a thread about itself
// (alternate signal stack, parent-death signal, securebits) and returns
// how to read their answers once b has run.
func threadQueries(b *batch) (func(res []uint64, get getter) (threadQuery, error), error) {
	ssAddr, err := b.space(24)
	if err != nil {
		return nil, err
	}
	b.add(unix.SYS_SIGALTSTACK, 0, ssAddr)
	pdAddr, err := b.space(4)
	if err != nil {
		return nil, err
	}
	b.add(unix.SYS_PRCTL, unix.PR_GET_PDEATHSIG, pdAddr)
	iSec := b.add(unix.SYS_PRCTL, unix.PR_GET_SECUREBITS)
	return func(res []uint64, get getter) (threadQuery, error) {
		var ss kernel.StackT
		if err := get(ssAddr, &ss); err != nil {
			return threadQuery{}, err
		}
		var pd int32
		if err := get(pdAddr, &pd); err != nil {
			return threadQuery{}, err
		}
		return threadQuery{
			altstack:  &criucore.ThreadSasEntry{SsSp: proto.Uint64(ss.Sp), SsSize: proto.Uint64(ss.Size), SsFlags: proto.Uint32(uint32(ss.Flags))},
			pdeathsig: uint32(pd), secbits: res[iSec],
		}, nil
	}, nil
}

// queryThread asks one thread of a process about itself, in one batch:
// a round trip per thread counts in a process of 1,000 threads.
func queryThread(c *taskCtl) (*threadQuery, error) {
	finish, err := startQueryThread(c)
	if err != nil {
		return nil, err
	}
	return finish()
}

// startQueryThread lets the thread run queryThread's batch; the function
// it returns collects the answers (queryThreads runs several at once).
func startQueryThread(c *taskCtl) (func() (*threadQuery, error), error) {
	b := c.newBatch()
	decode, err := threadQueries(b)
	if err != nil {
		return nil, err
	}
	// Last: without CONFIG_CHECKPOINT_RESTORE it fails, and the batch
	// stops at the first error; the address then stays 0, as if the
	// thread had none.
	tidAddr, err := b.space(8)
	if err != nil {
		return nil, err
	}
	iTid := b.add(unix.SYS_PRCTL, kernel.PR_GET_TID_ADDRESS, tidAddr)
	started, err := b.start()
	if err != nil {
		return nil, err
	}
	return func() (*threadQuery, error) {
		res, err := started.wait()
		if err != nil && len(res) != iTid {
			return nil, err
		}
		data, err := b.readBack()
		if err != nil {
			return nil, err
		}
		get := scratchGetter(c, data)
		q, err := decode(res, get)
		if err != nil {
			return nil, err
		}
		if len(res) > iTid {
			if err := get(tidAddr, &q.clearTid); err != nil {
				return nil, err
			}
		}
		return &q, nil
	}, nil
}

// pendingQuery is a task's query whose batch runs in the task while
// the tracer thread goes on: the dump asks several processes at once.
type pendingQuery struct {
	finish func() (*taskQuery, error)
}

// startQueryTask asks the task, in one batch of syscalls, for every
// signal disposition, its interval timers, alternate signal stack, prctl
// state and current brk: it writes the batch into the task and lets it
// run; finish collects the answers.
func startQueryTask(c *taskCtl) (*pendingQuery, error) {
	b := c.newBatch()
	var saAddr []uint64
	for sig := 1; sig <= kernel.NSIG; sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		a, err := b.space(32)
		if err != nil {
			return nil, err
		}
		saAddr = append(saAddr, a)
		b.add(unix.SYS_RT_SIGACTION, uint64(sig), 0, a, 8)
	}
	var itAddr [3]uint64
	for which := range itAddr {
		a, err := b.space(32)
		if err != nil {
			return nil, err
		}
		itAddr[which] = a
		b.add(unix.SYS_GETITIMER, uint64(which), a)
	}
	decodeThread, err := threadQueries(b)
	if err != nil {
		return nil, err
	}
	iDump := b.add(unix.SYS_PRCTL, unix.PR_GET_DUMPABLE)
	subAddr, err := b.space(4)
	if err != nil {
		return nil, err
	}
	b.add(unix.SYS_PRCTL, unix.PR_GET_CHILD_SUBREAPER, subAddr)
	iThp := b.add(unix.SYS_PRCTL, unix.PR_GET_THP_DISABLE)
	iBrk := b.add(unix.SYS_BRK, 0)
	// The last four may fail: PR_GET_TID_ADDRESS without
	// CONFIG_CHECKPOINT_RESTORE (the address then stays 0, as if the
	// thread had none), membarrier before Linux 6.3 (EINVAL),
	// ARCH_GET_XCOMP_PERM before 5.16 (the process then had no AMX
	// permission to keep), and the naming of ctcr's scratch area
	// without CONFIG_ANON_VMA_NAME (it then goes unnamed). The naming rides in this batch rather than in
	// one of its own after the area is mapped: a ptrace round trip less
	// per process.
	tidAddr, err := b.space(8)
	if err != nil {
		return nil, err
	}
	iTid := b.add(unix.SYS_PRCTL, kernel.PR_GET_TID_ADDRESS, tidAddr)
	iMb := b.add(unix.SYS_MEMBARRIER, kernel.MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0)
	// On a CPU with AMX, whether the process asked for the tile data
	// (ARCH_REQ_XCOMP_PERM): restore asks again (see restoreXcompPerm).
	iPerm, permAddr := -1, uint64(0)
	if cpuXsave().supported&(1<<xfeatureTileData) != 0 {
		if permAddr, err = b.space(8); err != nil {
			return nil, err
		}
		iPerm = b.add(unix.SYS_ARCH_PRCTL, archGetXcompPerm, permAddr)
	}
	iName := -1
	if c.runner != 0 {
		name, err := b.put(scratchName)
		if err != nil {
			return nil, err
		}
		iName = b.add(unix.SYS_PRCTL, unix.PR_SET_VMA, unix.PR_SET_VMA_ANON_NAME, c.runner, scratchSize+frameAreaSize, name)
	}
	started, err := b.start()
	if err != nil {
		return nil, err
	}
	// The rest runs when the dump collects the answers.
	return &pendingQuery{finish: func() (*taskQuery, error) {
		res, err := started.wait()
		res, failed, err := runOptionalAfter(b, res, err, iTid, iMb, iName, iPerm)
		if err != nil {
			return nil, err
		}
		haveTid := failed[iTid] == nil
		if err := failed[iMb]; err != nil && !errors.Is(err, unix.EINVAL) {
			return nil, err
		}
		data, err := b.readBack()
		if err != nil {
			return nil, err
		}
		get := scratchGetter(c, data)
		q := &taskQuery{dumpable: res[iDump], thpOff: res[iThp] != 0, brk: res[iBrk], scratchNamed: iName >= 0 && failed[iName] == nil}
		if q.threadQuery, err = decodeThread(res, get); err != nil {
			return nil, err
		}
		if failed[iMb] == nil {
			q.membarrier = res[iMb] & kernel.MembarrierRegistrations
		}
		if iPerm >= 0 && failed[iPerm] == nil {
			var perm uint64
			if err := get(permAddr, &perm); err != nil {
				return nil, err
			}
			q.xcompPerm = perm & xcompDynamic
		}
		for _, a := range saAddr {
			var sa kernel.Sigaction
			if err := get(a, &sa); err != nil {
				return nil, err
			}
			q.sigactions = append(q.sigactions, &criusa.SaEntry{
				Sigaction: proto.Uint64(sa.Handler), Flags: proto.Uint64(sa.Flags),
				Restorer: proto.Uint64(sa.Restorer), Mask: proto.Uint64(sa.Mask),
			})
		}
		var t [3]*timer.ItimerEntry
		for which, a := range itAddr {
			var v kernel.Itimerval
			if err := get(a, &v); err != nil {
				return nil, err
			}
			t[which] = &timer.ItimerEntry{
				Isec: proto.Uint64(uint64(v.IntervalSec)), Iusec: proto.Uint64(uint64(v.IntervalUsec)),
				Vsec: proto.Uint64(uint64(v.ValueSec)), Vusec: proto.Uint64(uint64(v.ValueUsec)),
			}
		}
		q.timers = &timer.TaskTimersEntry{Real: t[0], Virt: t[1], Prof: t[2]}
		var sub int32
		if err := get(subAddr, &sub); err != nil {
			return nil, err
		}
		q.subreaper = sub != 0
		if haveTid {
			if err := get(tidAddr, &q.clearTid); err != nil {
				return nil, err
			}
		}
		return q, nil
	}}, nil
}

// runOptionalAfter goes on with batch b, whose first run returned res
// and err, like its run method, except that the calls at the indexes
// optional may fail: the batch then goes on from the call after the one
// that failed. It returns every call's result (0 for one that failed)
// and the errors of the optional calls that failed, by index.
func runOptionalAfter(b *batch, res []uint64, err error, optional ...int) ([]uint64, map[int]error, error) {
	failed := map[int]error{}
	for err != nil && slices.Contains(optional, len(res)) {
		k := len(res)
		failed[k] = err
		res = append(res, 0)
		// The data the calls read is in place, and the outputs of the
		// calls before k too: the rest must not write it again.
		rest := &batch{c: b.c, calls: b.calls[k+1:]}
		var more []uint64
		more, err = rest.run()
		res = append(res, more...)
	}
	return res, failed, err
}

func signalQueue(sis []ptrace.Siginfo) *siginfo.SignalQueueEntry {
	q := &siginfo.SignalQueueEntry{}
	for i := range sis {
		q.Signals = append(q.Signals, &siginfo.SiginfoEntry{Siginfo: append([]byte(nil), sis[i][:]...)})
	}
	return q
}

func capWords(v uint64) []uint32 { return []uint32{uint32(v), uint32(v >> 32)} }

func capValue(w []uint32) uint64 {
	var v uint64
	if len(w) > 0 {
		v = uint64(w[0])
	}
	if len(w) > 1 {
		v |= uint64(w[1]) << 32
	}
	return v
}

// noNewPrivsBit marks no_new_privs in CredsEntry.secbits. Securebits use
// the low byte only; CRIU's creds entry has no field for the flag.
const noNewPrivsBit = 1 << 31

// dumpCreds records a thread's credentials as its user namespace sees
// them: /proc shows them as ctcr's does, and uids and gids map them
// inside (nil: the same namespace).
func dumpCreds(st *proc.Status, secbits uint32, uids, gids idMap) *creds.CredsEntry {
	if st.NoNewPrivs {
		secbits |= noNewPrivsBit
	}
	groups := make([]uint32, len(st.Groups))
	for i, g := range st.Groups {
		groups[i] = gids.inside(g)
	}
	u := func(i int) *uint32 { return proto.Uint32(uids.inside(st.Uid[i])) }
	g := func(i int) *uint32 { return proto.Uint32(gids.inside(st.Gid[i])) }
	return &creds.CredsEntry{
		Uid: u(0), Euid: u(1), Suid: u(2), Fsuid: u(3),
		Gid: g(0), Egid: g(1), Sgid: g(2), Fsgid: g(3),
		CapInh: capWords(st.CapInh), CapPrm: capWords(st.CapPrm), CapEff: capWords(st.CapEff), CapBnd: capWords(st.CapBnd),
		Secbits: proto.Uint32(secbits), Groups: groups,
	}
}

func dumpRlimits(pid int) (*criucore.TaskRlimitsEntry, error) {
	lims, err := proc.ReadLimits(pid)
	if err != nil {
		return nil, err
	}
	out := &criucore.TaskRlimitsEntry{}
	for _, l := range lims {
		out.Rlimits = append(out.Rlimits, &rlimit.RlimitEntry{Cur: proto.Uint64(l.Soft), Max: proto.Uint64(l.Hard)})
	}
	return out, nil
}

// queryPosixTimers reads, in the task of c, what /proc/PID/timers does
// not show of its POSIX timers: each one's time left and interval
// (timer_gettime) and overrun count. tidOf maps a target thread's host
// id to its id in the tree's PID namespace.
func queryPosixTimers(c *taskCtl, where string, timers []proc.PosixTimer, tidOf map[int]int) ([]*timer.PosixTimerEntry, error) {
	b := c.newBatch()
	addrs := make([]uint64, len(timers))
	for i, t := range timers {
		a, err := b.space(32)
		if err != nil {
			return nil, err
		}
		addrs[i] = a
		b.add(unix.SYS_TIMER_GETTIME, uint64(t.ID), a)
		b.add(unix.SYS_TIMER_GETOVERRUN, uint64(t.ID))
	}
	res, err := b.run()
	if err != nil {
		return nil, fmt.Errorf("%s: POSIX timer %d: %w", where, timers[len(res)/2].ID, err)
	}
	data, err := b.readBack()
	if err != nil {
		return nil, err
	}
	get := scratchGetter(c, data)
	var out []*timer.PosixTimerEntry
	for i, t := range timers {
		var its kernel.Itimerspec
		if err := get(addrs[i], &its); err != nil {
			return nil, err
		}
		notify := map[string]uint32{"signal": kernel.SIGEV_SIGNAL, "none": kernel.SIGEV_NONE, "thread": kernel.SIGEV_THREAD}[t.Notify]
		e := &timer.PosixTimerEntry{
			ItId: proto.Uint32(uint32(t.ID)), ClockId: proto.Uint32(uint32(t.Clock)), SiSigno: proto.Uint32(uint32(t.Signo)),
			SivalPtr: proto.Uint64(t.Value), Overrun: proto.Uint32(uint32(res[2*i+1])),
			Isec: proto.Uint64(uint64(its.IntervalSec)), Insec: proto.Uint64(uint64(its.IntervalNsec)),
			Vsec: proto.Uint64(uint64(its.ValueSec)), Vnsec: proto.Uint64(uint64(its.ValueNsec)),
		}
		if t.ToThread {
			vtid, ok := tidOf[t.Target]
			if !ok {
				return nil, fmt.Errorf("%s: POSIX timer %d signals thread %d, not one of the task's: %w", where, t.ID, t.Target, ErrUnsupported)
			}
			notify |= kernel.SIGEV_THREAD_ID
			e.NotifyThreadId = proto.Int32(int32(vtid))
		}
		e.ItSigevNotify = proto.Uint32(notify)
		out = append(out, e)
	}
	return out, nil
}

// dumpProcKnobs reads what a process keeps in /proc files ctcr writes
// back from outside: the OOM killer's adjustment and the audit login uid
// (without audit support the file is absent and nothing is kept).
func dumpProcKnobs(pid int, tc *criucore.TaskCoreEntry) error {
	read := func(name string) (string, bool, error) {
		b, err := proc.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
		if errors.Is(err, os.ErrNotExist) {
			return "", false, nil
		}
		if err != nil {
			return "", false, fmt.Errorf("task %d: %w", pid, err)
		}
		return strings.TrimSpace(string(b)), true, nil
	}
	if v, ok, err := read("oom_score_adj"); err != nil {
		return err
	} else if ok {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			return fmt.Errorf("task %d: oom_score_adj %q", pid, v)
		}
		tc.OomScoreAdj = proto.Int32(int32(n))
	}
	if v, ok, err := read("loginuid"); err != nil {
		return err
	} else if ok {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return fmt.Errorf("task %d: loginuid %q", pid, v)
		}
		tc.Loginuid = proto.Uint32(uint32(n))
	}
	return nil
}

// restoreProcKnobs writes the OOM killer's adjustment back into
// restored process pid, from outside (the login uid is the task's own
// to write: restoreLoginuid).
func restoreProcKnobs(pid int, where string, tc *criucore.TaskCoreEntry) error {
	write := func(name, v string) error {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/%s", pid, name), []byte(v), 0); err != nil {
			return fmt.Errorf("%s: %s %s: %w", where, name, v, err)
		}
		return nil
	}
	if tc.OomScoreAdj != nil {
		if err := write("oom_score_adj", strconv.Itoa(int(tc.GetOomScoreAdj()))); err != nil {
			return err
		}
	}
	return nil
}

// restoreLoginuid gives the task its audit login uid. The kernel lets
// only a task write its own /proc/PID/loginuid (any other writer gets
// EPERM), and changing one already set takes CAP_AUDIT_CONTROL: so ctcr
// opens the file, passes the fd to the task, and the task writes it,
// before its credentials are restored (it still has ctcr's
// capabilities then). A login uid already right is left alone.
//
// Preconditions: runs on the tracer thread; the fd transport is open.
func (t *restoringTask) restoreLoginuid() error {
	tc := t.img.core.Tc
	if tc.Loginuid == nil {
		return nil
	}
	want := strconv.FormatUint(uint64(tc.GetLoginuid()), 10)
	path := fmt.Sprintf("/proc/%d/loginuid", t.pid)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		// A kernel without audit: nothing to set.
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: loginuid: %w", t.where(), err)
	}
	if strings.TrimSpace(string(b)) == want {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("%s: loginuid: %w", t.where(), err)
	}
	fd, err := t.sendFd(f)
	f.Close()
	if err != nil {
		return err
	}
	bt := t.ctl.newBatch()
	p, err := bt.put(want)
	if err != nil {
		return err
	}
	iWrite := bt.add(unix.SYS_WRITE, uint64(fd), p, uint64(len(want)))
	bt.add(unix.SYS_CLOSE, uint64(fd))
	res, err := bt.run()
	if err != nil {
		if len(res) == iWrite {
			return fmt.Errorf("%s: set the audit login uid to %s: %w", t.where(), want, err)
		}
		return fmt.Errorf("%s: close the loginuid file: %w", t.where(), err)
	}
	return nil
}

// sameLSMLabel refuses a task whose LSM label (AppArmor profile, SELinux
// context) is not ctcr's own: restored tasks take ctcr's, and ctcr does
// not set another yet. Without an LSM the files answer EINVAL.
func sameLSMLabel(pid int) error {
	mine, err := proc.ReadFile("/proc/self/attr/current")
	if err != nil {
		return nil // no LSM with labels
	}
	theirs, err := proc.ReadFile(fmt.Sprintf("/proc/%d/attr/current", pid))
	if err != nil {
		return fmt.Errorf("task %d: LSM label: %w", pid, err)
	}
	if t := strings.TrimRight(string(theirs), "\x00\n"); t != strings.TrimRight(string(mine), "\x00\n") {
		return fmt.Errorf("task %d runs under the LSM label %q, not ctcr's own %q, which a restored task would get: %w", pid, t, strings.TrimRight(string(mine), "\x00\n"), ErrUnsupported)
	}
	return nil
}

// taskStopped is compel's COMPEL_TASK_STOPPED: a task stopped by job
// control (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU), which core.tc.stop_signo
// names.
const taskStopped = 0x3

// jobStopSignal returns the signal that stopped thread tid by job
// control, or 0 if it was running. Seized in a group-stop, a thread's
// PTRACE_EVENT_STOP carries the stop signal in its siginfo; stopped by
// PTRACE_INTERRUPT alone, SIGTRAP.
//
// Preconditions: runs on the tracer thread; tid is in its seize stop.
func jobStopSignal(tid int) int {
	si, err := ptrace.GetSiginfo(tid)
	if err != nil {
		return 0
	}
	switch s := unix.Signal(si.Signo()); s {
	case unix.SIGSTOP, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU:
		return int(s)
	}
	return 0
}

// keepJobStops records in each stopped process's core that it was
// stopped and by which signal: restore stops it again (CRIU's
// TASK_STOPPED and stop_signo).
func (d *dumpTree) keepJobStops() {
	for _, p := range d.procs {
		if p.zombie || p.stopSig == 0 || len(p.threads) == 0 || p.leader().core == nil {
			continue
		}
		tc := p.leader().core.Tc
		tc.TaskState = proto.Uint32(taskStopped)
		tc.StopSigno = proto.Uint32(uint32(p.stopSig))
		d.opts.logf("task %d is stopped by signal %d: it is restored stopped", p.pid, p.stopSig)
	}
}

// stopAgain queues, in a restored process about to be let go, the signal
// that had stopped it: traced, it stays in its ptrace stop; once
// detached, it dequeues the signal before running an instruction and
// enters the group stop it was in (its parent is told, as at the
// original stop).
func (t *restoringTask) stopAgain() error {
	tc := t.img.core.Tc
	if tc.GetTaskState() != taskStopped {
		return nil
	}
	sig := unix.Signal(tc.GetStopSigno())
	switch sig {
	case unix.SIGSTOP, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU:
	case 0:
		sig = unix.SIGSTOP // an image of CRIU's before stop_signo
	default:
		return corruptf("core image", "task %d stopped by signal %d", t.vpid, sig)
	}
	if err := unix.Kill(t.pid, sig); err != nil {
		return fmt.Errorf("%s: stop it again with signal %d: %w", t.where(), sig, err)
	}
	return nil
}
