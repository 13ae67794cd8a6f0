package criu

import "golang.org/x/sys/unix"

const kcmpTypeFile = 0 // KCMP_FILE, include/uapi/linux/kcmp.h

// kcmpFile reports whether fd1 and fd2 of pid are the same open file description.
func sameFile(pid, fd1, fd2 int) bool {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid), uintptr(pid), kcmpTypeFile, uintptr(fd1), uintptr(fd2), 0)
	return e == 0 && r == 0
}
