package kernel

import (
	"os"

	"golang.org/x/sys/unix"
)

// FileSyscall runs the system call nr on f's descriptor (its first
// argument) with a1 and a2, through f's SyscallConn: f.Fd() would put a
// pollable file in blocking mode, and the file description may be a
// task's, taken with pidfd_getfd.
func FileSyscall(f *os.File, nr, a1, a2 uintptr) (uintptr, error) {
	conn, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var r uintptr
	var errno unix.Errno
	if err := conn.Control(func(fd uintptr) {
		r, _, errno = unix.Syscall(nr, fd, a1, a2)
	}); err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return r, nil
}
