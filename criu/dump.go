package criu

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	corex86 "github.com/checkpoint-restore/go-criu/v7/crit/images/core-x86"
	criucore "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	fsimg "github.com/checkpoint-restore/go-criu/v7/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pstree"
	rseqimg "github.com/checkpoint-restore/go-criu/v7/crit/images/rseq"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/vma"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/criu/ptrace"
)

// DumpOptions says what to checkpoint and how.
type DumpOptions struct {
	Pid          int
	Dir          string
	LeaveRunning bool // resume the task after the dump instead of killing it
	ShellJob     bool // the task may hold terminal fds; restore puts it on ctcr's terminal
	Log          func(format string, args ...any)
}

// DumpStats describes a finished dump.
type DumpStats struct {
	Pid        int
	Tasks      int
	PagesBytes uint64
	Frozen     time.Duration // from seize to resume/kill
	Total      time.Duration
	Memory     time.Duration // copying pages into the image
}

func (o *DumpOptions) logf(format string, args ...any) {
	if o.Log != nil {
		o.Log(format, args...)
	}
}

// dumpedTask is everything read from one stopped task.
type dumpedTask struct {
	pid     int
	regs    ptrace.Regs // as seized; what the task resumes with after --leave-running
	xstate  []byte
	sigmask uint64
	stolen  []ptrace.Siginfo // signals dequeued while ctcr held the task

	core    *criucore.CoreEntry
	mm      *mm.MmEntry
	runs    []pageRun
	fds     []*fdinfo.FdinfoEntry
	fs      *fsimg.FsEntry
	stat    *proc.Stat
	status  *proc.Status
	pending []ptrace.Siginfo
	shared  []ptrace.Siginfo
}

