package criu

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	criucore "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	skunix "github.com/checkpoint-restore/go-criu/v7/crit/images/sk-unix"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/nsthread"
	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/internal/inroot"
)

// Namespace ids in images: 1 is the namespace ctcr itself runs in (the
// host's, left as it is), 2 is the dumped tree's own, which restore
// creates anew. Every task of a tree shares the root's namespaces.
const (
	nsHost = 1
	nsOwn  = 2
)

// nsKinds are the namespaces ctcr knows, with their clone flag.
var nsKinds = []struct {
	name string
	flag uint64
}{
	{"pid", unix.CLONE_NEWPID}, {"net", unix.CLONE_NEWNET}, {"ipc", unix.CLONE_NEWIPC},
	{"uts", unix.CLONE_NEWUTS}, {"mnt", unix.CLONE_NEWNS}, {"cgroup", unix.CLONE_NEWCGROUP},
	{"user", unix.CLONE_NEWUSER}, {"time", unix.CLONE_NEWTIME},
}

// nsSet records, per kind, whether the tree has its own namespace.
type nsSet map[string]uint32

// namespaceIDs compares pid's namespaces with ctcr's.
func namespaceIDs(pid int) (nsSet, error) {
	out := nsSet{}
	for _, k := range nsKinds {
		var mine, theirs unix.Stat_t
		if err := unix.Stat("/proc/self/ns/"+k.name, &mine); err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return nil, err
		}
		if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/%s", pid, k.name), &theirs); err != nil {
			return nil, fmt.Errorf("task %d: %s namespace: %w", pid, k.name, err)
		}
		if mine.Ino == theirs.Ino && mine.Dev == theirs.Dev {
			out[k.name] = nsHost
		} else {
			out[k.name] = nsOwn
		}
	}
	return out, nil
}

func (s nsSet) fill(ids *criucore.TaskKobjIdsEntry) {
	set := func(name string, f **uint32) {
		if v, ok := s[name]; ok {
			*f = proto.Uint32(v)
		}
	}
	set("pid", &ids.PidNsId)
	set("net", &ids.NetNsId)
	set("ipc", &ids.IpcNsId)
	set("uts", &ids.UtsNsId)
	set("mnt", &ids.MntNsId)
	set("cgroup", &ids.CgroupNsId)
	set("user", &ids.UserNsId)
	set("time", &ids.TimeNsId)
}

// ownNamespaces returns the CLONE_NEW* flags of the namespaces the image
// says the tree had of its own.
func ownNamespaces(ids *criucore.TaskKobjIdsEntry) uint64 {
	var flags uint64
	if ids.GetPidNsId() == nsOwn {
		flags |= unix.CLONE_NEWPID
	}
	if ids.GetNetNsId() == nsOwn {
		flags |= unix.CLONE_NEWNET
	}
	if ids.GetIpcNsId() == nsOwn {
		flags |= unix.CLONE_NEWIPC
	}
	if ids.GetUtsNsId() == nsOwn {
		flags |= unix.CLONE_NEWUTS
	}
	if ids.GetMntNsId() == nsOwn {
		flags |= unix.CLONE_NEWNS
	}
	if ids.GetCgroupNsId() == nsOwn {
		flags |= unix.CLONE_NEWCGROUP
	}
	if ids.GetUserNsId() == nsOwn {
		flags |= unix.CLONE_NEWUSER
	}
	if ids.GetTimeNsId() == nsOwn {
		flags |= unix.CLONE_NEWTIME
	}
	return flags
}

// ImageNamespaces returns the CLONE_NEW* flags of the namespaces the
// checkpoint in dir had of its own.
func ImageNamespaces(dir string) (uint64, error) {
	cp, err := loadCheckpoint(dir)
	if err != nil {
		return 0, err
	}
	return ownNamespaces(cp.tasks[0].core.GetIds()), nil
}

// Nested namespaces: a task below the root may have a UTS, IPC or
// network namespace of its own (a systemd service's PrivateNetwork=, a
// container nested in the container). The dump records its id, the
// namespace's inode number (as ns.DumpNested names its images), in the
// task's core; the restore makes each such namespace once, in the first
// task that has it, and puts every later task into its own with setns.
var nestedKinds = []struct {
	name string
	flag int
	id   func(*criucore.TaskKobjIdsEntry) uint32
}{
	{"uts", unix.CLONE_NEWUTS, (*criucore.TaskKobjIdsEntry).GetUtsNsId},
	{"ipc", unix.CLONE_NEWIPC, (*criucore.TaskKobjIdsEntry).GetIpcNsId},
	{"net", unix.CLONE_NEWNET, (*criucore.TaskKobjIdsEntry).GetNetNsId},
	// A task sharing its creator's fs (CLONE_FS) cannot change it.
	{"mnt", unix.CLONE_NEWNS, (*criucore.TaskKobjIdsEntry).GetMntNsId},
}

