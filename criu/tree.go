package criu

import (
	"errors"
	"fmt"
	criucore "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	seccompimg "github.com/checkpoint-restore/go-criu/v7/crit/images/seccomp"
	"os"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/kernel"
	"github.com/ctcr/ctcr/criu/ptrace"
	"github.com/ctcr/ctcr/internal/atomicfile"
)

// restoreTree is the plan and the state of building a process tree.
//
// Each task is created by its parent (an orphan, whose parent was outside
// the tree, by the root with CLONE_PARENT, so it ends up beside the root
// as it did). A session is inherited at fork, so each task must be
// created while its creator is in the session the task needs: a session
// leader creates the children that keep its old session before it calls
// setsid, the others after. A session or process group whose leader is
// gone is recreated by a helper task with the leader's id, which leaves
// once everything that needs it exists (CRIU does the same).
type restoreTree struct {
	cp       *checkpoint
	opts     *RestoreOptions
	procs    []*restoringTask // pstree order, then helpers
	byPid    map[int]*restoringTask
	root     *restoringTask
	sock     *os.File
	ctlAddr  uint64
	nsFlags  uint64    // CLONE_NEW* for the root
	progress *progress // memory restored, for RestoreOptions.Progress
	// seccomp is seccomp.img's filters once read (seccompRead).
	seccomp     []*seccompimg.SeccompFilter
	seccompRead bool
	cgroups     *cgroupPlan           // where tasks go (nil: where they are made)
	sched       *schedImage           // sched.json, once read
	ambient     map[int]uint64        // caps.json, once read
	files       *fileRestore          // open file descriptions, opened once each
	shmem       map[uint64]shmemPiece // shared anonymous objects mapped so far
	memTime     time.Duration         // spent restoring memory
	vdsoProxy   *vdsoProxy            // if the checkpoint's vDSO differs from this kernel's
	// extents is how far into each shared anonymous object (by id) any
	// mapping of the image reaches; see shmemExtent.
	extents map[uint64]uint64
	// outerSid and outerPgid are the root's session and group when they
	// are outside the tree: the restored tree joins ctcr's instead.
	outerSid, outerPgid int
}

func (t *restoringTask) sid() int  { return int(t.img.pstree.GetSid()) }
func (t *restoringTask) pgid() int { return int(t.img.pstree.GetPgid()) }

// threadIDs lists the task's threads other than the main one.
func (t *restoringTask) threadIDs() []int {
	var out []int
	for _, th := range t.threads {
		out = append(out, th.tid)
	}
	return out
}

