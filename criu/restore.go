package criu

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	criucore "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"

	"github.com/ctcr/ctcr/cgroup"
	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/criu/ptrace"
)

// RestoreOptions says where the images are and how to run the result.
type RestoreOptions struct {
	Dir      string
	ShellJob bool // terminal fds of the image become ctcr's own terminal
	// ExtUnixSk lets unix sockets whose peer was outside the dumped tree
	// connect to that peer's name again; without it they fail restore.
	ExtUnixSk bool
	// PidWait bounds how long restore waits for a dumped task's PID to be
	// released (a killed task keeps it until its parent reaps it).
	PidWait time.Duration
	Log     func(format string, args ...any)
	// Namespaces are CLONE_NEW* flags of namespaces to create for the
	// root besides those the image asks for (a new PID namespace when the
	// tree had its own).
	Namespaces uint64
	// PrepareRoot, if set, runs once the root task exists in its new
	// namespaces, before it creates any other task: the container front
	// end mounts the root file system and sets the hostname there.
	PrepareRoot func(*RootTask) error
	// PlaceTasks, if set, runs when every task is ready, before
	// BeforeResume, with the host PID of each live process by its PID in
	// the image (the container front end moves tasks into the cgroups
	// below the container's that they were in).
	PlaceTasks func(pids map[int]int) error
	// NestedNS, if set, fills a namespace of kind (uts, ipc, net) that a
	// task below the root had of its own, with image id: the engine has
	// just made it in task t, before t maps anything. Without it such a
	// checkpoint fails to restore.
	NestedNS func(kind string, id int, t *RootTask) error
	// BeforeResume, if set, runs when every task is ready, just before
	// they are let go (vzctl's --undump freezes the cgroup here).
	BeforeResume func() error
	// DropRootPdeathsig restores the root task without its parent-death
	// signal. The parent it had (LXC's monitor, which sets SIGKILL on
	// its container's init) is not restored; the root's parent is now
	// ctcr's thread that started it, and a signal kept from the image
	// would kill the root as soon as a detached restore's ctcr exits.
	DropRootPdeathsig bool
	// JoinNet, if set, is a network namespace (a path, such as
	// /var/run/netns/NAME) the root joins instead of making a new one:
	// the one a container runtime made and configured, with its
	// interfaces and addresses, which outlived the checkpoint.
	JoinNet string
	// Progress, if set, hears the bytes of memory restored so far, a
	// few times a second while pages are read in.
	Progress func(bytes uint64)
	// VdsoProxy puts the checkpoint's vDSO functions behind jumps into
	// this kernel's vDSO even when the two match: what a restore on a
	// kernel whose vDSO differs does (vdsoProxy).
	VdsoProxy bool
	// InheritFds hands the restore files that stand for objects of the
	// image, by CRIU's inherit-fd keys: "pipe:[INO]" is used for every fd
	// of the pipe whose inode was INO at the dump (a runtime's stdio
	// pipes, whose other ends it holds). The caller keeps ownership.
	InheritFds map[string]*os.File
	// Terminal, if set, gives the terminal that stands in for a pty
	// slave whose master was outside the dumped tree (a container's
	// console, whose master the runtime held), instead of ctcr's own
	// (ShellJob). It is called once, after PrepareRoot; the caller keeps
	// the file.
	Terminal func() (*os.File, error)
	// ManageCgroups, unless ModeIgnore (the zero value, for callers that
	// manage cgroups themselves), puts tasks back into the cgroups
	// cgroup.img names, making them as the mode says (criu/cgroups.go).
	ManageCgroups cgroup.Mode
	// CgroupRoots moves the root task's cgroups, hierarchy by hierarchy,
	// with the cgroups below them (--cgroup-root).
	CgroupRoots cgroup.Roots
}

func (o *RestoreOptions) logf(format string, args ...any) {
	if o.Log != nil {
		o.Log(format, args...)
	}
}

