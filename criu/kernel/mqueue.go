package kernel

import (
	"os"

	"golang.org/x/sys/unix"
)

// include/uapi/linux/mqueue.h, include/uapi/linux/magic.h and the limits
// of ipc/mqueue.c (include/linux/ipc_namespace.h).

const (
	// MQUEUE_MAGIC is the f_type statfs reports for the mqueue
	// filesystem, where every POSIX message queue lives.
	MQUEUE_MAGIC = 0x19800202

	// MQ_PRIO_MAX bounds message priorities: 0 <= prio < MQ_PRIO_MAX.
	MQ_PRIO_MAX = 32768
	// HARD_MSGMAX and HARD_MSGSIZEMAX cap mq_maxmsg and mq_msgsize even
	// for CAP_SYS_RESOURCE.
	HARD_MSGMAX     = 65536
	HARD_MSGSIZEMAX = 16 * 1024 * 1024
	// MQ_NAME_MAX: a queue is a file of the flat mqueue filesystem.
	MQ_NAME_MAX = 255
)

// MqAttr is struct mq_attr.
type MqAttr struct {
	Flags   int64 // O_NONBLOCK or 0
	Maxmsg  int64
	Msgsize int64
	Curmsgs int64
	_       [4]int64
}

// MqueueRoot opens the root directory of the mqueue filesystem of the
// calling thread's IPC namespace on a detached mount (fsopen, fsmount):
// the mount is attached nowhere, so no mount namespace sees it, nothing
// has to be unmounted, and it goes away with the last fd. The
// filesystem's superblock is the namespace's own (the kernel keys it on
// the IPC namespace of the thread that calls fsopen), so its directory
// lists every queue of that namespace. Needs CAP_SYS_ADMIN.
func MqueueRoot() (*os.File, error) {
	fsfd, err := unix.Fsopen("mqueue", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("fsopen mqueue", err)
	}
	defer unix.Close(fsfd)
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return nil, os.NewSyscallError("fsconfig mqueue", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOEXEC|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return nil, os.NewSyscallError("fsmount mqueue", err)
	}
	defer unix.Close(mfd)
	// fsmount's fd is O_PATH: open the root for reading.
	dfd, err := unix.Openat(mfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("open mqueue root", err)
	}
	return os.NewFile(uintptr(dfd), "mqueue:/"), nil
}