// Dump checkpoints the process opts.Pid into opts.Dir. On failure the
// task is detached and runs on as before; nothing is left in Dir but
// what was there.
func Dump(opts DumpOptions) (*DumpStats, error) {
	start := time.Now()
	pid := opts.Pid
	if pid <= 0 {
		return nil, fmt.Errorf("task %d: %w", pid, ErrNoTask)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		return nil, fmt.Errorf("task %d: %w", pid, ErrNoTask)
	}
	if pid == os.Getpid() {
		return nil, fmt.Errorf("task %d is ctcr itself", pid)
	}
	if st, err := proc.ReadStatus(pid, pid); err == nil && st.Tgid != pid {
		return nil, fmt.Errorf("task %d is a thread of process %d: dump the process", pid, st.Tgid)
	}

	tr := ptrace.NewTracer()
	defer tr.Close()
	// Deferred after Close so it runs first: undoing needs the tracer.
	var rb rollback
	defer rb.run()

	stage, err := images.NewStaging(opts.Dir)
	if err != nil {
		return nil, err
	}
	rb.add(func() { stage.Abort() })

	t := &dumpedTask{pid: pid}
	var ctl *taskCtl
	frozenAt := time.Now()
	err = tr.Do(func() error {
		stolen, err := ptrace.Seize(pid, 0)
		t.stolen = stolen
		if err != nil {
			if errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("task %d: %w", pid, ErrNoTask)
			}
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Until the dump succeeds, the task is put back as it was: registers,
	// mask, the signals it dequeued, then detached.
	rb.add(func() {
		if err := tr.Do(func() error { return resumeTask(t, ctl) }); err != nil {
			opts.logf("resume task %d: %v", pid, err)
		}
	})
	opts.logf("seized task %d", pid)

	threads, err := proc.Threads(pid)
	if err != nil {
		return nil, fmt.Errorf("task %d: %w", pid, err)
	}
	if len(threads) > 1 {
		return nil, fmt.Errorf("task %d has %d threads: multi-threaded processes: %w", pid, len(threads), ErrUnsupported)
	}

	if err := tr.Do(func() error {
		var err error
		ctl, err = dumpTaskState(t)
		return err
	}); err != nil {
		return nil, err
	}
	opts.logf("task %d: state read (%v since seize)", pid, time.Since(frozenAt))

	files := newFileTable()
	if err := dumpTaskFiles(t, files, opts.ShellJob); err != nil {
		return nil, err
	}
	memStart := time.Now()
	pagesName := images.Pages.FileName(1)
	entries, pagesBytes, err := dumpMemory(t, files, stage.Path(pagesName))
	if err != nil {
		return nil, err
	}
	memTime := time.Since(memStart)
	opts.logf("task %d: files and %d bytes of memory dumped (%v since seize)", pid, pagesBytes, time.Since(frozenAt))

	if err := writeDumpImages(stage, t, files, entries); err != nil {
		return nil, err
	}
	if err := stage.Commit(); err != nil {
		return nil, err
	}
	opts.logf("images written to %s (%v since seize)", opts.Dir, time.Since(frozenAt))

	// Committed: from here on the checkpoint exists. Drop the rollback
	// of the images and end the task as asked.
	rb.release()
	if opts.LeaveRunning {
		err = tr.Do(func() error { return resumeTask(t, ctl) })
	} else {
		err = tr.Do(func() error { return killTask(pid) })
	}
	frozen := time.Since(frozenAt)
	if err != nil {
		return nil, err
	}
	return &DumpStats{Pid: pid, Tasks: 1, PagesBytes: pagesBytes, Frozen: frozen, Total: time.Since(start), Memory: memTime}, nil
}

// dumpTaskState reads registers and everything the task must be asked
// with remote syscalls. It leaves a scratch mapping in the task that
// resumeTask (or the end of this function) removes.
//
// Preconditions: runs on the tracer thread; the task is seized.
func dumpTaskState(t *dumpedTask) (*taskCtl, error) {
	pid := t.pid
	regs, err := ptrace.GetRegs(pid)
	if err != nil {
		return nil, err
	}
	t.regs = regs
	if t.xstate, err = ptrace.GetXState(pid); err != nil {
		return nil, err
	}
	maps, err := proc.Maps(pid)
	if err != nil {
		return nil, fmt.Errorf("task %d: %w", pid, err)
	}
	mem, err := ptrace.OpenMem(pid)
	if err != nil {
		return nil, fmt.Errorf("task %d: %w", pid, err)
	}
	ip, ok := findSyscallInsn(mem, maps)
	if !ok {
		mem.Close()
		return nil, fmt.Errorf("task %d has no vDSO to run remote syscalls from: %w", pid, ErrUnsupported)
	}
	ctl := &taskCtl{tid: pid, mem: mem, r: &ptrace.Remote{Tid: pid, IP: ip, Base: regs}}

	// The first remote call also lets the kernel finish what the
	// interrupted syscall left pending: after sigsuspend it puts the
	// saved mask back, so the mask read next is the task's real one.
	if _, err := ctl.call(unix.SYS_GETPID); err != nil {
		return ctl, err
	}
	if t.sigmask, err = ptrace.GetSigmask(pid); err != nil {
		return ctl, err
	}
	// Block everything while ctcr works in the task, so no handler runs.
	if err := ptrace.SetSigmask(pid, ^uint64(0)); err != nil {
		return ctl, err
	}
	if err := ctl.mapScratch(); err != nil {
		return ctl, err
	}
	if t.stat, err = proc.ReadStat(pid, pid); err != nil {
		return ctl, fmt.Errorf("task %d: %w", pid, err)
	}
	if t.status, err = proc.ReadStatus(pid, pid); err != nil {
		return ctl, fmt.Errorf("task %d: %w", pid, err)
	}
	q, err := queryTask(ctl)
	if err != nil {
		return ctl, fmt.Errorf("task %d: %w", pid, err)
	}
	robust, robustLen, err := getRobustList(pid)
	if err != nil {
		return ctl, fmt.Errorf("task %d: %w", pid, err)
	}
	rs, err := ptrace.GetRseq(pid)
	if err != nil {
		return ctl, err
	}
	if t.pending, err = ptrace.PendingSignals(pid, false); err != nil {
		return ctl, err
	}
	if t.shared, err = ptrace.PendingSignals(pid, true); err != nil {
		return ctl, err
	}
	if timersFile, err := os.ReadFile(fmt.Sprintf("/proc/%d/timers", pid)); err == nil && len(strings.TrimSpace(string(timersFile))) > 0 {
		return ctl, fmt.Errorf("task %d has POSIX timers: %w", pid, ErrUnsupported)
	}
	personality, err := proc.ReadPersonality(pid)
	if err != nil {
		return ctl, fmt.Errorf("task %d: %w", pid, err)
	}
	rlims, err := dumpRlimits(pid)
	if err != nil {
		return ctl, fmt.Errorf("task %d: %w", pid, err)
	}
	attr, err := unix.SchedGetAttr(pid, 0)
	if err != nil {
		return ctl, fmt.Errorf("task %d: sched_getattr: %w", pid, err)
	}

	gp := restartedRegs(regs)
	fp, err := fpregsToImage(t.xstate)
	if err != nil {
		return ctl, fmt.Errorf("task %d: %w", pid, err)
	}
	comm := t.stat.Comm
	allPending := append(append([]ptrace.Siginfo(nil), t.pending...), t.stolen...)
	ctl.r.Stolen = nil
	t.core = &criucore.CoreEntry{
		Mtype: criucore.CoreEntry_X86_64.Enum(),
		ThreadInfo: &corex86.ThreadInfoX86{
			ClearTidAddr: proto.Uint64(q.clearTid),
			Gpregs:       gpregsToImage(&gp),
			Fpregs:       fp,
		},
		Tc: &criucore.TaskCoreEntry{
			TaskState:      proto.Uint32(taskAlive),
			ExitCode:       proto.Uint32(0),
			Personality:    proto.Uint32(personality),
			Flags:          proto.Uint32(t.stat.Flags),
			BlkSigset:      proto.Uint64(t.sigmask),
			Comm:           proto.String(comm),
			Timers:         q.timers,
			Rlimits:        rlims,
			SignalsS:       signalQueue(t.shared),
			Sigactions:     q.sigactions,
			ChildSubreaper: proto.Bool(q.subreaper),
		},
		ThreadCore: &criucore.ThreadCoreEntry{
			FutexRla:    proto.Uint64(robust),
			FutexRlaLen: proto.Uint32(uint32(robustLen)),
			SchedNice:   proto.Int32(attr.Nice),
			SchedPolicy: proto.Uint32(attr.Policy),
			SchedPrio:   proto.Uint32(attr.Priority),
			BlkSigset:   proto.Uint64(t.sigmask),
			Sas:         q.altstack,
			PdeathSig:   proto.Uint32(q.pdeathsig),
			SignalsP:    signalQueue(allPending),
			Creds:       dumpCreds(t.status, uint32(q.secbits)),
			Comm:        proto.String(comm),
		},
	}
	if rs.Pointer != 0 {
		t.core.ThreadCore.RseqEntry = &rseqimg.RseqEntry{RseqAbiPointer: proto.Uint64(rs.Pointer), RseqAbiSize: proto.Uint32(rs.Size), Signature: proto.Uint32(rs.Signature)}
	}
	auxv, err := proc.ReadAuxv(pid)
	if err != nil {
		return ctl, fmt.Errorf("task %d: %w", pid, err)
	}
	s := t.stat
	t.mm = &mm.MmEntry{
		MmStartCode: proto.Uint64(s.StartCode), MmEndCode: proto.Uint64(s.EndCode),
		MmStartData: proto.Uint64(s.StartData), MmEndData: proto.Uint64(s.EndData),
		MmStartStack: proto.Uint64(s.StartStack), MmStartBrk: proto.Uint64(s.StartBrk), MmBrk: proto.Uint64(q.brk),
		MmArgStart: proto.Uint64(s.ArgStart), MmArgEnd: proto.Uint64(s.ArgEnd),
		MmEnvStart: proto.Uint64(s.EnvStart), MmEnvEnd: proto.Uint64(s.EnvEnd),
		MmSavedAuxv: auxv, Dumpable: proto.Int32(int32(q.dumpable)), ThpDisabled: proto.Bool(q.thpOff),
	}
	// The scratch mapping must be gone before memory is read.
	if err := ctl.dropScratch(); err != nil {
		return ctl, err
	}
	return ctl, nil
}

// mapScratch maps an executable scratch area in a task being dumped:
// the syscall runner in its first page, argument data after it.
func (c *taskCtl) mapScratch() error {
	addr, err := c.mmap(0, scratchSize, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, -1, 0)
	if err != nil {
		return fmt.Errorf("task %d: scratch %w", c.tid, err)
	}
	c.scratch, c.size = addr+pageSize, scratchSize-pageSize
	return c.installRunner(addr)
}

// dropScratch unmaps the scratch area.
func (c *taskCtl) dropScratch() error {
	if c.scratch == 0 {
		return nil
	}
	c.runner = 0
	if _, err := c.call(unix.SYS_MUNMAP, c.scratch-pageSize, c.size+pageSize); err != nil {
		return fmt.Errorf("task %d: unmap scratch: %w", c.tid, err)
	}
	c.scratch = 0
	return nil
}

// Task states of core images (compel's COMPEL_TASK_*).
const (
	taskAlive  = 0x1
	taskDead   = 0x2
	taskZombie = 0x6
)

// dumpTaskFiles records fds, cwd, root, umask and the executable.
func dumpTaskFiles(t *dumpedTask, files *fileTable, shellJob bool) error {
	pid := t.pid
	fds, err := dumpFds(pid, files, shellJob)
	if err != nil {
		return err
	}
	t.fds = fds
	fsID := func(name string) (uint32, error) {
		p, err := os.Readlink(fmt.Sprintf("/proc/%d/%s", pid, name))
		if err != nil {
			return 0, fmt.Errorf("task %d %s: %w", pid, name, err)
		}
		if strings.HasSuffix(p, " (deleted)") {
			return 0, fmt.Errorf("task %d: %s %s was removed: %w", pid, name, p, ErrUnsupported)
		}
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return 0, fmt.Errorf("task %d %s %s: %w", pid, name, p, err)
		}
		return files.regFile(p, unix.O_RDONLY|unix.O_DIRECTORY, 0, &st), nil
	}
	cwd, err := fsID("cwd")
	if err != nil {
		return err
	}
	root, err := fsID("root")
	if err != nil {
		return err
	}
	t.fs = &fsimg.FsEntry{CwdId: proto.Uint32(cwd), RootId: proto.Uint32(root), Umask: proto.Uint32(t.status.Umask)}

	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return fmt.Errorf("task %d exe: %w", pid, err)
	}
	if strings.HasSuffix(exe, " (deleted)") {
		return fmt.Errorf("task %d: executable %s was deleted: %w", pid, exe, ErrUnsupported)
	}
	var st unix.Stat_t
	if err := unix.Stat(exe, &st); err != nil {
		return fmt.Errorf("task %d exe %s: %w", pid, exe, err)
	}
	t.mm.ExeFileId = proto.Uint32(files.regFile(exe, unix.O_RDONLY, 0, &st))
	return nil
}

