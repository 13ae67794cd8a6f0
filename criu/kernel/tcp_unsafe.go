package kernel

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

func getsockopt(fd, level, opt int, p unsafe.Pointer, n uintptr) (uintptr, error) {
	l := uint32(n)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return 0, os.NewSyscallError("getsockopt", e)
	}
	return uintptr(l), nil
}

func setsockopt(fd, level, opt int, p unsafe.Pointer, n uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(p), n, 0)
	if e != 0 {
		return os.NewSyscallError("setsockopt", e)
	}
	return nil
}

// TCPInfoBytes returns struct tcp_info of fd as the kernel wrote it.
func TCPInfoBytes(fd int) ([]byte, error) {
	b := make([]byte, TCPInfoSize)
	n, err := getsockopt(fd, unix.IPPROTO_TCP, unix.TCP_INFO, unsafe.Pointer(&b[0]), uintptr(len(b)))
	return b[:n], err
}

// GetTCPRepairWindow reads TCP_REPAIR_WINDOW of fd (in repair mode).
func GetTCPRepairWindow(fd int) (TCPRepairWindow, error) {
	var w TCPRepairWindow
	_, err := getsockopt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW, unsafe.Pointer(&w), unsafe.Sizeof(w))
	return w, err
}

// SetTCPRepairWindow sets TCP_REPAIR_WINDOW of fd (in repair mode).
func SetTCPRepairWindow(fd int, w TCPRepairWindow) error {
	return setsockopt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW, unsafe.Pointer(&w), unsafe.Sizeof(w))
}

// SetTCPRepairOptions sets TCP_REPAIR_OPTIONS of fd (in repair mode,
// once connected).
func SetTCPRepairOptions(fd int, opts []TCPRepairOpt) error {
	if len(opts) == 0 {
		return nil
	}
	return setsockopt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_OPTIONS, unsafe.Pointer(&opts[0]), uintptr(len(opts))*unsafe.Sizeof(opts[0]))
}

// SocketFilter reads the classic BPF program attached to socket fd
// (SO_GET_FILTER), one uint64 per struct sock_filter; none: nil.
func SocketFilter(fd int) ([]uint64, error) {
	// The length asked is in instructions; 0 asks how many there are.
	n, err := getsockopt(fd, unix.SOL_SOCKET, unix.SO_GET_FILTER, nil, 0)
	if err != nil || n == 0 {
		return nil, err
	}
	prog := make([]uint64, n)
	got, err := getsockopt(fd, unix.SOL_SOCKET, unix.SO_GET_FILTER, unsafe.Pointer(&prog[0]), n)
	if err != nil {
		return nil, err
	}
	return prog[:got], nil
}

// SetSocketFilter attaches prog to socket fd (SO_ATTACH_FILTER).
func SetSocketFilter(fd int, prog []uint64) error {
	if len(prog) == 0 {
		return nil
	}
	fprog := struct {
		Len    uint16
		_      [6]byte
		Filter *uint64
	}{Len: uint16(len(prog)), Filter: &prog[0]}
	return setsockopt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, unsafe.Pointer(&fprog), unsafe.Sizeof(fprog))
}

// NetlinkMemberships returns the multicast groups netlink socket fd
// joined, as bitmask words (NETLINK_LIST_MEMBERSHIPS): group g is bit
// (g-1)%32 of word (g-1)/32.
func NetlinkMemberships(fd int) ([]uint32, error) {
	words := make([]uint32, 64)
	n, err := getsockopt(fd, unix.SOL_NETLINK, unix.NETLINK_LIST_MEMBERSHIPS, unsafe.Pointer(&words[0]), uintptr(len(words)*4))
	if err != nil {
		return nil, err
	}
	words = words[:min(int(n)/4, len(words))]
	for len(words) > 0 && words[len(words)-1] == 0 {
		words = words[:len(words)-1]
	}
	return words, nil
}
