package criu

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/vma"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/criu/ptrace"
)

// Copy-on-write snapshots for --leave-running.
//
// A dump that lets its tree run on does not copy the memory while the
// tree is stopped. Once everything else is read, still stopped, each
// dumped process forks a child by a remote clone: the child's address
// space is a copy-on-write image of the process's at that instant. The
// tree is let go at once, and the pages are read from the children
// (/proc/CHILD/mem) while the tree runs; then the children are killed
// and reaped. The images are the ones a stopped dump writes. Which
// pages to save is read from the children too, after the tree is let go
// (lazyMem): while stopped, only the mappings are read.
//
// The child must never run the task's code, whatever happens to ctcr:
//
//   - It is cloned from snapshotCode in ctcr's scratch area with exit
//     signal 0 (its parent gets no SIGCHLD, and a wait without __WALL
//     or __WCLONE never sees it) and CLONE_FILES (it holds no fd of its
//     own: an fd the task closes is closed).
//   - The task has PTRACE_O_TRACECLONE for that one call, so the child
//     is attached to ctcr by the kernel and starts in a ptrace stop,
//     before its first instruction. ctcr then sets PTRACE_O_EXITKILL on
//     the child (never on the task): a ctcr that dies from then on
//     takes the child with it.
//   - Between the clone and that option, a ctcr that dies detaches the
//     child, which runs the two instructions after the syscall (rax is
//     0 in the child: test rax, rax; jz) to an exit.
//
// Either way a child left by a dead ctcr is a zombie of its task, since
// its exit signal is 0, until the task waits with __WALL or exits: it
// holds a PID and nothing else. A ctcr that lives kills and reaps every
// child, on success or failure: the task, let go, is seized again for
// one remote wait4(child, __WALL|WNOHANG) and detached at once.
//
// What a fork does not hand over as it was is copied while the tree is
// still stopped, into a memory file (pageSource.saved): shared anonymous
// memory (the task's writes show in the child too), and mappings a fork
// leaves out (MADV_DONTFORK, VM_DONTCOPY) or wipes (MADV_WIPEONFORK,
// MAP_DROPPABLE); see markNoFork. File contents (memfd, ghost files,
// SysV segments) are read while stopped as in any dump.
//
// Costs: the fork copies the page tables while the tree is stopped, one
// entry per 4 KiB page (a plain fork of 1 GiB measured here: 33-67 ms on
// a quiet machine, 300-570 ms at a load of 100; 2-20 ms with
// transparent huge pages, one entry per 2 MiB). It bounds the frozen
// time of a process with much memory in 4 KiB pages. Every page the tree writes before
// its child is killed is copied on write, in the tree's own page fault
// and charged to its memory cgroup: up to the size of the memory it
// writes in that time, for a tree near its memory.max an OOM risk. The
// child counts against pids.max and RLIMIT_NPROC: a clone that fails
// (EAGAIN, ENOMEM) makes the dump copy that process's pages while it is
// stopped, as without snapshots, and say so in its log.

// snapshotCode is x86-64 code that forks a snapshot child of a dumped
// thread, run with RunCode the way the syscall runner is (see
// ptrace.OwnState): rax and the clone arguments are loaded by ctcr; the
// parent keeps the result in r12 and stops by raising r15 at itself, at
// snapshotStop, then returns to itself through its signal frame; the
// child exits before anything else.
//
//	      syscall              ; clone(rdi, rsi, rdx, r10, r8)
//	      test rax, rax
//	      jz   child
//	      mov  r12, rax        ; the child's PID, or -errno
//	      mov  eax, 234        ; tgkill(r13, r14, r15)
//	      mov  rdi, r13
//	      mov  rsi, r14
//	      mov  rdx, r15
//	      syscall
//	stop: test rax, rax
//	      jnz  trap
//	      mov  rsp, rbp
//	      mov  eax, 15         ; rt_sigreturn
//	      syscall
//	      ud2
//	trap: int3
//	child: mov eax, 60         ; exit(0)
//	      xor  edi, edi
//	      syscall
//	      ud2
var snapshotCode = []byte{
	0x0f, 0x05, // syscall
	0x48, 0x85, 0xc0, // test rax, rax
	0x74, 0x25, // jz child
	0x49, 0x89, 0xc4, // mov r12, rax
	0xb8, 0xea, 0x00, 0x00, 0x00, // mov eax, 234
	0x4c, 0x89, 0xef, // mov rdi, r13
	0x4c, 0x89, 0xf6, // mov rsi, r14
	0x4c, 0x89, 0xfa, // mov rdx, r15
	0x0f, 0x05, // syscall
	0x48, 0x85, 0xc0, // stop: test rax, rax
	0x75, 0x0c, // jnz trap
	0x48, 0x89, 0xec, // mov rsp, rbp
	0xb8, 0x0f, 0x00, 0x00, 0x00, // mov eax, 15
	0x0f, 0x05, // syscall
	0x0f, 0x0b, // ud2
	0xcc,                         // trap: int3
	0xb8, 0x3c, 0x00, 0x00, 0x00, // child: mov eax, 60
	0x31, 0xff, // xor edi, edi
	0x0f, 0x05, // syscall
	0x0f, 0x0b, // ud2
}