// planTree decides who creates whom, and in which session.
func planTree(cp *checkpoint, opts *RestoreOptions) (*restoreTree, error) {
	rt := &restoreTree{cp: cp, opts: opts, byPid: map[int]*restoringTask{}, files: newFileRestore(cp, opts), shmem: map[uint64]shmemPiece{}}
	rt.files.hostPid = func(vpid int) (int, bool) {
		t := rt.byPid[vpid]
		if t == nil || t.pid == 0 {
			return 0, false
		}
		return t.pid, true
	}
	rt.files.hostTid = func(vtid int) (int, bool) {
		if t := rt.byPid[vtid]; t != nil && t.pid != 0 {
			return t.pid, true
		}
		for _, t := range rt.procs {
			for _, th := range t.threads {
				if th.vtid == vtid && th.tid != 0 {
					return th.tid, true
				}
			}
		}
		return 0, false
	}
	for _, img := range cp.tasks {
		t := &restoringTask{vpid: int(img.pstree.GetPid()), img: img, cp: cp, tree: rt, opts: opts}
		rt.procs = append(rt.procs, t)
		rt.byPid[t.vpid] = t
	}
	rt.root = rt.procs[0]
	root := rt.root
	rt.nsFlags = opts.Namespaces
	rt.progress = newProgress(opts.Progress)
	if root.img.core != nil {
		rt.nsFlags |= ownNamespaces(root.img.core.GetIds())
	}
	if root.img.zombie {
		return nil, fmt.Errorf("the root task %d is a zombie: %w", root.vpid, ErrUnsupported)
	}
	if root.sid() != root.vpid {
		rt.outerSid = root.sid()
	}
	if root.pgid() != root.vpid {
		rt.outerPgid = root.pgid()
	}
	for _, t := range rt.procs[1:] {
		parent, ok := rt.byPid[int(t.img.pstree.GetPpid())]
		orphan := !ok || parent.img.zombie || parent == t
		if orphan {
			parent = root // an orphan: created beside the root
		}
		t.parent = parent
		parent.children = append(parent.children, t)
		if t.img.zombie {
			continue
		}
		ids, pids := t.img.core.GetIds(), parent.img.core.GetIds()
		if ids.GetFilesId() == pids.GetFilesId() || ids.GetFsId() == pids.GetFsId() {
			if orphan {
				return nil, fmt.Errorf("task %d shares its fd table or fs with a task that is not its parent: %w", t.vpid, ErrUnsupported)
			}
		}
		if ids.GetFilesId() == pids.GetFilesId() {
			owner := parent
			if parent.filesOwner != nil {
				owner = parent.filesOwner
			}
			t.filesOwner = owner
			owner.sharers++
		}
		t.shareFS = ids.GetFsId() == pids.GetFsId()
		if o := t.img.vmOwner; o != nil {
			if o != parent.img && o != parent.img.vmOwner {
				return nil, fmt.Errorf("task %d shares its memory with a task that is not its parent: %w", t.vpid, ErrUnsupported)
			}
			t.shareVM = true
			t.shareSighand = ids.GetSighandId() == pids.GetSighandId()
		} else if ids.GetSighandId() == pids.GetSighandId() {
			return nil, fmt.Errorf("task %d shares its signal handlers but not its memory: %w", t.vpid, ErrUnsupported)
		}
	}
	// The session each task must be born in: its own unless it leads
	// one; a leader must be born in the session its non-leader children
	// keep (they were forked before it called setsid).
	var need func(t *restoringTask) (int, error)
	need = func(t *restoringTask) (int, error) {
		if t.sid() != t.vpid {
			return t.sid(), nil
		}
		want := 0
		for _, c := range t.children {
			n, err := need(c)
			if err != nil {
				return 0, err
			}
			if n == t.vpid || n == 0 {
				continue
			}
			if l, ok := rt.byPid[n]; !ok || l.img.zombie {
				// A session whose leader is gone: a helper recreates it,
				// whatever session t is born in.
				continue
			}
			if want != 0 && want != n {
				return 0, fmt.Errorf("task %d has children in sessions %d and %d besides its own: %w", t.vpid, want, n, ErrUnsupported)
			}
			want = n
		}
		return want, nil
	}
	for _, t := range rt.procs {
		n, err := need(t)
		if err != nil {
			return nil, err
		}
		t.birthSid = n
	}
	return rt, nil
}

// ids lists every PID and TID the tree needs.
func (rt *restoreTree) ids() []int {
	var out []int
	for _, t := range rt.procs {
		for _, id := range t.img.pstree.Threads {
			out = append(out, int(id))
		}
	}
	return out
}

// imageSpans lists the mappings of every process, which the control area
// must avoid.
func (rt *restoreTree) imageSpans() []span {
	var out []span
	for _, t := range rt.procs {
		if t.img.zombie {
			continue
		}
		for _, v := range t.img.mm.Vmas {
			out = append(out, span{v.GetStart(), v.GetEnd()})
		}
	}
	return out
}

// realSid maps a session id of the image to the one the restored task
// really gets: the root's outer session is ctcr's.
func (rt *restoreTree) realSid(sid int) int {
	if sid == rt.outerSid {
		return -1
	}
	return sid
}