// dumpMemory records the VMAs and writes the pages image.
func dumpMemory(t *dumpedTask, files *fileTable, pagesPath string) ([]*pagemap.PagemapEntry, uint64, error) {
	pid := t.pid
	maps, err := proc.Maps(pid)
	if err != nil {
		return nil, 0, fmt.Errorf("task %d: %w", pid, err)
	}
	var vmas []*vma.VmaEntry
	for _, m := range maps {
		e, err := classifyVMA(pid, m, files)
		if err != nil {
			return nil, 0, err
		}
		if e != nil {
			vmas = append(vmas, e)
		}
	}
	sortVMAs(vmas)
	t.mm.Vmas = vmas
	runs, err := collectPages(pid, vmas)
	if err != nil {
		return nil, 0, err
	}
	return writePages(pid, runs, pagesPath)
}

func writeDumpImages(stage *images.Staging, t *dumpedTask, files *fileTable, pm []*pagemap.PagemapEntry) error {
	pid := t.pid
	ids := &criucore.TaskKobjIdsEntry{VmId: proto.Uint32(1), FilesId: proto.Uint32(1), FsId: proto.Uint32(1), SighandId: proto.Uint32(1)}
	t.core.Ids = ids
	w := func(k images.Kind, name string, msgs ...proto.Message) error {
		if err := images.WriteFile(stage.Path(name), k, msgs...); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		return nil
	}
	ps := &pstree.PstreeEntry{
		Pid: proto.Uint32(uint32(pid)), Ppid: proto.Uint32(uint32(t.stat.PPid)),
		Pgid: proto.Uint32(uint32(t.stat.Pgrp)), Sid: proto.Uint32(uint32(t.stat.Session)),
		Threads: []uint32{uint32(pid)},
	}
	if err := w(images.Pstree, images.Pstree.FileName(), ps); err != nil {
		return err
	}
	if err := w(images.Core, images.Core.FileName(pid), t.core); err != nil {
		return err
	}
	if err := w(images.Ids, images.Ids.FileName(pid), ids); err != nil {
		return err
	}
	if err := w(images.Mm, images.Mm.FileName(pid), t.mm); err != nil {
		return err
	}
	msgs := []proto.Message{&pagemap.PagemapHead{PagesId: proto.Uint32(1)}}
	for _, e := range pm {
		msgs = append(msgs, e)
	}
	if err := w(images.Pagemap, images.Pagemap.FileName(pid), msgs...); err != nil {
		return err
	}
	var fe []proto.Message
	for _, e := range files.entries {
		fe = append(fe, e)
	}
	if err := w(images.Files, images.Files.FileName(), fe...); err != nil {
		return err
	}
	var fd []proto.Message
	for _, e := range t.fds {
		fd = append(fd, e)
	}
	if err := w(images.Fdinfo, images.Fdinfo.FileName(1), fd...); err != nil {
		return err
	}
	if err := w(images.Fs, images.Fs.FileName(pid), t.fs); err != nil {
		return err
	}
	var uptime uint64
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) == nil {
		uptime = uint64(ts.Nano() / 1000)
	}
	inv := &inventory.InventoryEntry{
		ImgVersion: proto.Uint32(images.ImagesV1_1), FdinfoPerId: proto.Bool(true),
		RootIds: ids, NsPerId: proto.Bool(true), Lsmtype: inventory.Lsmtype_NO_LSM.Enum(),
		DumpUptime: proto.Uint64(uptime),
	}
	return w(images.Inventory, images.Inventory.FileName(), inv)
}

