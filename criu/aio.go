package criu

// Native AIO contexts (io_setup). A context's ring is the [aio] mapping
// io_setup made, at the address io_setup returned as the context id:
//
//	+--------------------+---------------------------------------+
//	| struct aio_ring    | io_event[nr]                          |
//	| id nr head tail .. | completed events from head to tail    |
//	+--------------------+---------------------------------------+
//
// As in CRIU (criu/aio.c, restore_aio_ring in criu/pie/restorer.c), the
// ring's pages are dumped like private anonymous memory, its VMA is
// flagged VMA_AREA_AIORING and mm.img lists it in aios (address, nr_req,
// length). Restore maps plain memory there and fills it from the pages,
// then makes a new context with io_setup, brings the kernel's own tail
// to the saved tail and the ring's head to the saved head with requests
// that complete at once (writes of nothing to /dev/null, reaped or not),
// copies the saved events into the new ring and moves it over the saved
// one with mremap, which the kernel follows (the context id becomes the
// old address again).
//
// Requests in flight at the dump (a poll not yet ready, a read not yet
// done) live only inside the kernel's context, which no interface shows:
// they are lost, as with CRIU.

import (
	"encoding/binary"
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/vma"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/kernel"
)

// vmaAreaAioring flags the ring of an AIO context (criu/include/image.h).
const vmaAreaAioring = 1 << 13

// aioRingVMA makes e the entry of an [aio] mapping of the ring file
// inode: its pages are saved as private anonymous memory's, and the
// inode kept in shmid until dumpAioRings has seen it.
func aioRingVMA(e *vma.VmaEntry, inode uint64) {
	e.Flags = proto.Uint32(unix.MAP_PRIVATE | unix.MAP_ANONYMOUS)
	e.Status = proto.Uint32(vmaAreaRegular | vmaAnonPrivate | vmaAreaAioring)
	e.Shmid = proto.Uint64(inode)
}

// aioDumpState is what the dump of a tree knows of AIO rings: the ring
// files (by inode) a task dumped before maps.
type aioDumpState struct {
	seen map[uint64]bool
}

// aioRingHeader parses and checks the header of a ring of size bytes.
func aioRingHeader(b []byte, size uint64) (kernel.AioRing, error) {
	var h kernel.AioRing
	if len(b) < kernel.AioRingHeaderSize {
		return h, fmt.Errorf("AIO ring of %d bytes", len(b))
	}
	h.ID = binary.LittleEndian.Uint32(b[0:])
	h.Nr = binary.LittleEndian.Uint32(b[4:])
	h.Head = binary.LittleEndian.Uint32(b[8:])
	h.Tail = binary.LittleEndian.Uint32(b[12:])
	h.Magic = binary.LittleEndian.Uint32(b[16:])
	h.CompatFeatures = binary.LittleEndian.Uint32(b[20:])
	h.IncompatFeatures = binary.LittleEndian.Uint32(b[24:])
	h.HeaderLength = binary.LittleEndian.Uint32(b[28:])
	want := (size - kernel.AioRingHeaderSize) / kernel.IoEventSize
	switch {
	case h.Magic != kernel.AIO_RING_MAGIC:
		return h, fmt.Errorf("AIO ring magic %#x, want %#x", h.Magic, uint32(kernel.AIO_RING_MAGIC))
	case h.HeaderLength != kernel.AioRingHeaderSize:
		return h, fmt.Errorf("AIO ring header of %d bytes, want %d", h.HeaderLength, kernel.AioRingHeaderSize)
	case uint64(h.Nr) != want:
		return h, fmt.Errorf("AIO ring of %d events in %d bytes, want %d", h.Nr, size, want)
	case h.Head >= h.Nr || h.Tail >= h.Nr:
		// The task may write head itself (libaio reaps in user space).
		return h, fmt.Errorf("AIO ring head %d tail %d outside its %d events", h.Head, h.Tail, h.Nr)
	}
	return h, nil
}

// maxAioRingSize bounds the ring restore reads into memory: the largest
// io_setup allows (fs.aio-max-nr, 65536 by default, doubled) is 4 MiB.
const maxAioRingSize = 64 << 20

// aioNrReq returns an nr_events for io_setup that makes a ring of nr
// events, the size of the saved one: the kernel makes room for
// 2*max(nr_events, 4*CPUs)+2 events and rounds up to whole pages, so
// what the task asked for is lost, but (nr-2)/2 gives the same pages.
func aioNrReq(nr uint32) uint32 { return (nr - 2) / 2 }