// build creates every task of the tree, stopped, with its PID, session
// and group.
//
// Preconditions: runs on the tracer thread.
func (rt *restoreTree) build(pp *puppet) error {
	root := rt.root
	// A cgroup namespace is rooted where its creator stands: the root
	// makes it once PrepareRoot has put it in the tree's cgroups.
	flags := rt.nsFlags &^ (unix.CLONE_NEWCGROUP | unix.CLONE_NEWTIME)
	if rt.opts.JoinNet != "" {
		flags &^= unix.CLONE_NEWNET
	}
	if rt.nsFlags&unix.CLONE_NEWTIME != 0 {
		// The root enters the puppet's namespace for children.
		if err := prepareTimens(pp, rt.opts.Dir); err != nil {
			return err
		}
	}
	host, err := cloneFrom(pp.ctl, root.vpid, unix.CLONE_PARENT|flags, 0)
	if err != nil {
		return err
	}
	root.pid = host
	rt.files.rootPid = host
	root.ctlAddr = rt.ctlAddr
	if err := root.attach(); err != nil {
		return err
	}
	if rt.nsFlags&unix.CLONE_NEWUSER != 0 {
		// Before the root does anything: it has no ids until then.
		if err := writeIDMaps(host, rt.opts.Dir); err != nil {
			return err
		}
	}
	if rt.opts.JoinNet != "" {
		if err := (&RootTask{Pid: host, t: root}).joinNamespace(rt.opts.JoinNet, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("join the network namespace %s: %w", rt.opts.JoinNet, err)
		}
	}
	if rt.nsFlags&unix.CLONE_NEWPID != 0 {
		// Now, while the root still sees ctcr's /proc (a container's
		// /proc/sys is read-only); set_tid does not move the counter.
		if err := rt.setLastPid(); err != nil {
			rt.opts.logf("%v: new processes may get low ids", err)
		}
	}
	if rt.opts.PrepareRoot != nil {
		if err := rt.opts.PrepareRoot(&RootTask{Pid: host, t: root}); err != nil {
			return fmt.Errorf("prepare the root task's namespaces: %w", err)
		}
	}
	if err := rt.cgroups.placeProcess(root); err != nil {
		return err
	}
	if rt.nsFlags&unix.CLONE_NEWCGROUP != 0 {
		if _, err := (&RootTask{Pid: host, t: root}).Call(unix.SYS_UNSHARE, unix.CLONE_NEWCGROUP); err != nil {
			return fmt.Errorf("the root task's cgroup namespace: %w", err)
		}
	}
	if err := rt.restoreMemoryOf(root); err != nil {
		return err
	}
	if err := rt.grow(root); err != nil {
		return err
	}
	if err := rt.formGroups(); err != nil {
		return err
	}
	// Helpers leave before zombies die: a helper is reaped by the task
	// that created it, which may be one of the zombies-to-be (a zombie
	// in a group whose leader is gone made the helper that leads it).
	// The groups and sessions the helpers made live on in their members.
	for _, t := range rt.procs {
		if t.helper {
			if err := t.leave(); err != nil {
				return err
			}
		}
	}
	for _, t := range rt.procs {
		if !t.helper && t.img.zombie {
			if err := t.becomeZombie(); err != nil {
				return err
			}
		}
	}
	return nil
}

// setLastPid makes the new PID namespace hand out ids after the highest
// one of the image, as the old one would have (roughly: the dumped
// namespace's own counter is not visible from outside). Otherwise the
// first process forked after restore could get an id the old namespace
// had long passed.
func (rt *restoreTree) setLastPid() error {
	last := 0
	for _, id := range rt.ids() {
		last = max(last, id)
	}
	c := rt.root.ctl
	path, err := c.put(0, "/proc/sys/kernel/ns_last_pid")
	if err != nil {
		return err
	}
	atFdcwd := int64(unix.AT_FDCWD)
	fd, err := c.call(unix.SYS_OPENAT, uint64(atFdcwd), path, unix.O_WRONLY|unix.O_CLOEXEC)
	if err != nil {
		return fmt.Errorf("%s: open ns_last_pid: %w", rt.root.where(), err)
	}
	val, err := c.put(256, []byte(fmt.Sprint(last)))
	if err != nil {
		return err
	}
	_, werr := c.call(unix.SYS_WRITE, fd, val, uint64(len(fmt.Sprint(last))))
	if _, err := c.call(unix.SYS_CLOSE, fd); err != nil {
		return err
	}
	if werr != nil {
		return fmt.Errorf("%s: set ns_last_pid to %d: %w", rt.root.where(), last, werr)
	}
	return nil
}

