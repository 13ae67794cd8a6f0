package criu

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/criu/ptrace"
)

// A dumped process's lone calls (the remote mmap and munmap of its
// scratch area, and a pre-copy's userfaultfd) run before the runner
// exists or after it is gone, so they cannot end in the runner's
// self-raised signal and rt_sigreturn. Instead they run from a syscall
// instruction of the vDSO that is followed only by xors of registers and
// a ret (the fallback paths of __vdso_clock_getres and others), with rsp
// at a place in the dead part of the process's [stack] mapping where
// ctcr has written the address of an rt_sigreturn sequence of the task's
// own code (its C library's or runtime's signal restorer), followed by a
// signal frame of the calling thread's own registers, mask and FPU
// state. If ctcr dies at any instant of the call, the thread finishes
// the syscall, rets into the restorer and rt_sigreturns to itself, as a
// signal handler would return (ptrace.OwnState). The frame's bytes are
// put back after the call.

// loneSpot is where a process's lone calls put their frame.
type loneSpot struct {
	sigreturn uint64 // address of "mov $15, %eax|%rax; syscall" in the task
	at        uint64 // 64-byte aligned, in [stack], below every live frame
}

// loneHeadroom is how far above the frame the main thread's stack
// pointer must be: the frame must stay dead while a thread that lost its
// tracer reads it and the main thread runs on.
const loneHeadroom = 64 << 10

// isLoneGadget reports whether b starts with a syscall instruction
// followed only by xors of a register with itself (none of them rsp)
// and a ret: "0f 05 (31 xx | 4x 31 xx)* c3".
func isLoneGadget(b []byte) bool {
	if len(b) < 3 || b[0] != 0x0f || b[1] != 0x05 {
		return false
	}
	for i := 2; i < len(b) && i < 32; {
		switch {
		case b[i] == 0xc3:
			return true
		case b[i] == 0x31 && i+1 < len(b) && selfXor(b[i+1], 0):
			i += 2
		case b[i]&0xf0 == 0x40 && i+2 < len(b) && b[i+1] == 0x31 && selfXor(b[i+2], b[i]):
			i += 3
		default:
			return false
		}
	}
	return false
}

// selfXor reports whether ModRM byte m (with REX prefix rex, 0 for none)
// names one register twice, and that register is not rsp.
func selfXor(m, rex byte) bool {
	if m>>6 != 3 {
		return false
	}
	reg, rm := m>>3&7|(rex>>2&1)<<3, m&7|(rex&1)<<3
	return reg == rm && rm != 4
}

// findSyscallInsn returns the address of a syscall instruction (0f 05)
// in the task's executable vDSO text, which every x86-64 vDSO has in its
// fallback paths, preferring one isLoneGadget accepts (gadget true).
// Executing it changes nothing in the task's memory.
func findSyscallInsn(mem *ptrace.Mem, maps []proc.Mapping) (ip uint64, ok bool) {
	ip, _, ok = findLoneInsn(mem, maps)
	return ip, ok
}

func findLoneInsn(mem *ptrace.Mem, maps []proc.Mapping) (ip uint64, gadget, ok bool) {
	for _, m := range maps {
		if m.Path != "[vdso]" || !m.Exec || !m.Read {
			continue
		}
		b := make([]byte, m.End-m.Start)
		if err := mem.ReadAt(b, m.Start); err != nil {
			return 0, false, false
		}
		first := bytes.Index(b, []byte{0x0f, 0x05})
		if first < 0 {
			return 0, false, false
		}
		for i := first; i >= 0 && i < len(b); {
			if isLoneGadget(b[i:]) {
				return m.Start + uint64(i), true, true
			}
			j := bytes.Index(b[i+1:], []byte{0x0f, 0x05})
			if j < 0 {
				break
			}
			i += 1 + j
		}
		return m.Start + uint64(first), false, true
	}
	return 0, false, false
}

// sigreturnSeqs are the rt_sigreturn sequences signal restorers are made
// of: glibc's, musl's and Go's "mov $15, %rax; syscall", and "mov $15,
// %eax; syscall".
var sigreturnSeqs = [][]byte{
	{0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05},
	{0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05},
}

// sigreturnAt caches, by mapped file and range, the offset of the first
// rt_sigreturn sequence in an executable mapping (-1: none): the 1,000
// processes of a tree share their C library's.
var sigreturnAt sync.Map

