package kernel

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The mq_* syscalls, which golang.org/x/sys/unix does not wrap. Names
// are the kernel's: without the leading "/" that glibc strips.

// MqOpen opens (or, with O_CREAT, creates) the queue name of the calling
// thread's IPC namespace. attr may be nil.
func MqOpen(name string, flags int, mode uint32, attr *MqAttr) (int, error) {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return -1, err
	}
	for {
		fd, _, e := unix.Syscall6(unix.SYS_MQ_OPEN, uintptr(unsafe.Pointer(p)), uintptr(flags), uintptr(mode), uintptr(unsafe.Pointer(attr)), 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return -1, os.NewSyscallError("mq_open", e)
		}
		return int(fd), nil
	}
}

// MqSend queues msg with priority prio; with no timeout it blocks on a
// full queue unless the descriptor is O_NONBLOCK (then EAGAIN).
func MqSend(fd int, msg []byte, prio uint32) error {
	var p unsafe.Pointer
	if len(msg) > 0 {
		p = unsafe.Pointer(&msg[0])
	}
	for {
		_, _, e := unix.Syscall6(unix.SYS_MQ_TIMEDSEND, uintptr(fd), uintptr(p), uintptr(len(msg)), uintptr(prio), 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return os.NewSyscallError("mq_timedsend", e)
		}
		return nil
	}
}

// MqReceive takes the oldest message of the highest priority into buf,
// which must hold mq_msgsize bytes.
func MqReceive(fd int, buf []byte) (n int, prio uint32, err error) {
	for {
		r, _, e := unix.Syscall6(unix.SYS_MQ_TIMEDRECEIVE, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), uintptr(unsafe.Pointer(&prio)), 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, 0, os.NewSyscallError("mq_timedreceive", e)
		}
		return int(r), prio, nil
	}
}

// MqGetattr returns the queue's attributes and the descriptor's flags.
func MqGetattr(fd int) (MqAttr, error) {
	var a MqAttr
	if _, _, e := unix.Syscall(unix.SYS_MQ_GETSETATTR, uintptr(fd), 0, uintptr(unsafe.Pointer(&a))); e != 0 {
		return a, os.NewSyscallError("mq_getsetattr", e)
	}
	return a, nil
}