// grow makes t create its children, then recursively theirs.
func (rt *restoreTree) grow(t *restoringTask) error {
	leads := t.sid() == t.vpid
	var before, after []*restoringTask
	helpers := map[int][]*restoringTask{}
	for _, c := range t.children {
		switch n := c.birthSid; {
		case n == 0 || (leads && n == t.vpid) || (!leads && rt.realSid(n) == rt.realSid(t.sid())):
			after = append(after, c)
		case leads && n == t.birthSid:
			before = append(before, c)
		case n == rt.outerSid:
			return fmt.Errorf("task %d must be in the session %d outside the dumped tree, but its parent %d is not: %w", c.vpid, n, t.vpid, ErrUnsupported)
		default:
			if l, ok := rt.byPid[n]; ok && !l.helper {
				return fmt.Errorf("task %d must be created in session %d, led by task %d, but its parent %d is in another one: %w", c.vpid, n, l.vpid, t.vpid, ErrUnsupported)
			}
			helpers[n] = append(helpers[n], c)
		}
	}
	for _, c := range before {
		if err := rt.spawn(t, c, 0); err != nil {
			return err
		}
	}
	if leads {
		if _, err := t.ctl.call(unix.SYS_SETSID); err != nil {
			return fmt.Errorf("%s: %w", t.where(), err)
		}
	}
	for _, c := range after {
		if err := rt.spawn(t, c, 0); err != nil {
			return err
		}
	}
	sids := make([]int, 0, len(helpers))
	for sid := range helpers {
		sids = append(sids, sid)
	}
	sort.Ints(sids)
	for _, sid := range sids {
		// A dead session leader: a helper with its id leads the session
		// again and creates the children in it, as the parent's children
		// (CLONE_PARENT).
		h, err := rt.newHelper(t, sid)
		if err != nil {
			return err
		}
		if _, err := h.ctl.call(unix.SYS_SETSID); err != nil {
			return fmt.Errorf("helper %d: %w", sid, err)
		}
		for _, c := range helpers[sid] {
			if err := rt.spawn(h, c, unix.CLONE_PARENT); err != nil {
				return err
			}
		}
	}
	for _, c := range t.children {
		if c.img.zombie {
			continue
		}
		if err := rt.grow(c); err != nil {
			return err
		}
	}
	return nil
}

// spawn makes creator clone c with c's PID.
func (rt *restoreTree) spawn(creator, c *restoringTask, flags uint64) error {
	exitSignal := uint64(unix.SIGCHLD)
	if flags&unix.CLONE_PARENT != 0 {
		exitSignal = 0 // the kernel takes the creator's
	} else {
		if c.filesOwner != nil {
			flags |= unix.CLONE_FILES
		}
		if c.shareFS {
			flags |= unix.CLONE_FS
		}
		if c.shareVM {
			flags |= unix.CLONE_VM
			if c.shareSighand {
				flags |= unix.CLONE_SIGHAND
			}
		}
	}
	host, err := cloneFrom(creator.ctl, c.vpid, flags, exitSignal)
	if err != nil {
		return err
	}
	c.pid = host
	c.ctlAddr = rt.ctlAddr
	if err := c.attach(); err != nil {
		return err
	}
	if c.img.zombie {
		// It got its creator's fd table, transport included (the
		// nearest ancestor that installed one).
		for a := creator; a != nil; a = a.parent {
			if a.sock != nil {
				c.sock, c.tfd = a.sock, a.tfd
				break
			}
		}
		return nil
	}
	if err := rt.cgroups.placeProcess(c); err != nil {
		return err
	}
	// c has its creator's memory (a helper's is its own creator's):
	// restore its own now, before it forks, so its children share pages
	// with it copy-on-write as they did.
	c.memFrom = creator
	if creator.helper {
		c.memFrom = creator.parent
	}
	return rt.restoreMemoryOf(c)
}

// restoreMemoryOf gives t its address space.
func (rt *restoreTree) restoreMemoryOf(t *restoringTask) error {
	if err := t.installTransport(rt.sock); err != nil {
		return err
	}
	if err := rt.enterNamespaces(t); err != nil {
		return err
	}
	if t.shareVM {
		return nil // the creator's memory is its own
	}
	start := time.Now()
	err := t.restoreMemory()
	rt.memTime += time.Since(start)
	return err
}

