package criu

import (
	"fmt"
	"os"
	"path"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/kernel"
	"github.com/ctcr/ctcr/criu/nsthread"
)

// POSIX message queue descriptors (mq_open, or open on an mqueue
// mount). The queue itself belongs to an IPC namespace, not to the
// task: for a container, ns.DumpMqueues saves the queues of its
// namespace and ns.RestoreMqueues recreates them before any task runs;
// for a process of the host's namespace the queue lives on and is only
// reopened. A plain dump saves the queues of the root's own IPC
// namespace too (DumpOptions.SavesIPC); a caller that does not has
// descriptors on them refused. Queues of a task's IPC namespace below
// the root's are saved with it (ns.DumpNested), and descriptors on them
// are reopened in that namespace, made again before any file is opened.
// The file of a queue belongs to the namespace of the first task that
// holds it (the dump checks that task's namespace has the queue; tasks
// are dumped and restored in the same order), so restore reopens it
// through that task.
//
// Image: CRIU has no fd type for them. A queue is a regular file of the
// mqueue filesystem, and an fd opened on it by path is the same kind of
// descriptor as one from mq_open, so the entry is a REG file named
// /dev/mqueue/NAME: the path the queue has where Linux mounts that
// filesystem (mq_overview(7); runc's default spec mounts it there too),
// with the open flags (O_RDONLY/O_WRONLY/O_RDWR, O_NONBLOCK), position
// and mode. crit decodes it, and CRIU itself would reopen it by that
// path in a container. ctcr does not rely on the path: it reopens the
// queue by name with mq_open in the IPC namespace of the restored root
// (a host has no /dev/mqueue mount as often as it has one). To keep
// the name unambiguous, a dump refuses a file under /dev/mqueue/ that is
// not on an mqueue filesystem.
//
// The kind is listed before regularFiles, and restore finds REG entries
// through it: openMqueueFile hands every other REG entry to
// openRegularFile, and fixup is the same.

const mqueueDir = "/dev/mqueue/"

var mqueueFiles = fileKind{
	name:   "POSIX message queue",
	fdType: fdinfo.FdTypes_REG,
	dump:   dumpMqueueFd,
	open:   openMqueueFile,
	fixup:  restoreFileLocks,
}

func dumpMqueueFd(d *fdDump) (*fdinfo.FileEntry, error) {
	if d.st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, nil
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(fmt.Sprintf("/proc/%d/fd/%d", d.pid, d.fd), &sfs); err != nil {
		return nil, fmt.Errorf("%s (%s): statfs: %w", d.where, d.link, err)
	}
	if sfs.Type != kernel.MQUEUE_MAGIC {
		if strings.HasPrefix(d.link, mqueueDir) {
			return nil, d.unsupported(fmt.Sprintf("file %s is not on an mqueue filesystem (f_type %#x), and would be taken for a message queue at restore", d.link, sfs.Type))
		}
		return nil, nil
	}
	// The link is the queue's path on the mount it was opened through:
	// "/NAME" for mq_open (the namespace's internal mount), or a path on
	// an mqueue mount. The filesystem is flat: the name is the last part.
	if strings.HasSuffix(d.link, " (deleted)") {
		return nil, d.unsupported(fmt.Sprintf("POSIX message queue %s was unlinked: it has no name to reopen it by", strings.TrimSuffix(d.link, " (deleted)")))
	}
	name := path.Base(d.link)
	if name == "/" || name == "." {
		return nil, d.unsupported(fmt.Sprintf("file %s on an mqueue filesystem", d.link))
	}
	nested, err := d.nestedIPC()
	if err != nil {
		return nil, err
	}
	if nested && !d.files.nestedNS {
		return nil, d.unsupported(fmt.Sprintf("POSIX message queue /%s of the task's own IPC namespace below the root's, which this dump does not save", name))
	}
	// A queue of the tree's own namespace exists after restore only if
	// the caller saves that namespace (a container checkpoint and a
	// dump do); one of a nested namespace is saved with that namespace
	// (ns.DumpNested) and reopened in it.
	if !nested && !d.files.savesIPC {
		own, err := ownIPCNamespace(d.pid)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.where, err)
		}
		if own {
			return nil, d.unsupported(fmt.Sprintf("POSIX message queue /%s of the task's own IPC namespace: a process dump does not save that namespace's queues (checkpoint it as a container)", name))
		}
	}
	// A queue of another IPC namespace than the task's (an mqueue mount
	// of the host bound into a container) would be reopened in the wrong
	// one.
	dev, err := mqueueDev(d)
	if err != nil {
		return nil, err
	}
	if dev != d.st.Dev {
		return nil, d.unsupported(fmt.Sprintf("POSIX message queue /%s (%s) belongs to another IPC namespace than the task's", name, d.link))
	}
	return d.files.regEntry(mqueueDir+name, d.flags, uint64(d.info.Pos), &d.st), nil
}

