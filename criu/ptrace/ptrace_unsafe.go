package ptrace

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Regs is the general purpose register set of x86-64 (struct user_regs_struct).
type Regs = unix.PtraceRegs

func ptrOf[T any](p *T) unsafe.Pointer { return unsafe.Pointer(p) }

func ptrace(req int, pid int, addr, data uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, data, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func ptracePtr(req int, pid int, addr uintptr, data unsafe.Pointer) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, uintptr(data), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func ptraceRet(req int, pid int, addr uintptr, data unsafe.Pointer) (uintptr, error) {
	r, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, uintptr(data), 0, 0)
	if e != 0 {
		return 0, e
	}
	return r, nil
}

func ptraceRet2(req int, pid int, addr, data unsafe.Pointer) (uintptr, error) {
	r, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), uintptr(addr), uintptr(data), 0, 0)
	if e != 0 {
		return 0, e
	}
	return r, nil
}