// newHelper creates a helper task with id under creator; it is a clone
// child (no exit signal), so it leaves without signalling anyone.
func (rt *restoreTree) newHelper(creator *restoringTask, id int) (*restoringTask, error) {
	host, err := cloneFrom(creator.ctl, id, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("helper for the dead leader %d: %w", id, err)
	}
	h := &restoringTask{pid: host, vpid: id, cp: rt.cp, tree: rt, opts: rt.opts, helper: true, parent: creator, ctlAddr: rt.ctlAddr}
	if err := h.attach(); err != nil {
		return nil, err
	}
	rt.procs = append(rt.procs, h)
	rt.byPid[id] = h
	return h, nil
}

// formGroups puts every task in its process group: leaders first, then
// members; a group whose leader is gone gets a helper leader.
func (rt *restoreTree) formGroups() error {
	var tasks []*restoringTask
	for _, t := range rt.procs {
		if !t.helper {
			tasks = append(tasks, t)
		}
	}
	for _, t := range tasks {
		if t.pgid() == t.vpid && t.sid() != t.vpid {
			if _, err := t.ctl.call(unix.SYS_SETPGID, 0, 0); err != nil {
				return fmt.Errorf("%s: lead process group: %w", t.where(), err)
			}
		}
	}
	for _, t := range tasks {
		g := t.pgid()
		if g == t.vpid || g == 0 || (rt.outerPgid != 0 && g == rt.outerPgid) {
			continue
		}
		if _, ok := rt.byPid[g]; !ok {
			// The group's leader is gone: a helper child of t leads it.
			h, err := rt.newHelper(t, g)
			if err != nil {
				return err
			}
			if _, err := h.ctl.call(unix.SYS_SETPGID, 0, 0); err != nil {
				return fmt.Errorf("helper %d: lead process group: %w", g, err)
			}
		}
		if _, err := t.ctl.call(unix.SYS_SETPGID, 0, uint64(g)); err != nil {
			return fmt.Errorf("%s: join process group %d: %w", t.where(), g, err)
		}
	}
	return nil
}

// becomeZombie ends a task that was a zombie with its exit status; its
// parent finds it as it was.
func (t *restoringTask) becomeZombie() error {
	ws := unix.WaitStatus(t.img.core.Tc.GetExitCode())
	if comm := t.img.core.Tc.GetComm(); comm != "" {
		if len(comm) > 15 {
			comm = comm[:15]
		}
		p, err := t.ctl.put(0, comm)
		if err != nil {
			return err
		}
		if _, err := t.ctl.call(unix.SYS_PRCTL, unix.PR_SET_NAME, p); err != nil {
			return fmt.Errorf("zombie %d: set name: %w", t.pid, err)
		}
	}
	switch {
	case ws.Signaled():
		sig := ws.Signal()
		// Die by the signal, without a core file, unless the status
		// says one was written: then write one where nobody sees it.
		coreDir := ""
		if ws.CoreDump() {
			var err error
			if coreDir, err = t.coreDumpAside(); err != nil {
				t.opts.logf("zombie %d: restored without its core-dump flag: %v", t.vpid, err)
			}
			if coreDir != "" {
				defer os.RemoveAll(coreDir)
			}
		}
		if coreDir == "" {
			if err := unix.Prlimit(t.pid, unix.RLIMIT_CORE, &unix.Rlimit{}, nil); err != nil {
				return fmt.Errorf("zombie %d: %w", t.pid, err)
			}
		}
		if err := ptrace.SetSigmask(t.pid, 0); err != nil {
			return err
		}
		if err := unix.Tgkill(t.pid, t.pid, sig); err != nil {
			return fmt.Errorf("zombie %d: %w", t.pid, err)
		}
		deliver := unix.Signal(0)
		for {
			// A task SIGKILL woke is already on its way out, no longer
			// in a ptrace stop: CONT answers ESRCH, and only its death
			// is left to collect.
			if err := ptrace.Cont(t.pid, deliver); err != nil && !errors.Is(err, unix.ESRCH) {
				return err
			}
			st, err := ptrace.Wait(t.pid)
			if err != nil {
				return err
			}
			if st.Exited() {
				break
			}
			deliver = 0
			if st.SignalDelivery() && st.Signal() == sig {
				deliver = sig
			}
		}
	default:
		if _, err := t.ctl.call(unix.SYS_EXIT_GROUP, uint64(ws.ExitStatus())); !errors.Is(err, ptrace.ErrExited) {
			return fmt.Errorf("zombie %d: exit: %v", t.pid, err)
		}
	}
	t.killed = true
	t.ctl.mem.Close()
	return nil
}

