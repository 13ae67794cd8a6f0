package criu

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// getRobustList returns a thread's robust futex list head and length.
func getRobustList(tid int) (uint64, uint64, error) {
	var head, size uint64
	_, _, e := unix.Syscall(unix.SYS_GET_ROBUST_LIST, uintptr(tid), uintptr(unsafe.Pointer(&head)), uintptr(unsafe.Pointer(&size)))
	if e != 0 {
		return 0, 0, os.NewSyscallError("get_robust_list", e)
	}
	return head, size, nil
}