// nestedKind says whether kind is one a task below the root may have of
// its own, if the caller saves it (DumpOptions.NestedNS).
func (d *dumpTree) nestedKind(kind string) bool {
	if !d.opts.NestedNS {
		return false
	}
	for _, k := range nestedKinds {
		if k.name == kind {
			return true
		}
	}
	return false
}

// nestedIDs gives task p's core the ids of its namespaces that are not
// the root's (sameNamespaces accepted them).
func (d *dumpTree) nestedIDs(p *dumpProc, ids *criucore.TaskKobjIdsEntry) error {
	root := d.procs[0]
	if p == root || p.zombie || !d.opts.NestedNS {
		return nil
	}
	for _, k := range nestedKinds {
		theirs, err := d.nsStat(root.pid, k.name)
		if err != nil {
			return fmt.Errorf("task %d: %s namespace: %w", root.pid, k.name, err)
		}
		mine, err := d.nsStat(p.pid, k.name)
		if err != nil {
			return fmt.Errorf("task %d: %s namespace: %w", p.pid, k.name, err)
		}
		if mine.Ino == theirs.Ino && mine.Dev == theirs.Dev {
			continue
		}
		id := proto.Uint32(uint32(mine.Ino))
		switch k.name {
		case "uts":
			ids.UtsNsId = id
		case "ipc":
			ids.IpcNsId = id
		case "net":
			ids.NetNsId = id
		case "mnt":
			ids.MntNsId = id
		}
	}
	return nil
}

// enterNamespaces puts t, just created by its creator, into its own
// namespaces where the image gives it other ones than the task whose
// memory (and namespaces) it got: the root's, or a nested one, which
// the first task to need it makes (unshare) and RestoreOptions.NestedNS
// fills. It runs before t maps anything, so that SysV segments and
// files are found in t's own namespaces.
func (rt *restoreTree) enterNamespaces(t *restoringTask) error {
	from := t.memFrom
	if from == nil || t.helper {
		return nil // the root's come from clone flags
	}
	for _, k := range nestedKinds {
		want, have := k.id(t.img.core.GetIds()), k.id(from.img.core.GetIds())
		if want == have || want == 0 {
			continue
		}
		if k.flag == unix.CLONE_NEWNS && t.shareFS {
			return fmt.Errorf("%s shares its cwd and root (CLONE_FS) with its creator, but had another mount namespace: %w", t.where(), ErrUnsupported)
		}
		holder := rt.nsHolder(t, want, k.id)
		if holder == nil {
			if rt.opts.NestedNS == nil {
				return fmt.Errorf("%s had a %s namespace of its own (%d): only a container restore remakes those: %w", t.where(), k.name, want, ErrUnsupported)
			}
			if _, err := t.ctl.call(unix.SYS_UNSHARE, uint64(k.flag)); err != nil {
				return fmt.Errorf("%s: new %s namespace: %w", t.where(), k.name, err)
			}
			if err := rt.opts.NestedNS(k.name, int(want), &RootTask{Pid: t.pid, t: t}); err != nil {
				return fmt.Errorf("%s: %w", t.where(), err)
			}
			continue
		}
		if err := t.joinNamespaceOf(holder.pid, k.name, k.flag); err != nil {
			return fmt.Errorf("%s: join the %s namespace of task %d: %w", t.where(), k.name, holder.vpid, err)
		}
	}
	return nil
}

// nsHolder returns a task already in the namespace with image id want
// (of the kind id reads), or nil if none is yet: tasks are created one
// at a time, each entering its namespaces as it is created.
func (rt *restoreTree) nsHolder(t *restoringTask, want uint32, id func(*criucore.TaskKobjIdsEntry) uint32) *restoringTask {
	if id(rt.root.img.core.GetIds()) == want {
		return rt.root
	}
	for _, u := range rt.procs {
		if u != t && !u.helper && !u.img.zombie && u.pid != 0 && u.memFrom != nil && id(u.img.core.GetIds()) == want {
			return u
		}
	}
	return nil
}