// findSigreturn returns the address of an rt_sigreturn sequence in one
// of the task's executable file mappings.
func findSigreturn(mem *ptrace.Mem, maps []proc.Mapping) (uint64, bool) {
	for _, m := range maps {
		if !m.Exec || !m.Read || m.Inode == 0 || len(m.Path) == 0 || m.Path[0] != '/' {
			continue
		}
		key := fmt.Sprintf("%d:%d:%d:%d:%d", m.Major, m.Minor, m.Inode, m.Offset, m.End-m.Start)
		if v, ok := sigreturnAt.Load(key); ok {
			if off := v.(int64); off >= 0 {
				return m.Start + uint64(off), true
			}
			continue
		}
		off := scanSigreturn(mem, m)
		sigreturnAt.Store(key, off)
		if off >= 0 {
			return m.Start + uint64(off), true
		}
	}
	return 0, false
}

// scanSigreturn reads mapping m in chunks and returns the offset of the
// first sigreturn sequence in it, or -1.
func scanSigreturn(mem *ptrace.Mem, m proc.Mapping) int64 {
	const chunk = 256 << 10
	const overlap = 8
	buf := make([]byte, chunk+overlap)
	for off := uint64(0); off < m.End-m.Start; off += chunk {
		n := min(uint64(len(buf)), m.End-m.Start-off)
		b := buf[:n]
		if err := mem.ReadAt(b, m.Start+off); err != nil {
			return -1
		}
		best := -1
		for _, seq := range sigreturnSeqs {
			if i := bytes.Index(b, seq); i >= 0 && (best < 0 || i < best) {
				best = i
			}
		}
		if best >= 0 {
			return int64(off) + int64(best)
		}
	}
	return -1
}

// findLoneSpot returns where lone calls of a process put their frame,
// or nil when they cannot have one (no gadget at ip, no restorer, no
// [stack] with room: the calls then run as before, with their window).
// mainRsp is the main thread's stack pointer (0 when it has exited).
func findLoneSpot(mem *ptrace.Mem, maps []proc.Mapping, gadget bool, mainRsp uint64) *loneSpot {
	if !gadget {
		return nil
	}
	var stack *proc.Mapping
	for i := range maps {
		if maps[i].Path == "[stack]" && maps[i].Read && maps[i].Write {
			stack = &maps[i]
		}
	}
	if stack == nil {
		return nil
	}
	at := (stack.Start + 63) &^ 63
	if at+frameAreaSize > stack.End {
		return nil // a [stack] smaller than a frame (its main thread gone)
	}
	if mainRsp >= stack.Start && mainRsp < stack.End && at+frameAreaSize+loneHeadroom > mainRsp {
		return nil
	}
	ret, ok := findSigreturn(mem, maps)
	if !ok {
		return nil
	}
	return &loneSpot{sigreturn: ret, at: at}
}

// loneCall runs one lone call of a dumped thread (c.r.Own set, no
// runner), with its frame at c.lone when the process has a spot.
//
// Preconditions: runs on the tracer thread; the thread is stopped.
func (c *taskCtl) loneCall(nr uintptr, args ...uint64) (uint64, error) {
	if c.lone == nil || c.xstate == nil {
		return c.r.Syscall(nr, args...)
	}
	frame, err := sigreturnFrame(c.r.Base, c.r.Own.Mask, c.xstate, c.lone.at)
	if err != nil {
		return 0, fmt.Errorf("task %d: %w", c.tid, err)
	}
	binary.LittleEndian.PutUint64(frame, c.lone.sigreturn) // the frame's pretcode: where the ret goes
	old := make([]byte, len(frame))
	if err := c.mem.ReadAt(old, c.lone.at); err != nil {
		return c.r.Syscall(nr, args...)
	}
	if err := c.mem.WriteAt(frame, c.lone.at); err != nil {
		c.mem.WriteAt(old, c.lone.at)
		return c.r.Syscall(nr, args...)
	}
	c.r.Own.LoneSP = c.lone.at
	ret, err := c.r.Syscall(nr, args...)
	c.r.Own.LoneSP = 0
	if werr := c.mem.WriteAt(old, c.lone.at); werr != nil && err == nil {
		err = fmt.Errorf("task %d: put back the stack bytes under a lone call's frame: %w", c.tid, werr)
	}
	return ret, err
}