const (
	// snapshotStop is the offset of snapshotCode's stop label.
	snapshotStop = 26
	// snapshotOff is where snapshotCode goes in the scratch area's
	// first page, after the syscall runner.
	snapshotOff = 0x200
	// snapshotWait bounds each wait for a snapshot child or for a task
	// seized again to reap one.
	snapshotWait = 5 * time.Second
)

// snapshotWorth says why the pages of runs are better copied with the
// task stopped, or "" if a snapshot pays. A fork costs the stopped task
// about a tenth of what copying costs per page it maps (measured here:
// 35-65 ms of CPU per GiB of 4 KiB pages for the fork, 0.5 s for the
// copy), so a dump that copies little of what the task maps (on top of
// a pre-copy or a pre-dump, where most pages stay in the parent image,
// or a child whose pages are mostly its parent's) is kept shorter
// without one.
func snapshotWorth(runs []pageRun) string {
	var mapped, copied uint64
	for _, r := range runs {
		mapped += r.npages * pageSize
		if !r.inParent && !r.preCopied {
			copied += r.npages * pageSize
		}
	}
	switch {
	case copied == 0:
		return "no page to copy"
	case copied*8 < mapped:
		return fmt.Sprintf("%d bytes to copy of %d mapped: the fork would cost more than the copy", copied, mapped)
	}
	return ""
}

// snapshot is the copy-on-write child of one dumped process.
type snapshot struct {
	p    *dumpProc
	pid  int // the child's host PID; 0 once its death is collected
	vpid int // its PID as its parent sees it, for the parent's wait4
	// zombie: the child died and its parent has not reaped it yet.
	zombie bool
	runs   []pageRun
	path   string   // the pages image to write
	saved  *os.File // the noFork runs' pages, copied while stopped
}

// snapshotSet is the snapshot children of a dump.
type snapshotSet struct {
	snaps []*snapshot
	logf  func(string, ...any)
}

