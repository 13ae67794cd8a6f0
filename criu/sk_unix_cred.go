package criu

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	skunix "github.com/checkpoint-restore/go-criu/v7/crit/images/sk-unix"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/userns"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/nsthread"
	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/internal/inroot"
)

// Peer credentials of unix sockets (SO_PEERCRED, SO_PEERPIDFD).
//
// The kernel records a task's tgid and credentials with a unix socket
// at three calls (net/unix/af_unix.c): listen(2) gives the listener the
// caller's (init_peercred), which a client that connects later copies
// (copy_peercred); a stream or seqpacket connect(2) gives the socket
// the listener makes for the connection the caller's; socketpair(2)
// gives both ends the caller's. A datagram connect records nothing: an
// unpaired datagram socket reports pid 0, uid and gid -1, as it did at
// the dump. SO_PEERCRED shows the pid in the reader's PID namespace and
// the euid and egid in its user namespace.
//
// CRIU's unix_sk_entry has no field for them; the dump keeps them
// beside the images, by socket inode, as ctcr's SO_PEERCRED on its
// pidfd_getfd copy shows them: the pid turned into the tree's (0 and
// host_pid when no process of the tree has it: an external or exited
// one), uid and gid as the host sees them, like every other owner ctcr
// keeps (the tree's user namespace maps them at restore):
//
//	unix-creds.json: {"INO": {"peer": {"pid": P, "uid": U, "gid": G},
//	    "connector": {...}}}
//
// connector is derived, not read: a connection still waiting in a
// listener's backlog has, on the listener's side, a socket no fd
// reaches until accept(2), whose credentials are those of the task that
// called connect. The dump takes the task that holds the client socket,
// with its effective uid and gid at the dump.
//
// Restore builds the sockets before any task gets its files, its
// credentials or its seccomp filters, every restored task still a
// puppet with ctcr's credentials, and makes each of those calls in the
// restored process whose pid the record names: the socket, made by
// ctcr as before, is passed to the task over the fd transport, the task
// takes the recorded uid and gid as its effective ids for the moment
// (its real and saved ids stay, so it gets its capabilities back after,
// and its fsuid stays so that paths resolve as for ctcr), makes the
// call, and gets its ids back; a socketpair is made in the task and
// taken back with pidfd_getfd. The calls, in order:
//
//   - a listener: listen again as its recorded creator, then, before
//     each client connects, as whoever that client's copy names (which
//     is the same but for a listener listened on again since);
//   - a connection: connect as the recorded peer of the listener's side
//     (accepted connections) or as the connector (pending ones); a path
//     name is reached from its directory, which ctcr resolves in the
//     tree's root and the task enters for the call (fchdir), so the task's
//     own root and working directory do not matter;
//   - a pair, and a connection whose peer had closed: socketpair as the
//     recorded creator, when the task is in the socket's network
//     namespace.
//
// A record that names a process of no PID of the tree (one that had
// exited, or one outside the tree), in a tree of ctcr's own PID
// namespace, gets a stand-in: a child of the root cloned with that PID
// (clone3 set_tid), which makes the call and leaves, reaped by the
// root, before any task runs; if the PID is taken (a live process
// outside the tree), the clone fails and the call falls back. A record
// that names no live process of the restored tree otherwise (a zombie,
// a dead process of a tree with its own PID namespace, whose number
// there the dump cannot learn), ids the tree's user namespace does not
// map (the restoring tasks are still the host's root), or a task in
// another network namespace than its pair's, leaves that call to ctcr
// as before, with a line in the log; a listener then listens again as
// its first holder (relistenAsOwner), with its pid, though ctcr's ids.
const unixCredsFile = "unix-creds.json"

// unixCred is one set of credentials a unix socket carries.
type unixCred struct {
	// Pid is the process's id in the tree's PID namespace; 0 if no
	// process of the tree had it (HostPid says which, for the log).
	Pid     int    `json:"pid"`
	HostPid int    `json:"host_pid,omitempty"`
	Uid     uint32 `json:"uid"` // effective, as the host sees it
	Gid     uint32 `json:"gid"`
}