// coreRunDir holds the directories restored zombies dump core in.
const coreRunDir = "/run/ctcr"

// coreDumpAside prepares a zombie-to-be whose wait status has the
// core-dump flag (WCOREDUMP) to dump core for real, which is what sets
// the flag: its cwd becomes a private directory, which the caller
// removes with the core once it died, and its core size limit is lifted.
// It returns "" (no flag, with a log line) when the machine's
// core_pattern sends cores elsewhere: to a program, whose crash report
// nobody asked for, or to a fixed directory.
func (t *restoringTask) coreDumpAside() (string, error) {
	pattern, err := os.ReadFile("/proc/sys/kernel/core_pattern")
	if err != nil {
		return "", fmt.Errorf("zombie %d: %w", t.pid, err)
	}
	if p := strings.TrimSpace(string(pattern)); p == "" || strings.HasPrefix(p, "|") || strings.Contains(p, "/") {
		t.opts.logf("zombie %d: restored without its core-dump flag: core_pattern %q does not write into the task's directory", t.vpid, p)
		return "", nil
	}
	if err := atomicfile.PrivateDir(coreRunDir); err != nil {
		return "", fmt.Errorf("zombie %d: %s: %w", t.pid, coreRunDir, err)
	}
	dir, err := os.MkdirTemp(coreRunDir, "core-")
	if err != nil {
		return "", fmt.Errorf("zombie %d: %w", t.pid, err)
	}
	fail := func(err error) (string, error) {
		os.RemoveAll(dir)
		return "", fmt.Errorf("zombie %d: core-dump flag: %w", t.pid, err)
	}
	d, err := os.OpenFile(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fail(err)
	}
	if t.sock == nil {
		return fail(errors.New("no fd transport"))
	}
	fd, err := t.sendFd(d)
	d.Close()
	if err != nil {
		return fail(err)
	}
	b := t.ctl.newBatch()
	b.add(unix.SYS_FCHDIR, uint64(fd))
	b.add(unix.SYS_CLOSE, uint64(fd))
	b.add(unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, 1)
	if _, err := b.run(); err != nil {
		return fail(err)
	}
	inf := unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
	if err := unix.Prlimit(t.pid, unix.RLIMIT_CORE, &inf, nil); err != nil {
		return fail(err)
	}
	return dir, nil
}

// leave ends a helper and lets its creator reap it.
func (t *restoringTask) leave() error {
	if _, err := t.ctl.call(unix.SYS_EXIT_GROUP, 0); !errors.Is(err, ptrace.ErrExited) {
		return fmt.Errorf("helper %d: exit: %v", t.pid, err)
	}
	t.killed = true
	t.ctl.mem.Close()
	if _, err := t.parent.ctl.call(unix.SYS_WAIT4, uint64(t.vpid), 0, unix.WALL, 0); err != nil {
		return fmt.Errorf("%s: reap helper %d: %w", t.parent.where(), t.vpid, err)
	}
	return nil
}

