package criu

import (
	"errors"
	"fmt"
)

// Asking the threads of a process of many threads. Each thread answers
// its own batch (queryThread): one ptrace round trip, in which the
// tracer thread only waits for that thread to be scheduled. Run one
// after the other, a process of 1,000 threads waits 1,000 times; run a
// few at once, they use both cores and the waits overlap.
//
// Threads running at once must not share what their batch writes: its
// argument data, its call table and the signal frame that returns the
// thread to itself (sigframe_amd64.go). Once the main thread's query is
// in, the process's scratch area is free, so it is cut into slots of
// threadSlotScratch bytes of data and table followed by a frame each.

// threadQueryWindow bounds how many threads of a process run their
// query batch at once. Each waits to be scheduled, longer on a busy
// machine: with 8 in flight a process of 1,000 threads under a load of
// 8 spent 300-480 ms here; the scratch area holds some 14 slots.
const threadQueryWindow = 16

// threadSlotScratch is the data and call table of one thread's query
// batch (half each: a few calls and their outputs).
const threadSlotScratch = 1024

// queryThreads asks every thread of p but its main one (whose answers
// came with p's own query) about itself; out[i] is p.threads[i]'s,
// out[0] nil.
//
// Preconditions: runs on the tracer thread; p's scratch area is mapped
// and no batch runs in p.
func (p *dumpProc) queryThreads() ([]*threadQuery, error) {
	out := make([]*threadQuery, len(p.threads))
	lead := p.leader().ctl
	frame := 0
	for _, th := range p.threads {
		frame = max(frame, (frameFPState+len(th.ctl.xstate)+4+63)&^63)
	}
	stride := uint64(threadSlotScratch + frame)
	slots := 0
	if lead.runner != 0 && lead.scratch%64 == 0 {
		slots = min(threadQueryWindow, int(lead.size/stride))
	}
	if slots < 2 || len(p.threads) < 3 {
		for i, th := range p.threads[1:] {
			q, err := queryThread(th.ctl)
			if err != nil {
				return nil, fmt.Errorf("task %d thread %d: %w", p.pid, th.tid, err)
			}
			out[i+1] = q
		}
		return out, nil
	}
	type flight struct {
		i, slot int
		c       *taskCtl
		finish  func() (*threadQuery, error)
	}
	var fly []flight
	var free []int
	for k := range slots {
		free = append(free, k)
	}
	collect := func() error {
		f := fly[0]
		fly = fly[1:]
		free = append(free, f.slot)
		q, err := f.finish()
		th := p.threads[f.i]
		// What the thread dequeued meanwhile is its own (the image, or
		// queued again on a rollback).
		th.ctl.r.Stolen = append(th.ctl.r.Stolen, f.c.r.Stolen...)
		if err != nil {
			return fmt.Errorf("task %d thread %d: %w", p.pid, th.tid, err)
		}
		out[f.i] = q
		return nil
	}
	// A failure leaves no batch running: the rollback needs every
	// thread stopped.
	fail := func(err error) ([]*threadQuery, error) {
		errs := []error{err}
		for len(fly) > 0 {
			errs = append(errs, collect())
		}
		return nil, errors.Join(errs...)
	}
	for i := 1; i < len(p.threads); i++ {
		if len(free) == 0 {
			if err := collect(); err != nil {
				return fail(err)
			}
		}
		k := free[len(free)-1]
		free = free[:len(free)-1]
		c := p.threads[i].ctl.inSlot(lead.scratch+uint64(k)*stride, threadSlotScratch)
		finish, err := startQueryThread(c)
		if err != nil {
			return fail(fmt.Errorf("task %d thread %d: %w", p.pid, p.threads[i].tid, err))
		}
		fly = append(fly, flight{i: i, slot: k, c: c, finish: finish})
	}
	for len(fly) > 0 {
		if err := collect(); err != nil {
			return fail(err)
		}
	}
	return out, nil
}

// inSlot returns a copy of c, a dumped thread's, whose batches use the
// size bytes at at for their data and table and a signal frame of their
// own right after them, so that it can run a batch while other threads
// of its process run theirs. Signals it dequeues collect in the copy.
func (c *taskCtl) inSlot(at, size uint64) *taskCtl {
	r := *c.r
	own := *c.r.Own
	own.FrameSP = at + size + 8
	r.Own, r.Stolen, r.Events = &own, nil, nil
	return &taskCtl{tid: c.tid, r: &r, mem: c.mem, scratch: at, size: size, runner: c.runner,
		xstate: c.xstate, frames: &frameArea{addr: at + size}}
}
