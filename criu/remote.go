package criu

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/ptrace"
)

// taskCtl drives one stopped task through remote syscalls, with a scratch
// area in the task's memory for syscall arguments and results.
//
// Preconditions: every method runs on the tracer thread.
type taskCtl struct {
	tid     int
	r       *ptrace.Remote
	mem     *ptrace.Mem
	scratch uint64 // address of the scratch area in the task
	size    uint64 // its size
	runner  uint64 // address of syscallRunner in the task, or 0
	// For a thread being dumped (r.Own set): its XSAVE area, and the
	// signal-frame area its process's threads share (sigframe_amd64.go).
	xstate []byte
	frames *frameArea
	// lone: where the process's lone calls put their frame (lonecall.go),
	// nil if they have none.
	lone *loneSpot
}

// frameArea is the part of a dumped process's scratch mapping that holds
// the rt_sigreturn frame of the thread running the runner.
//
// Preconditions: used on the tracer thread only.
type frameArea struct {
	addr uint64 // 64-byte aligned, frameAreaSize bytes
	tid  int    // whose frame it holds now, 0: none
}

// writeFrame makes the frame area hold c's thread's frame.
func (c *taskCtl) writeFrame() error {
	if c.frames == nil {
		return fmt.Errorf("task %d: no signal frame area", c.tid)
	}
	if c.frames.tid == c.tid {
		return nil
	}
	b, err := sigreturnFrame(c.r.Base, c.r.Own.Mask, c.xstate, c.frames.addr)
	if err != nil {
		return fmt.Errorf("task %d: %w", c.tid, err)
	}
	c.frames.tid = 0
	if err := c.mem.WriteAt(b, c.frames.addr); err != nil {
		return err
	}
	c.frames.tid = c.tid
	return nil
}

const scratchSize = 64 << 10

// call runs one syscall in the task. A dumped task runs it through the
// syscall runner once it has one, which ctcr may abandon at any instant
// (see ptrace.OwnState); otherwise it is single-stepped at IP.
func (c *taskCtl) call(nr uintptr, args ...uint64) (uint64, error) {
	if c.r.Own != nil && c.runner != 0 {
		var e [8]uint64
		e[0] = uint64(nr)
		copy(e[1:7], args)
		res, err := c.runCalls([][8]uint64{e})
		if err != nil {
			return 0, err
		}
		return res[0], nil
	}
	if c.r.Own != nil {
		return c.loneCall(nr, args...)
	}
	return c.r.Syscall(nr, args...)
}

// put writes v at offset off of the scratch area and returns its
// address in the task.
func (c *taskCtl) put(off uint64, v any) (uint64, error) {
	b, err := encode(v)
	if err != nil {
		return 0, err
	}
	if off+uint64(len(b)) > c.size {
		return 0, fmt.Errorf("task %d: %d bytes do not fit the scratch area at offset %d", c.tid, len(b), off)
	}
	return c.scratch + off, c.mem.WriteAt(b, c.scratch+off)
}

// encode lays out v as the kernel reads it: []byte as is, a string with
// its NUL, anything else little-endian with encoding/binary.
func encode(v any) ([]byte, error) {
	switch x := v.(type) {
	case []byte:
		return x, nil
	case string:
		return append([]byte(x), 0), nil
	}
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.LittleEndian, v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// mmapArgs is a helper for the remote mmap calls.
func (c *taskCtl) mmap(addr, length uint64, prot, flags int, fd int64, off uint64) (uint64, error) {
	ret, err := c.call(unix.SYS_MMAP, addr, length, uint64(prot), uint64(flags), uint64(fd), off)
	if err != nil {
		return 0, fmt.Errorf("mmap %#x-%#x: %w", addr, addr+length, err)
	}
	return ret, nil
}