// cloneFrom makes the task behind c clone3 a child with id (as the
// creator's PID namespace, or the new one with CLONE_NEWPID, sees it).
// The child is traced from birth (the PTRACE_O_TRACE* options are
// inherited); this returns its host id once it sits in its first stop.
//
// Preconditions: runs on the tracer thread.
func cloneFrom(c *taskCtl, id int, flags, exitSignal uint64) (int, error) {
	tidAddr, err := c.put(0, int32(id))
	if err != nil {
		return 0, err
	}
	args := kernel.CloneArgs{Flags: flags, ExitSignal: exitSignal, SetTid: tidAddr, SetTidSize: 1}
	argsAddr, err := c.put(64, &args)
	if err != nil {
		return 0, err
	}
	ret, err := c.call(unix.SYS_CLONE3, argsAddr, kernel.CloneArgsSize)
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			return 0, fmt.Errorf("PID %d: %w", id, ErrPidBusy)
		}
		return 0, fmt.Errorf("task %d: clone %d: %w", c.tid, id, err)
	}
	if len(c.r.Events) == 0 {
		return 0, fmt.Errorf("task %d: clone of %d reported no new task", c.tid, id)
	}
	child := int(c.r.Events[len(c.r.Events)-1])
	if int(ret) != id && !(flags&unix.CLONE_NEWPID != 0 && int(ret) == child) {
		unix.Kill(child, unix.SIGKILL)
		return 0, fmt.Errorf("clone3 gave id %d, asked for %d", ret, id)
	}
	for {
		st, err := ptrace.Wait(child)
		if err != nil {
			return 0, err
		}
		if st.Exited() {
			return 0, fmt.Errorf("new task %d %v: %w", child, st, ptrace.ErrExited)
		}
		if st.Status.Stopped() {
			return child, nil
		}
	}
}

// killAll kills every task created so far.
//
// Preconditions: runs on the tracer thread.
func (rt *restoreTree) killAll() {
	for i := len(rt.procs) - 1; i >= 0; i-- {
		t := rt.procs[i]
		if t.ctl != nil {
			t.kill()
		}
	}
}

// closeFiles closes ctcr's copies of the restored files.
func (rt *restoreTree) closeFiles() { rt.files.close() }

// createThreads clones every thread of t with its TID, sharing
// everything a thread shares.
//
// Preconditions: runs on the tracer thread; t's memory is restored.
func (t *restoringTask) createThreads() error {
	if err := t.installSharedSeccomp(); err != nil {
		return err
	}
	vtids := make([]int, len(t.img.threads)-1)
	for i := range vtids {
		vtids[i] = int(t.img.pstree.Threads[i+1])
	}
	if t.ctl.runner == 0 {
		for i, vtid := range vtids {
			tid, err := cloneFrom(t.ctl, vtid, threadFlags, 0)
			if err != nil {
				return fmt.Errorf("%s: thread %d: %w", t.where(), vtid, err)
			}
			if err := t.addThread(tid, vtid, t.img.threads[i+1]); err != nil {
				return err
			}
		}
		return nil
	}
	// With the syscall runner, one batch clones many threads: the
	// clone3 calls run one after the other in the main thread, which
	// stops only at each clone event, instead of a remote call of its
	// own (three or four ptrace stops) per thread. Each new thread
	// starts traced and stopped (PTRACE_O_TRACECLONE) at the
	// instruction after the runner's syscall, which it never runs:
	// finish gives it its own registers.
	per := max(1, int(t.ctl.size/2)/max(threadCloneData, batchEntrySize))
	for from := 0; from < len(vtids); from += per {
		chunk := vtids[from:min(from+per, len(vtids))]
		b := t.ctl.newBatch()
		for _, vtid := range chunk {
			tidAddr, err := b.put(int32(vtid))
			if err != nil {
				return err
			}
			argsAddr, err := b.put(&kernel.CloneArgs{Flags: threadFlags, SetTid: tidAddr, SetTidSize: 1})
			if err != nil {
				return err
			}
			b.add(unix.SYS_CLONE3, argsAddr, kernel.CloneArgsSize)
		}
		seen := len(t.ctl.r.Events)
		res, err := b.run()
		news := t.ctl.r.Events[seen:]
		if len(news) > len(chunk) {
			return fmt.Errorf("%s: %d clones made %d tasks", t.where(), len(chunk), len(news))
		}
		// Every thread made is recorded first, whatever the batch
		// answered: a failed restore kills it with the others and reaps
		// it (the kernel reports a traced leader's death only once its
		// threads are reaped).
		for i, ev := range news {
			tid, vtid := int(ev), chunk[i]
			if werr := waitCloned(tid); werr != nil {
				return fmt.Errorf("%s: thread %d: %w", t.where(), vtid, werr)
			}
			if aerr := t.addThread(tid, vtid, t.img.threads[from+i+1]); aerr != nil {
				return aerr
			}
		}
		if err != nil {
			vtid := chunk[min(len(res), len(chunk)-1)]
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("%s: thread %d: PID %d: %w", t.where(), vtid, vtid, ErrPidBusy)
			}
			return fmt.Errorf("%s: thread %d: %w", t.where(), vtid, err)
		}
		if len(news) != len(chunk) {
			return fmt.Errorf("%s: %d clones reported %d new tasks", t.where(), len(chunk), len(news))
		}
		for i, ret := range res {
			if int(ret) != chunk[i] {
				return fmt.Errorf("%s: clone3 gave thread id %d, asked for %d", t.where(), ret, chunk[i])
			}
		}
	}
	return nil
}

