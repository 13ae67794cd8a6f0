package ptrace

import (
	"fmt"
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

// SeccompFilter returns the BPF program (struct sock_filter array) of
// the seccomp filter of tid at index (0: the newest), or ENOENT past the
// oldest. The tracee must be stopped.
func SeccompFilter(tid int, index int) ([]byte, error) {
	n, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(tid), uintptr(index), 0, 0, 0)
	if e != 0 {
		return nil, e
	}
	if n == 0 || n > 4096 { // BPF_MAXINSNS
		return nil, fmt.Errorf("task %d seccomp filter %d: %d instructions", tid, index, n)
	}
	buf := make([]byte, n*8)
	got, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(tid), uintptr(index), uintptr(unsafe.Pointer(&buf[0])), 0, 0)
	if e != 0 {
		return nil, e
	}
	if got != n {
		return nil, fmt.Errorf("task %d seccomp filter %d: %d instructions, then %d", tid, index, n, got)
	}
	return buf, nil
}
