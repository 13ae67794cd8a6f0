package kernel

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// UffdAPI negotiates the API and features on a new userfaultfd.
func UffdAPI(fd int, features uint64) error {
	a := UffdioAPI{API: UFFD_API, Features: features}
	return ioctl(fd, UFFDIO_API, unsafe.Pointer(&a))
}

// UffdRegisterWP registers [start, start+length) of the userfaultfd's
// mm for write-protect tracking.
func UffdRegisterWP(fd int, start, length uint64) error {
	r := UffdioRegister{Range: UffdioRange{Start: start, Len: length}, Mode: UFFDIO_REGISTER_MODE_WP}
	return ioctl(fd, UFFDIO_REGISTER, unsafe.Pointer(&r))
}

// UffdUnregister ends the tracking of [start, start+length) and clears
// the pages' protection bits.
func UffdUnregister(fd int, start, length uint64) error {
	r := UffdioRange{Start: start, Len: length}
	return ioctl(fd, UFFDIO_UNREGISTER, unsafe.Pointer(&r))
}

// UffdWriteProtect sets (wp) or clears the write protection of the
// pages of [start, start+length), which must lie in mappings registered
// in write-protect mode. Clearing wakes the threads waiting on a fault
// in the range.
func UffdWriteProtect(fd int, start, length uint64, wp bool) error {
	w := UffdioWriteprotect{Range: UffdioRange{Start: start, Len: length}}
	if wp {
		w.Mode = UFFDIO_WRITEPROTECT_MODE_WP
	}
	return ioctl(fd, UFFDIO_WRITEPROTECT, unsafe.Pointer(&w))
}

func ioctl(fd int, req uint, arg unsafe.Pointer) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg)); e != 0 {
		return e
	}
	return nil
}