func (c *unixCred) String() string {
	if c.Pid == 0 {
		return fmt.Sprintf("process %d (not of the tree) uid %d gid %d", c.HostPid, c.Uid, c.Gid)
	}
	return fmt.Sprintf("process %d uid %d gid %d", c.Pid, c.Uid, c.Gid)
}

func sameCred(a, b *unixCred) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

// unixCredsEntry is what unix-creds.json keeps of one socket.
type unixCredsEntry struct {
	Peer      *unixCred `json:"peer,omitempty"`      // SO_PEERCRED
	Connector *unixCred `json:"connector,omitempty"` // pending connections: who connected
}

// --- dump ---

// recordCreds reads the peer credentials of socket ino through ctcr's
// copy fd, and for a connection pending in a listener's backlog the
// credentials of its holder (the connector).
func (st *unixDumpState) recordCreds(d *fdDump, fd int, ino uint32, pending bool) error {
	uc, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return fmt.Errorf("SO_PEERCRED: %w", err)
	}
	var e unixCredsEntry
	if uc.Pid != 0 || uc.Uid != math.MaxUint32 {
		c := &unixCred{Uid: uc.Uid, Gid: uc.Gid}
		if vpid, ok := d.files.vpidOf[int(uc.Pid)]; ok && uc.Pid > 0 {
			c.Pid = vpid
		} else {
			c.HostPid = int(uc.Pid)
		}
		e.Peer = c
	}
	if pending && d.vpid != 0 {
		s, err := proc.ReadStatus(d.pid, d.pid)
		if err != nil {
			return fmt.Errorf("the credentials of task %d, which connected it: %w", d.pid, err)
		}
		e.Connector = &unixCred{Pid: d.vpid, Uid: s.Uid[1], Gid: s.Gid[1]}
	}
	if e.Peer == nil && e.Connector == nil {
		return nil
	}
	if st.creds == nil {
		st.creds = map[string]*unixCredsEntry{}
	}
	st.creds[strconv.FormatUint(uint64(ino), 10)] = &e
	return nil
}

// writeCreds puts unix-creds.json beside files.img.
func (st *unixDumpState) writeCreds(t *fileTable) error {
	if len(st.creds) == 0 {
		return nil
	}
	b, err := json.Marshal(st.creds)
	if err != nil {
		return err
	}
	t.sidecars = append(t.sidecars, sidecar{name: unixCredsFile, data: b})
	return nil
}

// --- restore ---

// unixTasksKey is where fileRestore.state keeps the restored tasks the
// unix socket build may make calls in (set by buildUnixSockets).
const unixTasksKey = "unix tasks"

// unixTasks gives the unix socket build the restored processes by their
// pid in the image.
type unixTasks struct {
	byPid map[int]*restoringTask
	// rootPid is the host pid of the tree's root: its network namespace
	// is the sockets' unless their entry names another.
	rootPid int
	calls   int // made in a task, for the log
	// helper makes a short-lived child of the root with PID pid, for a
	// call as a process that had exited: nil (having logged why) when
	// it cannot. It is nil when the tree has a PID namespace of its own,
	// whose numbers a dead process's host PID does not tell.
	helper func(pid int) *restoringTask
}