// mqueueDev returns the device of the mqueue filesystem of d's task's
// IPC namespace, found once per namespace.
func mqueueDev(d *fdDump) (uint64, error) {
	var nsSt unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/ipc", d.pid), &nsSt); err != nil {
		return 0, fmt.Errorf("%s: IPC namespace: %w", d.where, err)
	}
	type devOrErr struct {
		dev uint64
		err error
	}
	v := d.files.kindState(fmt.Sprintf("mqueue dev of ipc:[%d]", nsSt.Ino), func() any {
		var st unix.Stat_t
		err := inIPCNamespace(d.pid, func() error {
			root, err := kernel.MqueueRoot()
			if err != nil {
				return err
			}
			defer root.Close()
			return unix.Fstat(int(root.Fd()), &st)
		})
		return devOrErr{st.Dev, err}
	}).(devOrErr)
	if v.err != nil {
		return 0, fmt.Errorf("%s (%s): the mqueue filesystem of the task's IPC namespace: %w", d.where, d.link, v.err)
	}
	return v.dev, nil
}

// ownIPCNamespace reports whether pid's IPC namespace is not ctcr's.
func ownIPCNamespace(pid int) (bool, error) {
	var mine, theirs unix.Stat_t
	if err := unix.Stat("/proc/self/ns/ipc", &mine); err != nil {
		return false, err
	}
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/ipc", pid), &theirs); err != nil {
		return false, fmt.Errorf("IPC namespace: %w", err)
	}
	return mine.Ino != theirs.Ino || mine.Dev != theirs.Dev, nil
}

// inIPCNamespace runs fn in pid's IPC namespace: on ctcr's own thread if
// it is ctcr's namespace too, else on a thread of its own that joined it.
func inIPCNamespace(pid int, fn func() error) error {
	same, err := nsthread.Same(pid, "ipc")
	if err != nil || same {
		if err != nil {
			return err
		}
		return fn()
	}
	return nsthread.Run(func() error { return nsthread.Join(pid, "ipc", unix.CLONE_NEWIPC) }, fn)
}

// openMqueueFile reopens a queue descriptor by name in the IPC namespace
// of the first restored task holding it, with its access mode,
// O_NONBLOCK and position; any other REG entry is openRegularFile's.
func openMqueueFile(r *fileRestore, e *fdinfo.FileEntry) (*os.File, error) {
	reg := e.GetReg()
	if reg == nil || !strings.HasPrefix(reg.GetName(), mqueueDir) {
		return openRegularFile(r, e)
	}
	name := strings.TrimPrefix(reg.GetName(), mqueueDir)
	if name == "" || name == "." || name == ".." || len(name) > kernel.MQ_NAME_MAX || strings.ContainsAny(name, "/\x00") {
		return nil, corruptf("files.img", "message queue id %d: name %q", e.GetId(), reg.GetName())
	}
	flags := int(reg.GetFlags())&(unix.O_ACCMODE|unix.O_NONBLOCK) | unix.O_CLOEXEC
	fd := -1
	holder := r.firstHolder(e.GetId())
	err := inIPCNamespace(holder, func() error {
		var err error
		fd, err = kernel.MqOpen(name, flags, 0, nil)
		return err
	})
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("POSIX message queue /%s (file id %d) is not in the IPC namespace of restored task %d: a dump of a process saves no queue, only a container checkpoint saves those of the container's namespace: %w", name, e.GetId(), holder, err)
		}
		return nil, fmt.Errorf("reopen POSIX message queue /%s (file id %d): %w", name, e.GetId(), err)
	}
	f := os.NewFile(uintptr(fd), "/"+name)
	if pos := reg.GetPos(); pos != 0 {
		if _, err := unix.Seek(fd, int64(pos), 0); err != nil {
			f.Close()
			return nil, fmt.Errorf("POSIX message queue /%s: seek to %d: %w", name, pos, err)
		}
	}
	return f, nil
}