// Restored is a running restored process tree.
type Restored struct {
	Pid        int // the root's host PID (ctcr's child)
	VPid       int // the root's PID in the image
	Tasks      int
	PagesBytes uint64
	Total      time.Duration
	Memory     time.Duration
	// Warnings say what of the checkpoint could not be checked (no
	// manifest).
	Warnings []string
}

// Wait waits for the restored root task (ctcr's child) to end and
// returns its wait status.
func (r *Restored) Wait() (unix.WaitStatus, error) {
	waitingForRestored(true)
	defer waitingForRestored(false)
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(r.Pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		return ws, err
	}
}

// Restore rebuilds the checkpoint in opts.Dir and lets it run. Restore
// proceeds in stages:
//
//  1. read and check every image (nothing is changed before this ends);
//  2. start a puppet stopped at exec and give it a control area;
//  3. build the tree: the puppet clones the root (clone3 set_tid), each
//     task clones its children, sessions and groups are formed, helpers
//     stand in for dead session or group leaders, zombies exit;
//  4. turn each process into its checkpointed self: unmap the puppet's
//     memory, move the vDSO, map every VMA and fill it, clone its threads;
//  5. mm fields, name, fds, cwd/root/umask;
//  6. signal dispositions, timers, limits, scheduling, pending signals;
//  7. credentials last; then every thread's mask and registers are set
//     and all tasks are detached together.
//
// If any stage fails, every task it created is killed.
func Restore(opts RestoreOptions) (*Restored, error) {
	Begin()
	defer End()
	r, err := restore(opts)
	if err != nil {
		// The dump's hold on TCP connections stays, so that another
		// restore can take them over; say so.
		if table, terr := readNetLock(filepath.Join(opts.Dir, netLockFile)); terr == nil && table != "" {
			err = fmt.Errorf("%w (its TCP connections stay held by nftables table %s until a restore succeeds)", err, table)
		}
	}
	return r, err
}