// dumpAioRings checks the header of every AIO ring of task pid and
// returns mm.img's entries for them.
//
// fork copies a ring's mapping into the child but not the context, which
// stays its parent's: a ring file an earlier task of the tree (tasks are
// dumped parents first) maps is such a copy. It keeps its VMA_AREA_AIORING
// VMA but has no aios entry: restore keeps the parent's restored ring
// the child inherits by fork there (restoringTask.keeps).
func dumpAioRings(pid int, vmas []*vma.VmaEntry, files *fileTable) ([]*mm.AioRingEntry, error) {
	// kindState: the map is made on first use, and may not be yet.
	st := files.kindState("aio", func() any { return &aioDumpState{seen: map[uint64]bool{}} }).(*aioDumpState)
	var out []*mm.AioRingEntry
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	for _, e := range vmas {
		if e.GetStatus()&vmaAreaAioring == 0 {
			continue
		}
		inode := e.GetShmid()
		e.Shmid = proto.Uint64(0)
		if st.seen[inode] {
			continue
		}
		st.seen[inode] = true
		if f == nil {
			var err error
			if f, err = os.Open(fmt.Sprintf("/proc/%d/mem", pid)); err != nil {
				return nil, fmt.Errorf("task %d: %w", pid, err)
			}
		}
		size := e.GetEnd() - e.GetStart()
		b := make([]byte, kernel.AioRingHeaderSize)
		if _, err := f.ReadAt(b, int64(e.GetStart())); err != nil {
			return nil, fmt.Errorf("task %d AIO ring at %#x: %w", pid, e.GetStart(), err)
		}
		h, err := aioRingHeader(b, size)
		if err != nil {
			return nil, fmt.Errorf("task %d AIO ring at %#x: %w: %w", pid, e.GetStart(), err, ErrUnsupported)
		}
		out = append(out, &mm.AioRingEntry{Id: proto.Uint64(e.GetStart()), NrReq: proto.Uint32(aioNrReq(h.Nr)), RingLen: proto.Uint32(uint32(size))})
	}
	return out, nil
}

// aioRingCopy reports a VMA that is a forked copy of its parent's ring
// mapping (see dumpAioRings): an AIO ring VMA without its aios entry.
func (t *restoringTask) aioRingCopy(v *vma.VmaEntry) bool {
	if v.GetStatus()&vmaAreaAioring == 0 {
		return false
	}
	for _, a := range t.img.mm.GetAios() {
		if a.GetId() == v.GetStart() {
			return false
		}
	}
	return true
}

// restoreAioRings turns every AIO ring of the image, mapped as plain
// memory and filled, into a context of the task at the same address.
//
// Preconditions: runs on the tracer thread, after fillPages.
func (t *restoringTask) restoreAioRings() error {
	for _, a := range t.img.mm.GetAios() {
		if err := t.restoreAioRing(a); err != nil {
			return fmt.Errorf("%s AIO ring at %#x: %w", t.where(), a.GetId(), err)
		}
	}
	return nil
}

