package criu

import "golang.org/x/sys/unix"

// kcmp types, include/uapi/linux/kcmp.h.
const (
	kcmpFile    = 0
	kcmpVM      = 1
	kcmpFiles   = 2
	kcmpFS      = 3
	kcmpSighand = 4
)

// sameFile reports whether fd1 of pid1 and fd2 of pid2 are the same open
// file description.
func sameFile(pid1, fd1, pid2, fd2 int) bool {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), kcmpFile, uintptr(fd1), uintptr(fd2), 0)
	return e == 0 && r == 0
}

// sameObject reports whether two tasks share a kernel object of kind
// (kcmpVM, kcmpFiles, kcmpFS, kcmpSighand).
func sameObject(pid1, pid2, kind int) bool {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), uintptr(kind), 0, 0, 0)
	return e == 0 && r == 0
}
