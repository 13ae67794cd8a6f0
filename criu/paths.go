package criu

import (
	"fmt"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/internal/inroot"
)

// reportedRoot opens the root in which the paths /proc reports for task
// pid (its fds', cwd's, root's, executable's and mappings' links) are
// to be resolved. /proc renders them from the reader's root where it can
// reach them: for a task in ctcr's own mount namespace they are paths of
// ctcr's, whatever the task's root (a chrooted task's cwd and root are
// not below /proc/PID/root, or are found there a second time); for a task
// in another mount namespace (a container) they are rendered from that
// namespace's root, which /proc/PID/root reaches.
func reportedRoot(pid int) (*inroot.Root, error) {
	if inMountNSOfCtcr(pid) {
		return inroot.Open("/", "the host's root")
	}
	return inroot.OfTask(pid)
}

// inMountNSOfCtcr reports whether task pid is in ctcr's mount namespace.
func inMountNSOfCtcr(pid int) bool {
	mine, err := ctcrMountNS()
	var theirs unix.Stat_t
	if err != nil || unix.Stat("/proc/"+strconv.Itoa(pid)+"/ns/mnt", &theirs) != nil {
		return false
	}
	return mine.Dev == theirs.Dev && mine.Ino == theirs.Ino
}

// ctcrMountNS is the mount namespace ctcr runs in, read once: ctcr's
// own process never changes it (nsthread's threads enter other
// namespaces, and die with them). Each file a restore opens asked it
// again, a tenth of the CPU of a 300-process restore with the stat of
// the task's.
var ctcrMountNS = sync.OnceValues(func() (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Stat("/proc/self/ns/mnt", &st)
	return st, err
})

// openInTree opens p, a path the kernel reported at the checkpoint (an
// fd's or a mapping's file, the executable), as the restored tree sees
// it: inside the root of its root task (host PID pid), never through a
// symlink (see package inroot: such a path had none at the checkpoint,
// so one there now was planted since).
func openInTree(pid int, p string, flags int) (*os.File, error) {
	root, err := reportedRoot(pid)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return root.OpenFile(p, flags, 0, inroot.NoLinks)
}

// statInTree stats p, a path found in task pid's file system at the
// dump (the link of its cwd, root, executable, a mapping, a socket's
// name), inside that task's root: a symlink there resolves as the task
// would resolve it, never to the host's file.
func statInTree(pid int, p string) (unix.Stat_t, error) {
	root, err := reportedRoot(pid)
	if err != nil {
		return unix.Stat_t{}, err
	}
	defer root.Close()
	return root.Stat(p, inroot.InRoot)
}

// statCache remembers what statInTree answered during one dump: the
// tasks of a tree map the same files (a tree of 1,000 processes running
// one program stats its executable, libc and ld.so some 18 times per
// task, each an open of the root, an openat2, an fstat and two closes,
// a sixth of the dump's system calls). The tasks are stopped, and a
// path resolved in the same root names the same file for the whole
// dump, as it would have had the dump been quicker. Safe for concurrent
// use.
type statCache struct {
	mu    sync.Mutex
	roots map[int]string // task pid -> the key of the root its paths resolve in
	stats map[string]unix.Stat_t
}

// statInTree is statInTree(pid, p), answered from the cache when a task
// with the same reported root asked for p before.
func (c *statCache) statInTree(pid int, p string) (unix.Stat_t, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	root, ok := c.roots[pid]
	if !ok {
		var err error
		if root, err = rootKey(pid); err != nil {
			return statInTree(pid, p) // names the task's error
		}
		if c.roots == nil {
			c.roots, c.stats = map[int]string{}, map[string]unix.Stat_t{}
		}
		c.roots[pid] = root
	}
	key := root + "\x00" + p
	if st, ok := c.stats[key]; ok {
		return st, nil
	}
	st, err := statInTree(pid, p)
	if err == nil {
		c.stats[key] = st
	}
	return st, err
}

// rootKey names the root reportedRoot(pid) opens: ctcr's own for a task
// in ctcr's mount namespace, else that task's root directory in its
// mount namespace (two chroots of one namespace are two roots).
func rootKey(pid int) (string, error) {
	if inMountNSOfCtcr(pid) {
		return "/", nil
	}
	var ns, root unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/mnt", pid), &ns); err != nil {
		return "", err
	}
	if err := unix.Stat(fmt.Sprintf("/proc/%d/root", pid), &root); err != nil {
		return "", err
	}
	return fmt.Sprintf("mnt %d:%d root %d:%d", ns.Dev, ns.Ino, root.Dev, root.Ino), nil
}

// openTTYInTree opens a terminal (root's /dev/ptmx, a /dev/pts/N) inside
// the root of task pid with flags, never as ctcr's controlling terminal.
// Symlinks inside that root are followed (runc makes /dev/ptmx one to
// pts/ptmx), none out of it.
func openTTYInTree(pid int, p string, flags int) (*os.File, error) {
	root, err := reportedRoot(pid)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return root.OpenFile(p, flags|unix.O_NOCTTY, 0, inroot.InRoot)
}

// openWatched opens, O_PATH, the object an inotify watch was on, in the
// restored tree whose root task is host PID pid: path is as the dump
// reported it (see reportedRoot: ctcr's view for a tree in ctcr's mount
// namespace, the container's for a container), its directories resolved
// with no symlink followed, and the last component taken as it is (it
// may be a symlink watched with IN_DONT_FOLLOW).
func openWatched(pid int, path string) (*os.File, error) {
	root, err := reportedRoot(pid)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	if path == "/" {
		return root.OpenFile("/", unix.O_PATH|unix.O_DIRECTORY, 0, inroot.NoLinks)
	}
	d, err := root.Parent(path, inroot.NoLinks)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	fd, err := unix.Openat(d.Fd(), d.Base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// openOnHost opens p, a path the kernel reported in ctcr's own mount
// namespace (a container's stdout its runtime opened on the host), with
// the same care.
func openOnHost(p string, flags int) (*os.File, error) {
	root, err := inroot.Open("/", "ctcr's root")
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return root.OpenFile(p, flags, 0, inroot.NoLinks)
}

// parentInTree resolves the directory that holds p inside the root of
// task pid, without following any symlink, for creating, binding or
// removing p's last component there.
func parentInTree(pid int, p string) (*inroot.Dir, error) {
	root, err := inroot.OfTask(pid)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return root.Parent(p, inroot.NoLinks)
}