func (t *restoringTask) restoreAioRing(a *mm.AioRingEntry) error {
	addr, size := a.GetId(), uint64(a.GetRingLen())
	if size < pageSize || size > maxAioRingSize {
		return corruptf("mm.img", "AIO ring at %#x of %d bytes (at most %d)", addr, size, maxAioRingSize)
	}
	if v := vmaAt(t.img.mm.Vmas, addr); v == nil || v.GetStart() != addr || v.GetEnd()-v.GetStart() != size || v.GetStatus()&vmaAreaAioring == 0 {
		return corruptf("mm.img", "AIO ring at %#x of %d bytes without its mapping", addr, size)
	}
	saved := make([]byte, size)
	if err := t.ctl.mem.ReadAt(saved, addr); err != nil {
		return fmt.Errorf("read the saved ring: %w", err)
	}
	h, err := aioRingHeader(saved, size)
	if err != nil {
		return corruptf("pages", "%v", err)
	}
	// /dev/null, to complete requests at once, and a new context.
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	devNull, err := t.sendFd(null)
	null.Close()
	if err != nil {
		return err
	}
	defer t.closeRemote(devNull)
	b := t.ctl.newBatch()
	ctxp, err := b.space(8)
	if err != nil {
		return err
	}
	b.add(unix.SYS_IO_SETUP, uint64(aioNrReq(h.Nr)), ctxp)
	if _, err := b.run(); err != nil {
		return fmt.Errorf("io_setup(%d): %w", aioNrReq(h.Nr), err)
	}
	back, err := b.readBack()
	if err != nil {
		return err
	}
	ctx := binary.LittleEndian.Uint64(back[ctxp-t.ctl.scratch:])
	fresh := make([]byte, kernel.AioRingHeaderSize)
	if err := t.ctl.mem.ReadAt(fresh, ctx); err != nil {
		return fmt.Errorf("read the new ring at %#x: %w", ctx, err)
	}
	if nh, err := aioRingHeader(fresh, size); err != nil {
		t.ctl.call(unix.SYS_IO_DESTROY, ctx)
		return fmt.Errorf("io_setup(%d) made a ring unlike the saved one: %w", aioNrReq(h.Nr), err)
	} else if nh.Head != 0 || nh.Tail != 0 {
		t.ctl.call(unix.SYS_IO_DESTROY, ctx)
		return fmt.Errorf("new ring at %#x starts at head %d tail %d", ctx, nh.Head, nh.Tail)
	}
	if err := t.advanceAioRing(ctx, uint64(devNull), h); err != nil {
		t.ctl.call(unix.SYS_IO_DESTROY, ctx)
		return err
	}
	// The events, as saved; the header stays the kernel's.
	if err := t.ctl.mem.WriteAt(saved[kernel.AioRingHeaderSize:], ctx+kernel.AioRingHeaderSize); err != nil {
		t.ctl.call(unix.SYS_IO_DESTROY, ctx)
		return fmt.Errorf("copy the events: %w", err)
	}
	// mremap over the saved copy: the context follows its ring.
	if _, err := t.ctl.call(unix.SYS_MREMAP, ctx, size, size, unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, addr); err != nil {
		t.ctl.call(unix.SYS_IO_DESTROY, ctx)
		return fmt.Errorf("mremap the new ring from %#x: %w", ctx, err)
	}
	got := make([]byte, kernel.AioRingHeaderSize)
	if err := t.ctl.mem.ReadAt(got, addr); err != nil {
		return err
	}
	if nh, err := aioRingHeader(got, size); err != nil || nh.Head != h.Head || nh.Tail != h.Tail {
		return fmt.Errorf("restored ring has head %d tail %d (%v), want %d %d", nh.Head, nh.Tail, err, h.Head, h.Tail)
	}
	return nil
}

// aioBatch is how many requests advanceAioRing submits per io_submit:
// no more than the context guarantees room for.
func aioBatch(h kernel.AioRing) uint64 { return min(uint64(aioNrReq(h.Nr)), 256) }

// advanceAioRing brings the fresh context ctx (head = tail = 0) to the
// saved head and tail: head requests submitted and reaped, then the
// saved count of unreaped events submitted and left in the ring. The
// kernel's own tail, where it writes the next completion, moves with
// them. Each request writes nothing to /dev/null, which completes it
// inside io_submit.
func (t *restoringTask) advanceAioRing(ctx, devNull uint64, h kernel.AioRing) error {
	pending := uint64((h.Tail + h.Nr - h.Head) % h.Nr)
	if h.Head == 0 && pending == 0 {
		return nil
	}
	n := aioBatch(h)
	b := t.ctl.newBatch()
	iocb, err := b.put(&kernel.Iocb{LioOpcode: kernel.IOCB_CMD_PWRITE, Fildes: uint32(devNull)})
	if err != nil {
		return err
	}
	ptrs := make([]uint64, n)
	for i := range ptrs {
		ptrs[i] = iocb // io_submit copies each: one iocb serves them all
	}
	list, err := b.put(ptrs)
	if err != nil {
		return err
	}
	events, err := b.space(n * kernel.IoEventSize)
	if err != nil {
		return err
	}
	// A deadline for io_getevents, which would wait for a request that
	// was not submitted.
	timeout, err := b.put(&unix.Timespec{Sec: 5})
	if err != nil {
		return err
	}
	type step struct {
		nr   uintptr
		want uint64
	}
	var steps []step
	for left := uint64(h.Head); left > 0; {
		k := min(left, n)
		b.add(unix.SYS_IO_SUBMIT, ctx, k, list)
		b.add(unix.SYS_IO_GETEVENTS, ctx, k, k, events, timeout)
		steps = append(steps, step{unix.SYS_IO_SUBMIT, k}, step{unix.SYS_IO_GETEVENTS, k})
		left -= k
	}
	for left := pending; left > 0; {
		k := min(left, n)
		b.add(unix.SYS_IO_SUBMIT, ctx, k, list)
		steps = append(steps, step{unix.SYS_IO_SUBMIT, k})
		left -= k
	}
	res, err := b.run()
	if err != nil {
		return fmt.Errorf("move the new ring to head %d tail %d: %w", h.Head, h.Tail, err)
	}
	for i, s := range steps {
		if res[i] != s.want {
			return fmt.Errorf("move the new ring to head %d tail %d: call %d of %d (syscall %d) did %d requests of %d", h.Head, h.Tail, i+1, len(steps), s.nr, res[i], s.want)
		}
	}
	return nil
}