// forkSnapshot has p fork its snapshot child. It returns the child's
// host PID and its PID as p sees it; a child that exists is returned
// even with an error, for the caller to kill. A clone the kernel
// refuses is returned as the errno, with no child.
//
// Preconditions: runs on the tracer thread; p is seized and its state
// read (its scratch area is gone again).
func (p *dumpProc) forkSnapshot() (child, vchild int, err error) {
	if err := p.mapScratch(nil, true); err != nil {
		return 0, 0, err
	}
	defer func() {
		if derr := p.dropScratch(); derr != nil && err == nil {
			err = derr
		}
	}()
	c := p.leader().ctl
	entry := c.runner + snapshotOff
	if err := c.mem.WriteAt(snapshotCode, entry); err != nil {
		return 0, 0, err
	}
	if err := c.writeFrame(); err != nil {
		return 0, 0, err
	}
	// For this call only: the child inherits the task's options, and
	// the task must never carry more than the dump's own.
	if err := ptrace.SetOptions(c.tid, seizeOptions|unix.PTRACE_O_TRACECLONE); err != nil {
		return 0, 0, fmt.Errorf("task %d: %w", p.pid, err)
	}
	own := c.r.Own
	stop := own.Stop
	own.Stop = entry + snapshotStop
	c.r.Events = c.r.Events[:0]
	regs, err := c.r.RunCode(entry, func(r *ptrace.Regs) {
		r.Rax = unix.SYS_CLONE
		// The low byte of the flags is the exit signal: none.
		r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8 = unix.CLONE_FILES, 0, 0, 0, 0
		r.R12 = 0
		r.R13, r.R14, r.R15 = own.TgkillArgs[0], own.TgkillArgs[1], uint64(own.Sig)
		r.Rbp = own.FrameSP
	})
	own.Stop = stop
	if oerr := ptrace.SetOptions(c.tid, seizeOptions); oerr != nil && err == nil {
		err = fmt.Errorf("task %d: %w", p.pid, oerr)
	}
	// The clone's event names the child (its host PID) even if the run
	// failed after it.
	for _, msg := range c.r.Events {
		if msg != 0 {
			child = int(msg)
		}
	}
	if err != nil {
		return child, 0, fmt.Errorf("task %d: fork a snapshot: %w", p.pid, err)
	}
	if ret := int64(regs.R12); ret < 0 && ret > -4096 {
		return child, 0, fmt.Errorf("task %d: fork a snapshot: clone: %w", p.pid, unix.Errno(-ret))
	}
	if child == 0 {
		return 0, 0, fmt.Errorf("task %d: fork a snapshot: clone returned %d but reported no child", p.pid, int64(regs.R12))
	}
	vchild = int(regs.R12)
	st, err := ptrace.WaitTimeout(child, snapshotWait)
	if err != nil {
		return child, vchild, fmt.Errorf("snapshot %d of task %d: %w", child, p.pid, err)
	}
	if st.Exited() {
		// Its death is collected: it is a zombie of the task, for the
		// caller's kill (a no-op) and reap.
		return child, vchild, fmt.Errorf("snapshot %d of task %d %v before it was used", child, p.pid, st)
	}
	if st.Event() != unix.PTRACE_EVENT_STOP {
		return child, vchild, fmt.Errorf("snapshot %d of task %d: %v, want its first stop", child, p.pid, st)
	}
	testKillAfterSnapshotClone()
	if err := ptrace.SetOptions(child, unix.PTRACE_O_EXITKILL); err != nil {
		return child, vchild, fmt.Errorf("snapshot %d of task %d: %w", child, p.pid, err)
	}
	return child, vchild, nil
}