func restore(opts RestoreOptions) (*Restored, error) {
	start := time.Now()
	cp, err := loadCheckpoint(opts.Dir)
	if err != nil {
		return nil, err
	}
	proxy, err := checkVdso(opts.Dir, opts.VdsoProxy)
	if err != nil {
		return nil, err
	}
	rt, err := planTree(cp, &opts)
	if err != nil {
		return nil, err
	}
	cgPlan, cgDirs, err := planCgroups(cp, &opts)
	if err != nil {
		return nil, err
	}
	rt.cgroups = cgPlan
	if rt.vdsoProxy = proxy; proxy != nil {
		opts.logf("vDSO: the checkpoint's %d functions are reached through jumps at its old place into this kernel's", len(proxy.jumps))
	}
	if err := Interrupted(); err != nil {
		return nil, err
	}
	if opts.PidWait == 0 {
		opts.PidWait = 10 * time.Second
	}
	deadline := time.Now().Add(opts.PidWait)
	if rt.nsFlags&unix.CLONE_NEWPID == 0 {
		// In a new PID namespace every id is free; here they must be.
		for _, id := range rt.ids() {
			if err := waitPidFree(id, time.Until(deadline)); err != nil {
				return nil, err
			}
		}
	}

	tr := ptrace.NewTracer()
	defer tr.Close()
	var rb rollback
	defer func() { tr.Do(func() error { rb.run(); return nil }) }()
	if cgPlan != nil {
		// Added first, so that it runs last: after the tasks are killed.
		rb.add(cgPlan.removeMade)
		if err := cgPlan.prepare(opts.ManageCgroups, cgDirs); err != nil {
			return nil, err
		}
	}
	rb.add(rt.killAll)

	res := &Restored{Tasks: len(rt.procs), VPid: rt.root.vpid, Warnings: cp.warnings}
	for _, p := range rt.procs {
		if !p.img.zombie {
			res.PagesBytes += p.img.pagesSize + p.img.parentSize
		}
	}
	var pp *puppet
	err = tr.Do(func() error {
		var err error
		if pp, err = startPuppet(); err != nil {
			return err
		}
		rb.add(pp.kill)
		if err := pp.prepare(rt.imageSpans()); err != nil {
			return err
		}
		if err := Interrupted(); err != nil {
			return err
		}
		opts.logf("puppet %d ready, control area at %#x", pp.pid, pp.ctl.r.IP)
		rt.sock = pp.sock
		rt.ctlAddr = pp.ctl.r.IP
		if err := rt.build(pp); err != nil {
			return err
		}
		res.Pid = rt.root.pid
		pp.kill()
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.Memory = rt.memTime
	rt.progress.done()
	opts.logf("%d tasks created, their memory restored (%v)", len(rt.procs), time.Since(start))

	err = tr.Do(func() error {
		// Unix sockets whose peer credentials the checkpoint keeps are
		// made now, with calls in the tasks they name, which have
		// neither their credentials nor their files yet.
		if err := rt.buildUnixSockets(); err != nil {
			return err
		}
		// What restoreTaskState reads of each task from /proc is read
		// ahead, off this thread: nothing changes it until the task's
		// own turn (a task's signal dispositions and limits are set by
		// that task's batch only).
		facts := startReadAheadOf(len(rt.procs), func(i int) (*restoreFacts, error) {
			return readRestoreFacts(rt.procs[i])
		})
		defer facts.end()
		for i, p := range rt.procs {
			if p.helper || p.img.zombie {
				continue
			}
			if err := Interrupted(); err != nil {
				return err
			}
			// Memory was restored while the tree was built, before each
			// task forked its children.
			if err := p.createThreads(); err != nil {
				return err
			}
			if err := p.restoreMm(); err != nil {
				return err
			}
			if err := p.restoreFiles(); err != nil {
				return err
			}
			f, err := facts.get(i)
			if err != nil {
				return err
			}
			if err := p.restoreTaskState(f); err != nil {
				return err
			}
		}
		if err := rt.files.finalize(); err != nil {
			return err
		}
		if err := rt.cgroups.placeThreads(rt.procs); err != nil {
			return err
		}
		opts.logf("tasks restored (%v)", time.Since(start))
		// The last moment a signal to ctcr undoes the restore: after
		// this every task runs.
		if err := Interrupted(); err != nil {
			return err
		}
		return rt.finish()
	})
	pp.sock.Close()
	rt.closeFiles()
	if err != nil {
		return nil, err
	}
	rb.release()
	res.Total = time.Since(start)
	return res, nil
}

// waitPidFree waits until pid is free. A zombie or an exiting task is
// waited for (bounded); a live task makes restore fail at once.
func waitPidFree(pid int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		st, err := proc.ReadStat(pid, pid)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
				return nil
			}
			// Gone between the open and the read: free too.
			if _, serr := os.Stat(fmt.Sprintf("/proc/%d", pid)); serr != nil {
				return nil
			}
			return fmt.Errorf("PID %d: %w", pid, err)
		}
		if st.State != 'Z' && st.State != 'X' {
			return fmt.Errorf("PID %d is in use by %q (state %c): %w", pid, st.Comm, st.State, ErrPidBusy)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("PID %d is still held by an unreaped zombie %q after %v (its parent %d does not reap it): %w", pid, st.Comm, limit, st.PPid, ErrPidBusy)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// restoringTask is one process being turned into its checkpointed self.
type restoringTask struct {
	// fsCalls adds the calls restoreFS prepared to the batch of
	// restoreTaskState that follows it; nil once added.
	fsCalls func(b *batch, what map[int]string) error
	pid     int // host id: what ctcr's /proc, ptrace and kill use
	vpid    int // id in the image (the tree's PID namespace)
	img     *restoredTaskImages
	cp      *checkpoint
	tree    *restoreTree
	opts    *RestoreOptions
	ctl     *taskCtl // remote calls in the main thread
	ctlAddr uint64
	sock    *os.File // ctcr's end of the fd transport
	tfd     int      // the task's end
	killed  bool
	filled  map[uint64]bool // VMA starts that have pages in the image
	vdsoAt  uint64          // where this kernel's vDSO went, if behind a proxy
	traps   []pendingTrap   // SIGTRAPs to queue last (finish)

	// The tree being built (tree.go).
	parent   *restoringTask   // the task that creates this one
	children []*restoringTask // tasks this one creates
	helper   bool             // stands in for a dead session or group leader
	// filesOwner is the task whose fd table this one shares (CLONE_FILES)
	// or nil; sharers counts the tasks still to restore that share this
	// task's table, which keeps the fd transport open for them.
	filesOwner *restoringTask
	sharers    int
	shareFS    bool // shares its creator's cwd, root and umask (CLONE_FS)
	// shareVM: shares its creator's memory (CLONE_VM), restored by the
	// creator; shareSighand: its signal handlers too (CLONE_SIGHAND).
	shareVM, shareSighand bool
	// memFrom is the restored task whose memory this one got by fork:
	// its private mappings are kept and their pages shared copy-on-write
	// where the image says they were the parent's. Nil for the root.
	memFrom  *restoringTask
	kept     map[uint64]bool // starts of the mappings kept from memFrom
	birthSid int             // the session this task must be created in
	// seccompShared is how many seccomp filters, oldest first, every
	// thread got from the main thread at clone (installSharedSeccomp).
	seccompShared int
	threads       []*restoringThread
}

// restoringThread is a thread other than the main one.
type restoringThread struct {
	tid  int // host id
	vtid int // id in the image
	core *criucore.CoreEntry
	ctl  *taskCtl
}

// attach sets up remote syscalls in the freshly cloned task, which
// inherited the puppet's control area.
//
// Preconditions: runs on the tracer thread.
func (t *restoringTask) attach() error {
	regs, err := ptrace.GetRegs(t.pid)
	if err != nil {
		return err
	}
	mem, err := ptrace.OpenMem(t.pid)
	if err != nil {
		return fmt.Errorf("task %d: %w", t.pid, err)
	}
	t.ctl = &taskCtl{tid: t.pid, mem: mem, r: &ptrace.Remote{Tid: t.pid, IP: t.ctlAddr, Base: regs},
		scratch: t.ctlAddr + pageSize, size: ctlSize - pageSize, runner: t.ctlAddr + runnerOffset}
	// Nothing the task would do on its own may interrupt the work:
	// block every signal until the final mask is set.
	return ptrace.SetSigmask(t.pid, ^uint64(0))
}

// kill ends a task that could not be restored.
//
// Preconditions: runs on the tracer thread.
func (t *restoringTask) kill() {
	if t.killed {
		return
	}
	t.killed = true
	unix.Kill(t.pid, unix.SIGKILL)
	// Threads first: the kernel reports a traced leader's death only
	// once its other threads are reaped, and they are reaped here.
	for _, id := range append(t.threadIDs(), t.pid) {
		for {
			st, err := ptrace.Wait(id)
			if err != nil || st.Exited() {
				break
			}
		}
	}
	if t.ctl != nil {
		t.ctl.mem.Close()
	}
}

// installTransport moves the task's end of the fd socket above every fd
// number of the image and closes the puppet's stdio.
func (t *restoringTask) installTransport(sock *os.File) error {
	t.sock = sock
	if o := t.filesOwner; o != nil {
		// The owner set up the shared table and left the transport in it.
		t.tfd = o.tfd
		return nil
	}
	if m := t.memFrom; m != nil {
		// Forked from a task that set up its fds already: only the
		// transport is there, at the same number.
		t.tfd = m.tfd
		return nil
	}
	high := 64
	for _, fd := range t.img.fds {
		high = max(high, int(fd.GetFd())+1)
	}
	// Close everything else the puppet had, in the same batch: its
	// stdio and whatever fds without O_CLOEXEC ctcr itself inherited and
	// passed through exec.
	fds, err := proc.Fds(t.pid)
	if err != nil {
		return fmt.Errorf("task %d: %w", t.pid, err)
	}
	b := t.ctl.newBatch()
	b.add(unix.SYS_FCNTL, puppetTransportFd, unix.F_DUPFD_CLOEXEC, uint64(high))
	for _, fd := range fds {
		b.add(unix.SYS_CLOSE, uint64(fd))
	}
	res, err := b.run()
	if err != nil {
		return fmt.Errorf("task %d: move the fd transport, close the puppet's fds: %w", t.pid, err)
	}
	t.tfd = int(res[0])
	return nil
}

// sendFd passes f to the task and returns the fd number it got there.
func (t *restoringTask) sendFd(f *os.File) (int, error) {
	fds, err := t.sendFds([]*os.File{f})
	if err != nil {
		return -1, err
	}
	return fds[0], nil
}

// scmMaxFd is how many fds one SCM_RIGHTS message may carry (SCM_MAX_FD).
const scmMaxFd = 253

// sendFds passes files to the task over the fd socket, as many as one
// message carries at a time, each message received with one remote
// recvmsg; it returns the fd numbers the task got, in order.
func (t *restoringTask) sendFds(files []*os.File) ([]int, error) {
	var out []int
	for len(files) > 0 {
		n := min(len(files), scmMaxFd)
		got, err := t.sendFdChunk(files[:n])
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
		files = files[n:]
	}
	return out, nil
}

func (t *restoringTask) sendFdChunk(files []*os.File) ([]int, error) {
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	rights := unix.UnixRights(fds...)
	if err := unix.Sendmsg(int(t.sock.Fd()), []byte{0}, rights, nil, 0); err != nil {
		return nil, fmt.Errorf("send %d files (%s...) to task %d: %w", len(files), files[0].Name(), t.pid, err)
	}
	// struct msghdr + iovec + control buffer in the scratch area.
	const (
		offMsg  = 0
		offIov  = 64
		offData = 96
		offCtl  = 128
	)
	s := t.ctl.scratch
	ctlLen := uint64(unix.CmsgSpace(4 * len(files)))
	iov := struct{ Base, Len uint64 }{s + offData, 1}
	if _, err := t.ctl.put(offIov, &iov); err != nil {
		return nil, err
	}
	msg := struct {
		Name       uint64
		Namelen    uint32
		_          uint32
		Iov        uint64
		Iovlen     uint64
		Control    uint64
		Controllen uint64
		Flags      int32
		_          int32
	}{Iov: s + offIov, Iovlen: 1, Control: s + offCtl, Controllen: ctlLen}
	if _, err := t.ctl.put(offMsg, &msg); err != nil {
		return nil, err
	}
	if _, err := t.ctl.call(unix.SYS_RECVMSG, uint64(t.tfd), s+offMsg, unix.MSG_CMSG_CLOEXEC); err != nil {
		return nil, fmt.Errorf("task %d: receive %s: %w", t.pid, files[0].Name(), err)
	}
	buf := make([]byte, ctlLen)
	if err := t.ctl.mem.ReadAt(buf, s+offCtl); err != nil {
		return nil, err
	}
	cmsgs, err := unix.ParseSocketControlMessage(buf)
	if err != nil || len(cmsgs) != 1 {
		return nil, fmt.Errorf("task %d: no fd arrived for %s", t.pid, files[0].Name())
	}
	got, err := unix.ParseUnixRights(&cmsgs[0])
	if err != nil || len(got) != len(files) {
		return nil, fmt.Errorf("task %d: %d of %d fds arrived", t.pid, len(got), len(files))
	}
	return got, nil
}

// closeRemote closes fd in the task.
func (t *restoringTask) closeRemote(fd int) error {
	if _, err := t.ctl.call(unix.SYS_CLOSE, uint64(fd)); err != nil {
		return fmt.Errorf("task %d: close fd %d: %w", t.pid, fd, err)
	}
	return nil
}

func (t *restoringTask) where() string { return fmt.Sprintf("task %d", t.vpid) }
