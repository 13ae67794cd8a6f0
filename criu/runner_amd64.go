package criu

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"github.com/ctcr/ctcr/criu/ptrace"
)

// syscallRunner is x86-64 machine code that executes a table of
// syscalls, so a batch of N calls costs one ptrace round trip instead
// of N. Each table entry is 8 words: nr, six arguments, and the result
// the runner stores back. It stops early, leaving r12 > 0, when a call
// returns an error.
//
// How it ends depends on r15. For a restore's puppets (r15 = 0) it
// stops on int3. For a task being dumped (r15 = a signal) it must be
// harmless if ctcr dies at any instant (see ptrace.OwnState): it raises
// that signal at its own thread (tgkill r13, r14, r15), which stops it
// at runnerStop while traced and is dropped once untraced, and then
// returns the thread to itself with rt_sigreturn through the frame at
// rbp-8 (sigframe_amd64.go), which holds the thread's own registers,
// mask and FPU state. A tgkill that failed ends on int3 instead: traced,
// that is a stop like any other.
//
//	loop: test r12, r12        ; entries left?
//	      jz   done
//	      mov  rax, [rbx]      ; nr
//	      mov  rdi, [rbx+8]
//	      mov  rsi, [rbx+16]
//	      mov  rdx, [rbx+24]
//	      mov  r10, [rbx+32]
//	      mov  r8,  [rbx+40]
//	      mov  r9,  [rbx+48]
//	      syscall
//	      mov  [rbx+56], rax   ; result
//	      cmp  rax, -4095      ; an errno?
//	      jae  done
//	      add  rbx, 64
//	      dec  r12
//	      jmp  loop
//	done: test r15, r15
//	      jz   trap
//	      mov  eax, 234        ; tgkill(r13, r14, r15)
//	      mov  rdi, r13
//	      mov  rsi, r14
//	      mov  rdx, r15
//	      syscall
//	stop: test rax, rax
//	      jnz  trap
//	      mov  rsp, rbp
//	      mov  eax, 15         ; rt_sigreturn
//	      syscall
//	      ud2
//	trap: int3
var syscallRunner = []byte{
	0x4d, 0x85, 0xe4, // test r12, r12
	0x74, 0x32, // jz done
	0x48, 0x8b, 0x03, // mov rax, [rbx]
	0x48, 0x8b, 0x7b, 0x08, // mov rdi, [rbx+8]
	0x48, 0x8b, 0x73, 0x10, // mov rsi, [rbx+16]
	0x48, 0x8b, 0x53, 0x18, // mov rdx, [rbx+24]
	0x4c, 0x8b, 0x53, 0x20, // mov r10, [rbx+32]
	0x4c, 0x8b, 0x43, 0x28, // mov r8, [rbx+40]
	0x4c, 0x8b, 0x4b, 0x30, // mov r9, [rbx+48]
	0x0f, 0x05, // syscall
	0x48, 0x89, 0x43, 0x38, // mov [rbx+56], rax
	0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, // cmp rax, -4095
	0x73, 0x09, // jae done
	0x48, 0x83, 0xc3, 0x40, // add rbx, 64
	0x49, 0xff, 0xcc, // dec r12
	0xeb, 0xc9, // jmp loop
	0x4d, 0x85, 0xff, // done: test r15, r15
	0x74, 0x21, // jz trap
	0xb8, 0xea, 0x00, 0x00, 0x00, // mov eax, 234
	0x4c, 0x89, 0xef, // mov rdi, r13
	0x4c, 0x89, 0xf6, // mov rsi, r14
	0x4c, 0x89, 0xfa, // mov rdx, r15
	0x0f, 0x05, // syscall
	0x48, 0x85, 0xc0, // stop: test rax, rax
	0x75, 0x0c, // jnz trap
	0x48, 0x89, 0xec, // mov rsp, rbp
	0xb8, 0x0f, 0x00, 0x00, 0x00, // mov eax, 15
	0x0f, 0x05, // syscall
	0x0f, 0x0b, // ud2
	0xcc, // trap: int3
}

// runnerStop is the offset of the runner's stop label: where a dumped
// thread stops on its signal after a batch.
const runnerStop = 0x4c

const batchEntrySize = 64

// batch collects syscalls to run together in a task, with the argument
// data they point to. Data lives in the first half of the task's scratch
// area, the call table in the second half.
type batch struct {
	c     *taskCtl
	calls [][8]uint64
	data  []byte
}

func (c *taskCtl) newBatch() *batch { return &batch{c: c} }

// add queues a call and returns its index.
func (b *batch) add(nr uintptr, args ...uint64) int {
	var e [8]uint64
	e[0] = uint64(nr)
	copy(e[1:7], args)
	b.calls = append(b.calls, e)
	return len(b.calls) - 1
}

// put places v (a fixed-size value, []byte or string) in the data area
// and returns its address in the task; outputs are allocated the same way
// with space(n).
func (b *batch) put(v any) (uint64, error) {
	raw, err := encode(v)
	if err != nil {
		return 0, err
	}
	addr, err := b.space(uint64(len(raw)))
	if err != nil {
		return 0, err
	}
	copy(b.data[addr-b.c.scratch:], raw)
	return addr, nil
}

// space reserves n bytes of the data area.
func (b *batch) space(n uint64) (uint64, error) {
	off := (uint64(len(b.data)) + 7) &^ 7
	if off+n > b.c.size/2 {
		return 0, fmt.Errorf("task %d: batch data of %d bytes does not fit the scratch area", b.c.tid, off+n)
	}
	b.data = append(b.data, make([]byte, off+n-uint64(len(b.data)))...)
	return b.c.scratch + off, nil
}

