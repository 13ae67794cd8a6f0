package kernel

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// GetsockoptBytes reads option opt of fd into a buffer of exactly size
// bytes and returns what the kernel wrote. Some options refuse a buffer
// longer than their value (SO_PEERNAME answers EINVAL), which
// unix.GetsockoptString always passes.
func GetsockoptBytes(fd, level, opt, size int) ([]byte, error) {
	b := make([]byte, size)
	l := uint32(size)
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return nil, errno
	}
	return b[:l], nil
}