// threadFlags are the clone flags of a restored thread.
const threadFlags = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
	unix.CLONE_THREAD | unix.CLONE_SYSVSEM

// threadCloneData is the batch data of one thread's clone3: its id
// (padded to 8 bytes) and its clone_args.
const threadCloneData = 8 + kernel.CloneArgsSize

// waitCloned waits for the initial stop of a task a remote clone made.
//
// Preconditions: runs on the tracer thread.
func waitCloned(tid int) error {
	for {
		st, err := ptrace.Wait(tid)
		if err != nil {
			return err
		}
		if st.Exited() {
			return fmt.Errorf("new task %d %v: %w", tid, st, ptrace.ErrExited)
		}
		if st.Status.Stopped() {
			return nil
		}
	}
}

// addThread records thread tid (vtid in the images), stopped after its
// clone, with every signal blocked until finish gives it its own mask.
//
// Preconditions: runs on the tracer thread.
func (t *restoringTask) addThread(tid, vtid int, core *criucore.CoreEntry) error {
	regs, err := ptrace.GetRegs(tid)
	if err != nil {
		return err
	}
	c := *t.ctl
	c.tid = tid
	c.r = &ptrace.Remote{Tid: tid, IP: t.ctl.r.IP, Base: regs}
	t.threads = append(t.threads, &restoringThread{tid: tid, vtid: vtid, core: core, ctl: &c})
	return ptrace.SetSigmask(tid, ^uint64(0))
}

// seccompFilters returns seccomp.img's filters, read once.
func (rt *restoreTree) seccompFilters() ([]*seccompimg.SeccompFilter, error) {
	if !rt.seccompRead {
		f, err := seccompFilters(rt.opts.Dir)
		if err != nil {
			return nil, err
		}
		rt.seccomp, rt.seccompRead = f, true
	}
	return rt.seccomp, nil
}

// schedImage returns sched.json's scheduling state, read once.
// ambientCaps returns the ambient capabilities of the checkpoint's
// threads by their ids in the images (caps.json), read once.
func (rt *restoreTree) ambientCaps() (map[int]uint64, error) {
	if rt.ambient == nil {
		m, err := readAmbient(rt.opts.Dir)
		if err != nil {
			return nil, err
		}
		if m == nil {
			m = map[int]uint64{}
		}
		rt.ambient = m
	}
	return rt.ambient, nil
}

func (rt *restoreTree) schedImage() (*schedImage, error) {
	if rt.sched == nil {
		img, err := readSched(rt.opts.Dir)
		if err != nil {
			return nil, err
		}
		rt.sched = img
	}
	return rt.sched, nil
}

// shmemExtent returns how far into shared anonymous object id any
// mapping of any task of the image reaches: the size to make it.
func (rt *restoreTree) shmemExtent(id uint64) uint64 {
	if rt.extents == nil {
		rt.extents = map[uint64]uint64{}
		for _, img := range rt.cp.tasks {
			for _, v := range img.mm.Vmas {
				if v.GetStatus()&vmaAnonShared != 0 {
					e := v.GetPgoff() + v.GetEnd() - v.GetStart()
					rt.extents[v.GetShmid()] = max(rt.extents[v.GetShmid()], e)
				}
			}
		}
	}
	return rt.extents[id]
}
