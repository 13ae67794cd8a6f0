package criu

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// kcmpEpollTfd compares a file with an epoll's target,
// include/uapi/linux/kcmp.h.
const kcmpEpollTfd = 7

// kcmpEpollSlot is struct kcmp_epoll_slot: the target registered in
// epoll efd under fd number tfd, the toff-th such (a number closed and
// reused may key several targets).
type kcmpEpollSlot struct {
	efd, tfd, toff uint32
}

// isEpollTarget reports whether fd of pid is the file that epoll efd of
// epid watches as its toff-th target registered under number tfd.
func isEpollTarget(pid, fd, epid, efd, tfd, toff int) bool {
	slot := kcmpEpollSlot{efd: uint32(efd), tfd: uint32(tfd), toff: uint32(toff)}
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid), uintptr(epid), kcmpEpollTfd, uintptr(fd), uintptr(unsafe.Pointer(&slot)), 0)
	return e == 0 && r == 0
}