// take forks the snapshot child of p, which must have its runs planned,
// and copies what a fork does not keep into a memory file. It returns
// false, with no error, if the kernel refused the clone (pids.max,
// RLIMIT_NPROC, memory): p's pages must then be copied while it is
// stopped.
//
// Preconditions: runs on the tracer thread; p is seized.
func (ss *snapshotSet) take(p, parent *dumpProc, path string) (bool, error) {
	child, vchild, err := p.forkSnapshot()
	if child != 0 {
		// Killed and reaped on every path from here: the caller's
		// rollback or the end of the copy.
		ss.snaps = append(ss.snaps, &snapshot{p: p, pid: child, vpid: vchild, runs: p.pageRuns, path: path})
	}
	var errno unix.Errno
	if err != nil && child == 0 && errors.As(err, &errno) && (errno == unix.EAGAIN || errno == unix.ENOMEM) {
		ss.logf("task %d: no snapshot child (%v): its memory is copied while it is stopped", p.pid, err)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	s := ss.snaps[len(ss.snaps)-1]
	if p.lazy != nil {
		// The rest of its runs are planned from the child, later.
		if err := p.lazy.planNoFork(p, parent, child, ss.logf); err != nil {
			return false, err
		}
		s.runs = p.lazy.frozenRuns
	}
	if s.saved, err = saveNoFork(p.pid, s.runs); err != nil {
		return false, err
	}
	return true, nil
}

// saveNoFork copies the pages of the noFork runs of the stopped task pid
// into a new memory file, one after the other, or returns nil if there
// are none.
func saveNoFork(pid int, runs []pageRun) (*os.File, error) {
	var f, mem *os.File
	var buf []byte
	var off int64
	for _, r := range runs {
		if !r.noFork || r.inParent || r.preCopied {
			continue
		}
		if f == nil {
			fd, err := unix.MemfdCreate("ctcr-snapshot-saved", unix.MFD_CLOEXEC)
			if err != nil {
				return nil, fmt.Errorf("task %d: memory file for its shared pages: %w", pid, err)
			}
			f = os.NewFile(uintptr(fd), "ctcr-snapshot-saved")
			if mem, err = os.Open(fmt.Sprintf("/proc/%d/mem", pid)); err != nil {
				f.Close()
				return nil, fmt.Errorf("task %d: %w", pid, err)
			}
			defer mem.Close()
			buf = make([]byte, pageBufSize)
		}
		for addr, left := r.addr, r.npages*pageSize; left > 0; {
			k := min(left, uint64(len(buf)))
			if _, err := mem.ReadAt(buf[:k], int64(addr)); err != nil {
				f.Close()
				return nil, fmt.Errorf("task %d: read memory at %#x: %w", pid, addr, err)
			}
			if _, err := f.WriteAt(buf[:k], off); err != nil {
				f.Close()
				return nil, fmt.Errorf("task %d: save its pages at %#x: %w", pid, addr, err)
			}
			off += int64(k)
			addr, left = addr+k, left-k
		}
	}
	return f, nil
}

// copyPages writes every snapshot's pages image from its child, while
// the tree runs. It stops at a signal to ctcr (Interrupted).
func (ss *snapshotSet) copyPages(pr *progress) error {
	testKillInSnapshotCopy()
	for _, s := range ss.snaps {
		if err := Interrupted(); err != nil {
			return err
		}
		src := pageSource{pid: s.pid, allMem: true, saved: s.saved, who: fmt.Sprintf("snapshot %d of task %d", s.pid, s.p.pid)}
		if err := writePagesFrom(src, s.runs, s.path, pr); err != nil {
			return err
		}
		if s.saved != nil {
			s.saved.Close()
			s.saved = nil
		}
	}
	return nil
}

// kill kills every snapshot child and collects its death: the child is
// then a zombie of its task.
//
// Preconditions: runs on the tracer thread.
func (ss *snapshotSet) kill() error {
	var errs []error
	for _, s := range ss.snaps {
		if s.saved != nil {
			s.saved.Close()
			s.saved = nil
		}
		if s.pid == 0 {
			continue
		}
		unix.Kill(s.pid, unix.SIGKILL)
		for {
			st, err := ptrace.WaitTimeout(s.pid, snapshotWait)
			if errors.Is(err, unix.ECHILD) {
				// Its death was collected already (it died before
				// it was used): a zombie of its task.
				s.pid, s.zombie = 0, true
				break
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("snapshot %d of task %d: %w", s.pid, s.p.pid, err))
				break
			}
			if st.Exited() {
				s.pid, s.zombie = 0, true
				break
			}
			// A stop reported before the kill took: the next report
			// is its death.
		}
	}
	return errors.Join(errs...)
}

// reapStopped has each task, still seized, reap its killed child.
//
// Preconditions: runs on the tracer thread; the tree is seized.
func (ss *snapshotSet) reapStopped() error {
	var errs []error
	for _, s := range ss.snaps {
		if !s.zombie || s.vpid <= 0 {
			// vpid 0: the clone's result was never read back (the
			// task died in the call); wait4(0) would name its group.
			continue
		}
		c := s.p.leader().ctl
		// The scratch area is gone: a lone call from the vDSO.
		if _, err := c.call(unix.SYS_WAIT4, uint64(s.vpid), 0, unix.WALL|unix.WNOHANG, 0); err != nil && !errors.Is(err, unix.ECHILD) {
			errs = append(errs, fmt.Errorf("task %d: reap its snapshot %d: %w", s.p.pid, s.vpid, err))
			continue
		}
		s.zombie = false
	}
	return errors.Join(errs...)
}