// joinNamespaceOf makes t join host task pid's namespace of kind with
// setns on a descriptor ctcr opens and passes: t's own /proc may show
// another PID namespace.
func (t *restoringTask) joinNamespaceOf(pid int, kind string, flag int) error {
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, kind))
	if err != nil {
		return err
	}
	fd, err := t.sendFd(f)
	f.Close()
	if err != nil {
		return err
	}
	_, err = t.ctl.call(unix.SYS_SETNS, uint64(fd), uint64(flag))
	if cerr := t.closeRemote(fd); err == nil {
		err = cerr
	}
	return err
}

// nestedMountFiles refuses task p, whose mount namespace is not the
// root's, if it holds open a file of its own view that the restore
// cannot open there: one at a path the root's view does not reach (or
// reaches another file at) that is neither a regular file, a directory
// nor a FIFO (files_mntview.go gives those their mount; mappings, cwd
// and root are opened in the task's own view), nor a device that means
// the same in every view (/dev/null...). A device node of a private
// /dev (PrivateDevices=) and an O_PATH fd on a symlink are such files.
// Deleted files are restored from their saved content and pass, as do
// files the path does not reach from either view (a runtime's log
// outside the container), which the restore treats as it does the
// root's own.
func (d *dumpTree) nestedMountFiles(p *dumpProc) error {
	root := d.procs[0].pid
	at := func(pid int, path string, dev, ino uint64) bool {
		root, err := reportedRoot(pid)
		if err != nil {
			return false
		}
		defer root.Close()
		st, err := root.Stat(path, inroot.NoLinks)
		return err == nil && st.Dev == dev && st.Ino == ino
	}
	fds, err := proc.Fds(p.pid)
	if err != nil {
		return err
	}
	var socks map[uint32]*unixDiag
	for _, fd := range fds {
		link := fmt.Sprintf("/proc/%d/fd/%d", p.pid, fd)
		path, err := os.Readlink(link)
		if err == nil && strings.HasPrefix(path, "socket:[") {
			// A unix socket bound to a name of its own view: the
			// restore binds unix sockets in the root's view, where
			// the name would be another file's, or the directory
			// missing.
			if socks == nil {
				if socks, err = unixDiagAll(p.pid); err != nil {
					return fmt.Errorf("task %d: unix sockets: %w", p.pid, err)
				}
			}
			ino, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(path, "socket:["), "]"), 10, 32)
			sk := socks[uint32(ino)]
			if sk == nil || !sk.hasVFS || len(sk.name) == 0 || sk.name[0] != '/' {
				continue // not a unix socket of its network namespace, or not bound to an absolute path
			}
			name := string(sk.name)
			dev := unix.Mkdev(sk.vfsDev>>20, sk.vfsDev&0xfffff)
			if at(p.pid, name, dev, uint64(sk.vfsIno)) && !at(root, name, dev, uint64(sk.vfsIno)) {
				return fmt.Errorf("task %d: fd %d (unix socket bound to %s) is bound to a name of its own mount namespace's view, not at that path in the root task's; unix sockets are bound again in the root's: %w", p.pid, fd, name, ErrUnsupported)
			}
			continue
		}
		if err != nil || !strings.HasPrefix(path, "/") || strings.HasSuffix(path, " (deleted)") {
			continue // not a path, or gone since
		}
		var st unix.Stat_t
		if unix.Stat(link, &st) != nil {
			continue
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG, unix.S_IFDIR, unix.S_IFIFO:
			continue // opened in the view it is of
		case unix.S_IFCHR:
			if _, ok := harmlessCharDevs[[2]uint32{unix.Major(st.Rdev), unix.Minor(st.Rdev)}]; ok {
				continue // reopened by its name, in any view
			}
		}
		// Only its own view finds it there.
		if at(p.pid, path, st.Dev, st.Ino) && !at(root, path, st.Dev, st.Ino) {
			return fmt.Errorf("task %d: fd %d (%s, mode %#o) is a file of its own mount namespace, not at that path in the root task's, and not a regular file, directory or FIFO, which are opened in their own namespace: %w", p.pid, fd, path, st.Mode&unix.S_IFMT, ErrUnsupported)
		}
	}
	return nil
}