// buildUnixSockets builds every unix socket of a checkpoint that keeps
// peer credentials now, while every restored task can still make the
// calls that record them (see unixCredsFile). Without unix-creds.json
// the sockets are built when a task first needs one, as always.
//
// Preconditions: runs on the tracer thread; every task of the tree
// exists, none has its files or credentials yet.
func (rt *restoreTree) buildUnixSockets() error {
	if _, err := os.Stat(rt.cp.dir.Path(unixCredsFile)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	var ids []uint32
	for id, fe := range rt.cp.files {
		if ue := fe.GetUsk(); fe.GetType() == fdinfo.FdTypes_UNIXSK && ue != nil && ue.GetUflags()&uskExtern == 0 {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	tasks := &unixTasks{byPid: rt.byPid, rootPid: rt.root.pid}
	if rt.nsFlags&unix.CLONE_NEWPID == 0 {
		tasks.helper = rt.credHelper
	}
	rt.files.state[unixTasksKey] = tasks
	start := time.Now()
	if _, err := rt.files.get(ids[0]); err != nil {
		return err
	}
	rt.opts.logf("%d unix sockets built, %d calls made as the processes the credentials name (%v)", len(ids), tasks.calls, time.Since(start).Round(time.Microsecond))
	return nil
}

// credHelper makes a child of the root with PID pid that makes a call
// as a process that had exited (see unixCredsFile); the caller ends it
// with leave. Nil, logged, if pid is taken or the clone fails.
//
// Preconditions: runs on the tracer thread.
func (rt *restoreTree) credHelper(pid int) *restoringTask {
	root := rt.root
	host, err := cloneFrom(root.ctl, pid, 0, 0)
	if err != nil {
		rt.opts.logf("a stand-in for process %d, which had exited: %v", pid, err)
		return nil
	}
	h := &restoringTask{pid: host, vpid: pid, cp: rt.cp, tree: rt, opts: rt.opts, helper: true, parent: root, ctlAddr: rt.ctlAddr,
		sock: root.sock, tfd: root.tfd}
	if err := h.attach(); err != nil {
		rt.opts.logf("a stand-in for process %d, which had exited: %v", pid, err)
		h.kill()
		return nil
	}
	return h
}

// loadCreds reads unix-creds.json, if the checkpoint has it and the
// build may make calls in the tasks.
func (ur *unixRestore) loadCreds(r *fileRestore) error {
	ur.tasks, _ = r.state[unixTasksKey].(*unixTasks)
	ur.listening = map[uint32]*unixCred{}
	ur.credsApplied = map[uint32]bool{}
	if ur.tasks == nil {
		return nil
	}
	b, err := os.ReadFile(r.cp.dir.Path(unixCredsFile))
	if err != nil {
		return err
	}
	all := map[string]*unixCredsEntry{}
	if err := json.Unmarshal(b, &all); err != nil {
		return corruptf(unixCredsFile, "%v", err)
	}
	ur.creds = map[uint32]*unixCredsEntry{}
	for k, e := range all {
		ino, err := strconv.ParseUint(k, 10, 32)
		if err != nil || e == nil {
			return corruptf(unixCredsFile, "entry %q", k)
		}
		for _, c := range []*unixCred{e.Peer, e.Connector} {
			if c != nil && (c.Pid < 0 || c.HostPid < 0) {
				return corruptf(unixCredsFile, "socket %s: pid %d", k, c.Pid)
			}
		}
		ur.creds[uint32(ino)] = e
	}
	// The tree's user namespace, if its own, maps the recorded ids to
	// those its tasks set.
	e := &userns.UsernsEntry{}
	err = images.ReadOne(r.cp.dir.Path(images.Userns.FileName(nsOwn)), images.Userns, e)
	if err == nil {
		ur.uidMap, ur.gidMap = e.GetUidMap(), e.GetGidMap()
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// peerOf and connectorOf return the recorded credentials of socket e.
func (ur *unixRestore) peerOf(e *skunix.UnixSkEntry) *unixCred {
	if x := ur.creds[e.GetIno()]; x != nil {
		return x.Peer
	}
	return nil
}

func (ur *unixRestore) connectorOf(e *skunix.UnixSkEntry) *unixCred {
	if x := ur.creds[e.GetIno()]; x != nil {
		return x.Connector
	}
	return nil
}

// tracerCall is a piece of work the build, on a thread of its own, asks
// the tracer thread to do.
type tracerCall struct {
	fn   func() error
	done chan error
}

// runAway runs fn on a thread of its own that enter prepares
// (nsthread.Run), while the calling thread, the tracer, makes the
// remote calls fn asks for (onTracer): ptrace requests of a tracee must
// come from the thread that attached it.
func (ur *unixRestore) runAway(enter, fn func() error) error {
	if ur.tasks == nil {
		return nsthread.Run(enter, fn)
	}
	calls := make(chan tracerCall)
	ur.tracer = calls
	defer func() { ur.tracer = nil }()
	errc := make(chan error, 1)
	go func() { errc <- nsthread.Run(enter, fn) }()
	for {
		select {
		case c := <-calls:
			c.done <- c.fn()
		case err := <-errc:
			return err
		}
	}
}

// onTracer runs fn on the tracer thread.
func (ur *unixRestore) onTracer(fn func() error) error {
	if ur.tracer == nil {
		return fn()
	}
	done := make(chan error, 1)
	ur.tracer <- tracerCall{fn: fn, done: done}
	return <-done
}

// taskFor returns the restored process that can make a call as c, or
// nil, having logged why not.
func (ur *unixRestore) taskFor(r *fileRestore, c *unixCred, what string) *restoringTask {
	if ur.tasks == nil || c == nil {
		return nil
	}
	if c.Pid == 0 {
		if ur.tasks.helper == nil || c.HostPid <= 0 {
			r.opts.logf("%s: its credentials name process %d, outside the dumped tree: the restore makes it as ctcr", what, c.HostPid)
		}
		return nil
	}
	t := ur.tasks.byPid[c.Pid]
	if t == nil || t.helper || t.img == nil || t.img.zombie || t.killed || t.ctl == nil || t.sock == nil || t.tfd < 0 {
		r.opts.logf("%s: its credentials name process %d, which is no live process of the restored tree now: the restore makes it as ctcr", what, c.Pid)
		return nil
	}
	return t
}

// scratch offsets in a task for the calls below, past what sendFds
// uses.
const (
	credScratchAddr = 1024 // sockaddr_un
	credScratchDot  = 1280 // "."
	credScratchPair = 1296 // int[2]
)

// asTask runs op in the process c names, with c's uid and gid as its
// effective ids, on the tracer thread. It reports false, having done
// nothing, when no process can (see unixCredsFile).
func (ur *unixRestore) asTask(r *fileRestore, c *unixCred, what string, op func(t *restoringTask) error) (bool, error) {
	t := ur.taskFor(r, c, what)
	stand := t == nil && c != nil && c.Pid == 0 && c.HostPid > 0 && ur.tasks != nil && ur.tasks.helper != nil
	if t == nil && !stand {
		return false, nil
	}
	done := false
	err := ur.onTracer(func() (err error) {
		if stand {
			// A process that had exited, in a tree of ctcr's PID
			// namespace: a child of the root with its PID stands in.
			if t = ur.tasks.helper(c.HostPid); t == nil {
				r.opts.logf("%s: its credentials name process %d, outside the dumped tree or exited: the restore makes it as ctcr", what, c.HostPid)
				return nil
			}
			h := t
			defer func() {
				if lerr := h.leave(); lerr != nil {
					h.kill()
					err = errors.Join(err, lerr)
				}
			}()
		}
		st, err := proc.ReadStatus(t.pid, t.pid)
		if err != nil {
			return fmt.Errorf("task %d: %w", c.Pid, err)
		}
		if st.Uid[1] == c.Uid && st.Gid[1] == c.Gid {
			done = true
			ur.tasks.calls++
			// The task has those ids already.
			if err := op(t); !errors.Is(err, errNotHere) {
				return err
			}
			done = false
			return nil
		}
		// The task must still have one identity (the puppet's), mapped
		// in its user namespace, to take back afterwards.
		u, g := st.Uid, st.Gid
		if u[0] != u[1] || u[0] != u[2] || u[0] != u[3] || g[0] != g[1] || g[0] != g[2] || g[0] != g[3] {
			r.opts.logf("%s: task %d has its own credentials already: the restore makes it as ctcr", what, c.Pid)
			return nil
		}
		ownU, ok1 := ur.inside(ur.uidMap, u[0])
		ownG, ok2 := ur.inside(ur.gidMap, g[0])
		wantU, ok3 := ur.inside(ur.uidMap, c.Uid)
		wantG, ok4 := ur.inside(ur.gidMap, c.Gid)
		if !ok1 || !ok2 || !ok3 || !ok4 {
			r.opts.logf("%s: uid %d gid %d, or task %d's own, have no id in the tree's user namespace: the restore makes it as ctcr", what, c.Uid, c.Gid, c.Pid)
			return nil
		}
		const keep = math.MaxUint32 // -1: leave that id
		b := t.ctl.newBatch()
		b.add(unix.SYS_SETRESGID, keep, uint64(wantG), keep)
		b.add(unix.SYS_SETRESUID, keep, uint64(wantU), keep)
		// fsuid back to the real one: names resolve with the task's
		// capabilities for files (the effective uid change dropped
		// them from its effective set).
		b.add(unix.SYS_SETFSUID, uint64(ownU))
		_, err = b.run()
		back := func() error {
			b := t.ctl.newBatch()
			b.add(unix.SYS_SETRESUID, keep, uint64(ownU), keep)
			b.add(unix.SYS_SETRESGID, keep, uint64(ownG), keep)
			if _, err := b.run(); err != nil {
				return fmt.Errorf("task %d: take its own ids back: %w", c.Pid, err)
			}
			now, err := proc.ReadStatus(t.pid, t.pid)
			if err != nil {
				return fmt.Errorf("task %d: %w", c.Pid, err)
			}
			if now.Uid != st.Uid || now.Gid != st.Gid {
				return fmt.Errorf("task %d: its ids are %v/%v after the call, not %v/%v", c.Pid, now.Uid, now.Gid, st.Uid, st.Gid)
			}
			return nil
		}
		if err != nil {
			return errors.Join(fmt.Errorf("task %d: take uid %d gid %d: %w", c.Pid, wantU, wantG, err), back())
		}
		done = true
		ur.tasks.calls++
		err = op(t)
		if errors.Is(err, errNotHere) {
			done, err = false, nil
		}
		return errors.Join(err, back())
	})
	if err != nil {
		return false, fmt.Errorf("%s as %s: %w", what, c, err)
	}
	return done, nil
}

// errNotHere is what an op of asTask returns when the task cannot make
// the call after all: asTask then reports false.
var errNotHere = errors.New("not in this task")

// inside maps a host id into the tree's user namespace; false if it has
// none there.
func (ur *unixRestore) inside(m idMap, host uint32) (uint32, bool) {
	if m == nil {
		return host, true
	}
	in := m.inside(host)
	out, ok := m.outside(in)
	return in, ok && out == host
}

// listenAs makes listener l listen again as c.
func (ur *unixRestore) listenAs(r *fileRestore, l *skunix.UnixSkEntry, c *unixCred) error {
	if c == nil || sameCred(ur.listening[l.GetIno()], c) {
		return nil
	}
	f := ur.files[l.GetIno()]
	ok, err := ur.asTask(r, c, fmt.Sprintf("unix socket %d: listen", l.GetIno()), func(t *restoringTask) error {
		n, err := t.sendFd(f)
		if err != nil {
			return err
		}
		_, err = t.ctl.call(unix.SYS_LISTEN, uint64(n), uint64(l.GetBacklog()))
		return errors.Join(err, t.closeRemote(n))
	})
	if err != nil {
		return err
	}
	if ok {
		ur.listening[l.GetIno()] = c
	}
	return nil
}

// settleListeners makes every listener whose clients connected as
// another listen again as its recorded creator: what a later client
// copies, and what relistenAsOwner need not redo.
func (ur *unixRestore) settleListeners(r *fileRestore, all []*skunix.UnixSkEntry) error {
	for _, l := range all {
		if l.GetState() != tcpListen || ur.files[l.GetIno()] == nil {
			continue
		}
		c := ur.peerOf(l)
		if err := ur.listenAs(r, l, c); err != nil {
			return err
		}
		if c != nil && sameCred(ur.listening[l.GetIno()], c) {
			ur.credsApplied[l.GetIno()] = true
		}
	}
	return nil
}

// connectAs connects sock, socket e's, to listener l as c; false if no
// task could (the caller connects from ctcr).
//
// Runs on the build thread, in the tree's view: a path name's directory
// is resolved here, inside the tree's root, and passed to the task.
func (ur *unixRestore) connectAs(r *fileRestore, sock *os.File, e, l *skunix.UnixSkEntry, c *unixCred) (bool, error) {
	what := fmt.Sprintf("unix socket %d: connect to %q", e.GetIno(), unixName(l.GetName()))
	if ur.tasks == nil || c == nil {
		return false, nil
	}
	name := l.GetName()
	var dir *os.File
	if len(name) > 0 && name[0] != 0 {
		d, err := unixNameDir(l)
		if err != nil {
			return false, fmt.Errorf("%s: %w", what, err)
		}
		defer d.Close()
		dfd, err := unix.FcntlInt(uintptr(d.Fd()), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return false, fmt.Errorf("%s: %w", what, err)
		}
		dir = os.NewFile(uintptr(dfd), "directory of "+unixName(name))
		defer dir.Close()
		name = []byte(d.Base)
	}
	if len(name) >= len(unix.RawSockaddrUnix{}.Path) {
		return false, fmt.Errorf("%s: name too long", what)
	}
	sa := make([]byte, 2+len(name))
	sa[0] = unix.AF_UNIX
	copy(sa[2:], name)
	// A connect to a listener whose backlog is full waits for room for
	// SO_SNDTIMEO: bound it (the socket's own options are set after the
	// build).
	tv := unix.NsecToTimeval(extConnectTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(int(sock.Fd()), unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return false, fmt.Errorf("%s: SO_SNDTIMEO: %w", what, err)
	}
	files := []*os.File{sock}
	if dir != nil {
		files = append(files, dir)
	}
	return ur.asTask(r, c, what, func(t *restoringTask) (err error) {
		got, err := t.sendFds(files)
		if err != nil {
			return err
		}
		defer func() {
			for _, n := range got {
				err = errors.Join(err, t.closeRemote(n))
			}
		}()
		if dir != nil {
			dot, err := t.ctl.put(credScratchDot, ".")
			if err != nil {
				return err
			}
			back, err := t.ctl.call(unix.SYS_OPEN, dot, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC)
			if err != nil {
				return fmt.Errorf("open its working directory: %w", err)
			}
			got = append(got, int(back))
			if _, err := t.ctl.call(unix.SYS_FCHDIR, uint64(got[1])); err != nil {
				return fmt.Errorf("enter %s: %w", dir.Name(), err)
			}
			defer func() {
				if _, ferr := t.ctl.call(unix.SYS_FCHDIR, back); ferr != nil {
					err = errors.Join(err, fmt.Errorf("back to its working directory: %w", ferr))
				}
			}()
		}
		addr, err := t.ctl.put(credScratchAddr, sa)
		if err != nil {
			return err
		}
		for {
			_, err = t.ctl.call(unix.SYS_CONNECT, uint64(got[0]), addr, uint64(len(sa)))
			if !errors.Is(err, unix.EINTR) {
				return err
			}
		}
	})
}

// unixNameDir resolves, inside the tree's root, the directory of the
// path name e is bound to (relative names from their name_dir).
func unixNameDir(e *skunix.UnixSkEntry) (*inroot.Dir, error) {
	name := string(e.GetName())
	top, p := ".", name
	if strings.HasPrefix(name, "/") {
		top = "/"
	} else if e.NameDir != nil {
		top, p = "/", path.Join(e.GetNameDir(), name)
	}
	root, err := inroot.Open(top, "the restored tree's root")
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return root.Parent(p, inroot.InRoot)
}

// pairAs makes a socket pair of e's type as c, in the task c names, and
// takes both ends into ctcr; false if no task could.
func (ur *unixRestore) pairAs(r *fileRestore, e *skunix.UnixSkEntry, c *unixCred) ([2]int, bool, error) {
	fds := [2]int{-1, -1}
	what := fmt.Sprintf("unix socket %d: socketpair", e.GetIno())
	// socketpair makes the pair in the caller's network namespace.
	var want unix.Stat_t
	if ns := ur.nets[e.GetNsId()]; e.GetNsId() != 0 && ns != nil {
		if err := unix.Fstat(int(ns.Fd()), &want); err != nil {
			return fds, false, fmt.Errorf("%s: %w", what, err)
		}
	} else if ur.tasks != nil {
		if err := ur.onTracer(func() error {
			return unix.Stat(fmt.Sprintf("/proc/%d/ns/net", ur.tasks.rootPid), &want)
		}); err != nil {
			return fds, false, fmt.Errorf("%s: the tree's network namespace: %w", what, err)
		}
	}
	ok, err := ur.asTask(r, c, what, func(t *restoringTask) error {
		var theirs unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", t.pid), &theirs); err != nil {
			return fmt.Errorf("its network namespace: %w", err)
		}
		if theirs.Ino != want.Ino || theirs.Dev != want.Dev {
			r.opts.logf("%s: process %d is in another network namespace than the pair: the restore makes it as ctcr", what, t.vpid)
			return errNotHere
		}
		addr, err := t.ctl.put(credScratchPair, [2]int32{-1, -1})
		if err != nil {
			return err
		}
		if _, err := t.ctl.call(unix.SYS_SOCKETPAIR, unix.AF_UNIX, uint64(e.GetType())|unix.SOCK_CLOEXEC, 0, addr); err != nil {
			return err
		}
		var b [8]byte
		if err := t.ctl.mem.ReadAt(b[:], addr); err != nil {
			return err
		}
		theirFds := [2]int{int(int32(binary.LittleEndian.Uint32(b[0:4]))), int(int32(binary.LittleEndian.Uint32(b[4:8])))}
		pfd, err := unix.PidfdOpen(t.pid, 0)
		if err == nil {
			for i, n := range theirFds {
				if fds[i], err = unix.PidfdGetfd(pfd, n, 0); err != nil {
					err = fmt.Errorf("pidfd_getfd: %w", err)
					break
				}
			}
			unix.Close(pfd)
		}
		for _, n := range theirFds {
			err = errors.Join(err, t.closeRemote(n))
		}
		return err
	})
	if err != nil || !ok {
		for i, fd := range fds {
			if fd >= 0 {
				unix.Close(fd)
				fds[i] = -1
			}
		}
		return fds, false, err
	}
	// pidfd_getfd sets FD_CLOEXEC on what it returns.
	return fds, true, nil
}

func (ur *unixRestore) pairOf(r *fileRestore, e, p *skunix.UnixSkEntry) ([2]int, error) {
	c := ur.peerOf(e)
	if p != nil && !sameCred(c, ur.peerOf(p)) {
		r.opts.logf("unix sockets %d and %d: a pair made again with socketpair, whose ends had other credentials (%v, %v): both get %v", e.GetIno(), p.GetIno(), c, ur.peerOf(p), c)
	}
	fds, ok, err := ur.pairAs(r, e, c)
	if err != nil || ok {
		return fds, err
	}
	fds, err = ur.pairFor(e)
	if err != nil {
		return fds, os.NewSyscallError("socketpair", err)
	}
	return fds, nil
}