// reapRunning has each task, running again, reap its killed child: one
// of its threads is seized, runs wait4 and is let go. A task that exited
// meanwhile has nothing to reap (its children went to its reaper, which
// a child killed gets SIGCHLD from, as any orphan).
//
// Preconditions: runs on the tracer thread.
func (ss *snapshotSet) reapRunning() error {
	var errs []error
	for _, s := range ss.snaps {
		if !s.zombie || s.vpid <= 0 {
			continue // see reapStopped
		}
		start := time.Now()
		reaped, err := reapInRunning(s.p, s.vpid)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("task %d: reap its snapshot %d: %w", s.p.pid, s.vpid, err))
		case !reaped:
			ss.logf("task %d: its snapshot %d was not there to reap", s.p.pid, s.vpid)
		default:
			ss.logf("task %d: snapshot %d reaped, the task held %v", s.p.pid, s.vpid, time.Since(start))
		}
		s.zombie = false
	}
	return errors.Join(errs...)
}

// reapInRunning seizes a live thread of p, has it run
// wait4(vchild, __WALL|WNOHANG) and detaches it. It reports whether the
// child was reaped; a task gone, or no such child any more, is no error.
//
// The call is a lone one from the vDSO's syscall instruction: no
// scratch area is mapped for it, so its only window is the call itself
// (a ctcr that dies within it leaves the thread with ctcr's registers,
// as the calls that map and unmap the scratch area do; see
// ptrace.OwnState).
//
// Preconditions: runs on the tracer thread.
func reapInRunning(p *dumpProc, vchild int) (bool, error) {
	tids, err := proc.Threads(p.pid)
	if err != nil {
		return false, nil // the task is gone
	}
	ip := p.leader().ctl.r.IP
	for _, tid := range tids {
		err := ptrace.SeizeBriefly(tid, seizeOptions, snapshotWait)
		if errors.Is(err, unix.ESRCH) || errors.Is(err, ptrace.ErrExited) {
			continue // a thread that exited: try another
		}
		if err != nil {
			return false, err
		}
		reaped, err := reapFrom(p.pid, tid, ip, vchild)
		if derr := ptrace.Detach(tid); derr != nil && err == nil && !errors.Is(derr, unix.ESRCH) {
			err = derr
		}
		return reaped, err
	}
	return false, nil
}

// reapFrom runs wait4 for vchild in the seized thread tid of process pid,
// from the syscall instruction at ip (the vDSO's at dump time: checked,
// since the task may have executed another program since).
//
// Preconditions: runs on the tracer thread; tid is in an interrupt stop.
func reapFrom(pid, tid int, ip uint64, vchild int) (bool, error) {
	mem, err := ptrace.OpenMem(pid)
	if err != nil {
		return false, err
	}
	defer mem.Close()
	insn := make([]byte, 2)
	if err := mem.ReadAt(insn, ip); err != nil || insn[0] != 0x0f || insn[1] != 0x05 {
		maps, err := proc.Maps(pid)
		if err != nil {
			return false, err
		}
		var ok bool
		if ip, ok = findSyscallInsn(mem, maps); !ok {
			return false, fmt.Errorf("task %d has no vDSO to run wait4 from", pid)
		}
	}
	regs, err := ptrace.GetRegs(tid)
	if err != nil {
		return false, err
	}
	mask, err := ptrace.GetSigmask(tid)
	if err != nil {
		return false, err
	}
	r := &ptrace.Remote{Tid: tid, IP: ip, Base: regs, Own: &ptrace.OwnState{Mask: mask}}
	ret, err := r.Syscall(unix.SYS_WAIT4, uint64(vchild), 0, unix.WALL|unix.WNOHANG, 0)
	if errors.Is(err, unix.ECHILD) {
		return false, nil // the task reaped it itself (a wait with __WALL)
	}
	if err != nil {
		return false, err
	}
	if len(r.Stolen) > 0 {
		return ret != 0, fmt.Errorf("thread %d dequeued %d signals during wait4: lost", tid, len(r.Stolen))
	}
	return ret != 0, nil
}