// run executes the queued calls in order and returns their results; it
// stops at the first error, which names the call.
func (b *batch) run() ([]uint64, error) {
	c := b.c
	if len(b.calls) == 0 {
		return nil, nil
	}
	if len(b.data) > 0 {
		if err := c.mem.WriteAt(b.data, c.scratch); err != nil {
			return nil, err
		}
	}
	out := make([]uint64, 0, len(b.calls))
	max := int(c.size/2) / batchEntrySize
	for start := 0; start < len(b.calls); start += max {
		end := min(len(b.calls), start+max)
		res, err := c.runCalls(b.calls[start:end])
		out = append(out, res...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// read copies the data area back from the task (after run) and returns
// the bytes at address addr.
func (b *batch) readBack() ([]byte, error) {
	buf := make([]byte, len(b.data))
	if err := b.c.mem.ReadAt(buf, b.c.scratch); err != nil {
		return nil, err
	}
	return buf, nil
}

func (c *taskCtl) runCalls(calls [][8]uint64) ([]uint64, error) {
	if c.runner == 0 {
		// No runner in this task: one remote syscall each.
		out := make([]uint64, 0, len(calls))
		for _, e := range calls {
			r, err := c.call(uintptr(e[0]), e[1:7]...)
			if err != nil {
				return out, err
			}
			out = append(out, r)
		}
		return out, nil
	}
	run, err := c.startCalls(calls)
	if err != nil {
		return nil, err
	}
	return run.finish()
}

// callsRun is a table of calls the runner executes in a task while the
// tracer thread goes on (startCalls); finish collects the results.
type callsRun struct {
	c     *taskCtl
	calls [][8]uint64
	buf   []byte // the table as written
	table uint64 // its address in the task
	run   *ptrace.CodeRun
}

// startCalls writes the call table into the task and lets the runner
// execute it.
//
// Preconditions: c has a runner; calls fit the table half of the
// scratch area.
func (c *taskCtl) startCalls(calls [][8]uint64) (*callsRun, error) {
	size := uint64(len(calls)) * batchEntrySize
	buf := make([]byte, size)
	for i, e := range calls {
		for j, w := range e {
			binary.LittleEndian.PutUint64(buf[i*batchEntrySize+8*j:], w)
		}
	}
	table := c.scratch + c.size/2
	if err := c.mem.WriteAt(buf, table); err != nil {
		return nil, err
	}
	own := c.r.Own
	if own != nil {
		if err := c.writeFrame(); err != nil {
			return nil, err
		}
	}
	run, err := c.r.StartCode(c.runner, func(r *ptrace.Regs) {
		r.Rbx = table
		r.R12 = uint64(len(calls))
		r.R15 = 0
		if own != nil {
			r.R13, r.R14, r.R15 = own.TgkillArgs[0], own.TgkillArgs[1], uint64(own.Sig)
			r.Rbp = own.FrameSP
		}
	})
	if err != nil {
		return nil, err
	}
	return &callsRun{c: c, calls: calls, buf: buf, table: table, run: run}, nil
}

// finish waits for the runner to end and returns the calls' results; it
// stops at the first error, which names the call.
func (cr *callsRun) finish() ([]uint64, error) {
	c, calls, buf, own := cr.c, cr.calls, cr.buf, cr.c.r.Own
	regs, err := cr.run.Finish()
	if err != nil {
		return nil, err
	}
	if end := c.runner + uint64(len(syscallRunner)); regs.Rip != end && (own == nil || regs.Rip != own.Stop) {
		return nil, fmt.Errorf("task %d: syscall runner stopped at %#x, not at its end", c.tid, regs.Rip)
	}
	if err := c.mem.ReadAt(buf, cr.table); err != nil {
		return nil, err
	}
	done := len(calls) - int(regs.R12)
	out := make([]uint64, 0, len(calls))
	for i := 0; i <= done && i < len(calls); i++ {
		out = append(out, binary.LittleEndian.Uint64(buf[i*batchEntrySize+56:]))
	}
	if regs.R12 > 0 {
		ret := out[done]
		return out[:done], fmt.Errorf("remote %s in task %d: %w", ptrace.SyscallName(uintptr(calls[done][0])), c.tid, syscall.Errno(-int64(ret)))
	}
	return out, nil
}

// batchRun is a batch started with start.
type batchRun struct {
	run *callsRun // nil: the batch ran at once (res, err)
	res []uint64
	err error
}

// start lets the task run the batch while the tracer thread goes on;
// wait returns what run would. A batch that needs more than one table,
// or a task without a runner, runs at once.
func (b *batch) start() (*batchRun, error) {
	c := b.c
	max := int(c.size/2) / batchEntrySize
	if c.runner == 0 || len(b.calls) == 0 || len(b.calls) > max {
		res, err := b.run()
		return &batchRun{res: res, err: err}, nil
	}
	if len(b.data) > 0 {
		if err := c.mem.WriteAt(b.data, c.scratch); err != nil {
			return nil, err
		}
	}
	run, err := c.startCalls(b.calls)
	if err != nil {
		return nil, err
	}
	return &batchRun{run: run}, nil
}

// wait collects the batch's results (see run).
func (br *batchRun) wait() ([]uint64, error) {
	if br.run == nil {
		return br.res, br.err
	}
	br.res, br.err = br.run.finish()
	br.run = nil
	return br.res, br.err
}

// installRunner writes the syscall runner at addr in the task (which
// must be executable) and enables batches.
func (c *taskCtl) installRunner(addr uint64) error {
	if err := c.mem.WriteAt(syscallRunner, addr); err != nil {
		return err
	}
	c.runner = addr
	return nil
}