// resumeTask puts a seized task back as it was and detaches it: the
// signals it dequeued are queued again, its mask and registers restored.
//
// Preconditions: runs on the tracer thread.
func resumeTask(t *dumpedTask, ctl *taskCtl) error {
	pid := t.pid
	var errs []error
	if ctl != nil {
		stolen := append(t.stolen, ctl.r.Stolen...)
		if len(stolen) > 0 && ctl.scratch == 0 {
			errs = append(errs, ctl.mapScratch())
		}
		if ctl.scratch != 0 {
			for i := range stolen {
				si := stolen[i]
				if _, err := ctl.put(0, si[:]); err != nil {
					errs = append(errs, err)
					continue
				}
				if _, err := ctl.call(unix.SYS_RT_TGSIGQUEUEINFO, uint64(pid), uint64(pid), uint64(si.Signo()), ctl.scratch); err != nil {
					errs = append(errs, fmt.Errorf("task %d: queue signal %d again: %w", pid, si.Signo(), err))
				}
			}
			errs = append(errs, ctl.dropScratch())
		}
		errs = append(errs, ptrace.SetSigmask(pid, t.sigmask))
		errs = append(errs, ctl.r.Restore())
		ctl.mem.Close()
	} else if len(t.stolen) > 0 {
		errs = append(errs, fmt.Errorf("task %d: %d dequeued signals could not be queued again", pid, len(t.stolen)))
	}
	errs = append(errs, ptrace.Detach(pid))
	return errors.Join(errs...)
}

// killTask ends a dumped task. It is still traced: SIGKILL ends it at
// once, and the tracer sees it die before its parent reaps it.
func killTask(pid int) error {
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		return fmt.Errorf("kill task %d: %w", pid, err)
	}
	for {
		st, err := ptrace.Wait(pid)
		if err != nil || st.Exited() {
			return nil
		}
	}
}