// testKillInSnapshotCopy is a test hook: CTCR_TEST_KILL_IN_SNAPSHOT_COPY=MS
// makes ctcr kill itself with SIGKILL MS milliseconds after it began to
// copy the pages from the snapshot children, the tree running again, to
// show that the tree runs on and no child does.
func testKillInSnapshotCopy() {
	v := os.Getenv("CTCR_TEST_KILL_IN_SNAPSHOT_COPY")
	if v == "" {
		return
	}
	ms, _ := strconv.Atoi(v)
	time.AfterFunc(time.Duration(ms)*time.Millisecond, func() { unix.Kill(os.Getpid(), unix.SIGKILL) })
}

// lazyMem is the memory plan of a process dumped with a snapshot whose
// pagemap is read from the snapshot child once the tree runs again.
//
// Reading the pagemap and smaps of a task walks its page tables: 20-40
// ms per GiB of 4 KiB pages each, here. The snapshot child's page tables
// are a copy of the task's at the fork, so its pagemap gives the same
// pages (present, swapped, page frames; only "exclusive" differs, every
// page being mapped twice now), and its smaps the same VmFlags, except:
//
//   - VM_LOCKED, which a fork clears in the child: a task with locked
//     memory (VmLck in status, a counter) has its smaps read while
//     stopped;
//   - mappings a fork leaves out (VM_DONTCOPY: MADV_DONTFORK or a
//     driver's): absent from the child's maps, which are compared with
//     the task's right after the fork; if one is, the task's smaps are
//     read while it is stopped;
//   - "mw" of a read-only shared file mapping, which decides how its
//     file is opened again and is needed before the files images are
//     written: such a task has its smaps read while stopped.
//
// What a fork does not hand over as it was (shared anonymous memory,
// MADV_DONTFORK and MADV_WIPEONFORK mappings) is planned and copied
// while the task is stopped, as before: a wiped mapping, if the task's
// VmFlags are not read, is one where the child has no page and the task
// has some (PAGEMAP_SCAN stops at the first page: cheap either way).
type lazyMem struct {
	only map[*vma.VmaEntry][]proc.PageRange // see classifyVMAs
	// vmFlags are the task's, read while stopped; nil if they are
	// read from the snapshot child.
	vmFlags map[uint64][]string
	// why says why vmFlags were read while stopped.
	why    string
	noFork map[*vma.VmaEntry]bool
	// empty: the probe found no page in the VMA, in the task either.
	empty map[*vma.VmaEntry]bool
	// frozenRuns are the pages of the noFork VMAs, planned while
	// stopped (and saved then).
	frozenRuns []pageRun
}

// planLazy classifies p's mappings while it is stopped, from its maps
// and, only where needed (see lazyMem), its smaps.
func planLazy(p *dumpProc, files *fileTable, shmem map[uint64][]proc.PageRange) (*lazyMem, error) {
	maps, err := proc.Maps(p.pid)
	if err != nil {
		return nil, fmt.Errorf("task %d: %w", p.pid, err)
	}
	lz := &lazyMem{}
	for _, m := range maps {
		if m.Shared && !m.Write && m.Inode != 0 {
			lz.why = fmt.Sprintf("read-only shared mapping %#x-%#x (may it be made writable?)", m.Start, m.End)
			break
		}
	}
	if lz.why == "" {
		locked, err := proc.LockedBytes(p.pid)
		if err != nil {
			return nil, fmt.Errorf("task %d: %w", p.pid, err)
		}
		if locked > 0 {
			lz.why = fmt.Sprintf("%d bytes of locked memory (a fork unlocks the child's)", locked)
		}
	}
	if lz.why != "" {
		if lz.vmFlags, err = proc.ReadVmFlags(p.pid); err != nil {
			return nil, fmt.Errorf("task %d: %w", p.pid, err)
		}
	}
	if lz.only, err = classifyVMAs(p, maps, lz.vmFlags, files, shmem); err != nil {
		return nil, err
	}
	return lz, nil
}