// socketNetID returns the image id of the network namespace that socket
// fd (a copy of d's fd) belongs to, for its entry's ns_id: the nested
// namespace's id (its inode number, as the tasks' cores name it) for a
// socket of a task below the root made in that task's own network
// namespace (DumpOptions.NestedNS), which the restore makes it in
// again; nil for any other, the root task's among them, which the
// restore makes in the root's as before.
func (d *fdDump) socketNetID(fd int, what string) (*uint32, error) {
	nsfd, err := unix.IoctlRetInt(fd, unix.SIOCGSKNS)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: its network namespace (SIOCGSKNS): %w", d.where, what, err)
	}
	var sk unix.Stat_t
	err = unix.Fstat(nsfd, &sk)
	unix.Close(nsfd)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: its network namespace: %w", d.where, what, err)
	}
	if sk.Ino == d.files.rootNetIno {
		return nil, nil
	}
	var task unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", d.pid), &task); err != nil {
		return nil, fmt.Errorf("%s: network namespace: %w", d.where, err)
	}
	if !d.files.nestedNS || task.Ino != sk.Ino || task.Dev != sk.Dev {
		// Made elsewhere and passed in (a runtime's socket): as before.
		return nil, nil
	}
	return proto.Uint32(uint32(sk.Ino)), nil
}

// netnsTask returns the host PID of a restored task in the network
// namespace with image id nsID (0: the root's). Every task exists, in
// its namespaces, before any file is opened.
func (r *fileRestore) netnsTask(nsID uint32) (int, error) {
	if nsID == 0 {
		return r.rootPid, nil
	}
	for _, img := range r.cp.tasks {
		if img.zombie || img.core.GetIds().GetNetNsId() != nsID {
			continue
		}
		if pid, ok := r.hostPid(int(img.pstree.GetPid())); ok {
			return pid, nil
		}
	}
	return 0, corruptf("files.img", "a socket of network namespace %d, which no task is in", nsID)
}

// nsInode is the inode of pid's namespace of kind.
func nsInode(pid int, kind string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/%s", pid, kind), &st); err != nil {
		return 0, fmt.Errorf("task %d: %s namespace: %w", pid, kind, err)
	}
	return st.Ino, nil
}

// nestedIPC says whether d's task is in another IPC namespace than the
// root task: its POSIX queues are saved with that namespace
// (ns.DumpNested), and descriptors on them are reopened there.
func (d *fdDump) nestedIPC() (bool, error) {
	ino, err := nsInode(d.pid, "ipc")
	if err != nil {
		return false, fmt.Errorf("%s: %w", d.where, err)
	}
	return ino != d.files.rootIPCIno, nil
}

// openNets opens the network namespace of every unix socket of a nested
// one (its entry's ns_id), through a restored task in it, before the
// sockets are built: the build may run on a thread that sees another
// /proc (a container's view). A socket's namespace is where it is made;
// its abstract name, and the names it connects to, are looked up there.
func (ur *unixRestore) openNets(r *fileRestore) (func(), error) {
	ur.nets = map[uint32]*os.File{}
	closeAll := func() {
		for _, f := range ur.nets {
			f.Close()
		}
		ur.nets = nil
	}
	for _, fe := range r.cp.files {
		id := fe.GetUsk().GetNsId()
		if id == 0 || ur.nets[id] != nil {
			continue
		}
		pid, err := r.netnsTask(id)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("unix socket %d: %w", fe.GetUsk().GetIno(), err)
		}
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("unix socket %d: network namespace %d: %w", fe.GetUsk().GetIno(), id, err)
		}
		ur.nets[id] = f
	}
	return closeAll, nil
}

// inSocketNet runs mk on a thread of e's network namespace if it is a
// nested one, else on the calling thread.
func (ur *unixRestore) inSocketNet(e *skunix.UnixSkEntry, mk func() error) error {
	ns := ur.nets[e.GetNsId()]
	if e.GetNsId() == 0 || ns == nil {
		return mk()
	}
	return nsthread.Run(func() error { return os.NewSyscallError("setns", unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET)) }, mk)
}

// socketFor makes a socket of e's type in e's network namespace.
func (ur *unixRestore) socketFor(e *skunix.UnixSkEntry) (int, error) {
	fd := -1
	err := ur.inSocketNet(e, func() error {
		var err error
		fd, err = unixSocket(e.GetType())
		return err
	})
	return fd, err
}

// pairFor makes a socket pair of e's type in e's network namespace.
func (ur *unixRestore) pairFor(e *skunix.UnixSkEntry) ([2]int, error) {
	var fds [2]int
	err := ur.inSocketNet(e, func() error {
		var err error
		fds, err = unix.Socketpair(unix.AF_UNIX, int(e.GetType())|unix.SOCK_CLOEXEC, 0)
		return err
	})
	return fds, err
}