// readTaskFlags reads the VmFlags of the stopped task p now and applies
// them to its VMAs.
func (lz *lazyMem) readTaskFlags(p *dumpProc, why string) error {
	f, err := proc.ReadVmFlags(p.pid)
	if err != nil {
		return fmt.Errorf("task %d: %w", p.pid, err)
	}
	lz.vmFlags, lz.why = f, why
	for _, e := range p.mm.Vmas {
		adviseVMA(e, f[e.GetStart()])
	}
	return nil
}

// planNoFork finds, right after the fork of child and with p still
// stopped, the VMAs whose pages the child does not hold as they are
// (lazyMem), and plans their pages from the task.
func (lz *lazyMem) planNoFork(p, parent *dumpProc, child int, logf func(string, ...any)) error {
	if lz.vmFlags == nil {
		cm, err := proc.Maps(child)
		if err != nil {
			return fmt.Errorf("snapshot %d of task %d: %w", child, p.pid, err)
		}
		have := map[[2]uint64]bool{}
		for _, m := range cm {
			have[[2]uint64{m.Start, m.End}] = true
		}
		for _, e := range p.mm.Vmas {
			if !have[[2]uint64{e.GetStart(), e.GetEnd()}] {
				if err := lz.readTaskFlags(p, fmt.Sprintf("mapping %#x-%#x not forked (MADV_DONTFORK)", e.GetStart(), e.GetEnd())); err != nil {
					return err
				}
				break
			}
		}
	}
	if lz.why != "" {
		logf("task %d: VmFlags read while stopped: %s", p.pid, lz.why)
	}
	lz.noFork, lz.empty = map[*vma.VmaEntry]bool{}, map[*vma.VmaEntry]bool{}
	var inChild, inTask *proc.PagemapReader
	defer func() {
		if inChild != nil {
			inChild.Close()
			inTask.Close()
		}
	}()
	var vmas []*vma.VmaEntry
	for _, e := range p.mm.Vmas {
		nf := e.GetStatus()&vmaAnonShared != 0
		if lz.vmFlags != nil {
			for _, f := range lz.vmFlags[e.GetStart()] {
				nf = nf || f == "dc" || f == "wf"
			}
		} else if !nf && e.GetStatus()&vmaAnonPrivate != 0 && hugePageSize(e) == 0 {
			// Wiped by the fork (MADV_WIPEONFORK, MAP_DROPPABLE)?
			if inChild == nil {
				var err error
				if inChild, err = proc.OpenPagemap(child); err != nil {
					return fmt.Errorf("snapshot %d of task %d: %w", child, p.pid, err)
				}
				if inTask, err = proc.OpenPagemap(p.pid); err != nil {
					inChild.Close()
					inChild = nil
					return fmt.Errorf("task %d: %w", p.pid, err)
				}
			}
			c, err := inChild.HasPages(e.GetStart(), e.GetEnd())
			if err != nil {
				return fmt.Errorf("snapshot %d of task %d: %w", child, p.pid, err)
			}
			if !c {
				if nf, err = inTask.HasPages(e.GetStart(), e.GetEnd()); err != nil {
					return fmt.Errorf("task %d: %w", p.pid, err)
				}
				lz.empty[e] = !nf
			}
		}
		if nf {
			lz.noFork[e] = true
			vmas = append(vmas, e)
		}
	}
	if len(vmas) == 0 {
		return nil
	}
	pp, err := openParentPages(p, parent)
	if err != nil {
		return err
	}
	defer pp.close()
	runs, err := collectPages(p.pid, vmas, lz.only, pp)
	if err != nil {
		return err
	}
	for i := range runs {
		runs[i].noFork = true
	}
	lz.frozenRuns = runs
	return nil
}

// planStopped plans all of p's pages from the task, stopped: the
// fallback when its snapshot child could not be forked.
func (lz *lazyMem) planStopped(p, parent *dumpProc) ([]pageRun, error) {
	if lz.vmFlags == nil {
		if err := lz.readTaskFlags(p, "no snapshot child"); err != nil {
			return nil, err
		}
	}
	pp, err := openParentPages(p, parent)
	if err != nil {
		return nil, err
	}
	defer pp.close()
	runs, err := collectPages(p.pid, p.mm.Vmas, lz.only, pp)
	if err != nil {
		return nil, err
	}
	markNoFork(runs, p.mm.Vmas, lz.vmFlags)
	return runs, nil
}

// planFromChildren plans, once the tree runs again, the pages of every
// lazily planned process from its snapshot child (see lazyMem), and
// writes its mm and pagemap images again with them. It returns the
// bytes of pages the images hold.
func (ss *snapshotSet) planFromChildren(d *dumpTree, stage *images.Staging) (uint64, error) {
	of := map[*dumpProc]*snapshot{}
	for _, s := range ss.snaps {
		if s.p.lazy != nil && s.pid != 0 {
			of[s.p] = s
		}
	}
	// Every VMA's advice first: a child's pages are compared with its
	// parent's VMA by VMA, flags included.
	for _, s := range ss.snaps {
		lz := s.p.lazy
		if lz == nil || lz.vmFlags != nil {
			continue
		}
		f, err := proc.ReadVmFlags(s.pid)
		if err != nil {
			return 0, fmt.Errorf("snapshot %d of task %d: %w", s.pid, s.p.pid, err)
		}
		for _, e := range s.p.mm.Vmas {
			adviseVMA(e, f[e.GetStart()])
			// A wiped mapping the probe did not look at (one the
			// kernel treats as anonymous though it maps a file,
			// such as a private /dev/zero) has lost its pages in
			// the child: fail rather than save zeros.
			if slices.Contains(f[e.GetStart()], "wf") && !lz.noFork[e] && !lz.empty[e] {
				return 0, fmt.Errorf("task %d mapping %#x-%#x: MADV_WIPEONFORK, found only in its snapshot, which lacks its pages: dump it with --no-snapshot: %w",
					s.p.pid, e.GetStart(), e.GetEnd(), ErrUnsupported)
			}
		}
	}
	var total uint64
	// writeImages kept them while the tree was frozen, without these
	// pages, and they were written once it ran (pendingImages): written
	// again, over them.
	w := func(k images.Kind, name string, msgs ...proto.Message) error {
		if err := images.ReplaceFile(stage.Path(name), k, msgs...); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		return nil
	}
	for _, s := range ss.snaps {
		p, lz := s.p, s.p.lazy
		if lz == nil {
			continue
		}
		var pp *parentPages
		if parent := d.byPid[p.ppid]; parent != nil && parent != p && of[parent] != nil {
			// The parent's snapshot holds its pages as they were:
			// the same page frames as the task's then.
			pmr, err := proc.OpenPagemap(of[parent].pid)
			if err != nil {
				return 0, fmt.Errorf("snapshot %d of task %d: %w", of[parent].pid, parent.pid, err)
			}
			pp = &parentPages{vmas: parent.mm.Vmas, pmr: pmr}
		}
		var vmas []*vma.VmaEntry
		for _, e := range p.mm.Vmas {
			if !lz.noFork[e] {
				vmas = append(vmas, e)
			}
		}
		runs, err := collectPages(s.pid, vmas, nil, pp)
		pp.close()
		if err != nil {
			return 0, fmt.Errorf("snapshot of task %d: %w", p.pid, err)
		}
		runs = append(runs, lz.frozenRuns...)
		slices.SortStableFunc(runs, func(a, b pageRun) int { return cmp.Compare(a.addr, b.addr) })
		s.runs, p.pageRuns = runs, runs
		var n uint64
		p.pagemap, n = pagemapEntries(runs)
		total += n
		if err := p.writeMemImages(w); err != nil {
			return 0, err
		}
	}
	return total, nil
}

// testKillAfterSnapshotClone is a test hook:
// CTCR_TEST_KILL_AFTER_SNAPSHOT_CLONE=1 makes ctcr kill itself with
// SIGKILL once a snapshot child exists, in its first stop, and before
// it has PTRACE_O_EXITKILL: the child, detached, must take its own exit
// path and never run the task's code.
func testKillAfterSnapshotClone() {
	if os.Getenv("CTCR_TEST_KILL_AFTER_SNAPSHOT_CLONE") == "" {
		return
	}
	unix.Kill(os.Getpid(), unix.SIGKILL)
	time.Sleep(time.Minute) // the signal is on its way
}
