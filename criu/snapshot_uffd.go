package criu

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/vma"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/kernel"
	"github.com/ctcr/ctcr/criu/proc"
)

// Write-protect snapshots for --leave-running: the default route, with
// the fork of snapshot.go as its fallback (CTCR_SNAPSHOT=fork|uffd, a
// developer's knob, picks one).
//
// A fork copies the page tables while the tree is stopped, one entry
// per 4 KiB page: 35-70 ms per GiB here. A userfaultfd in synchronous
// write-protect mode (QEMU's background snapshot) costs the stopped
// tree one page table walk that only flips a bit per entry, and no
// refcount:
//
//  1. Still stopped, each process (one mm) makes a userfaultfd by a lone
//     remote call (takeUffd, as the pre-copy does; not limited to
//     user-mode faults: a write by the kernel on the task's behalf, a
//     read(2) into a protected buffer, must wait as well rather than
//     fail with EFAULT). ctcr plans the pages to save with PAGEMAP_SCAN
//     (runs, not 8 bytes a page), registers the mappings that hold them
//     and write-protects them (UFFDIO_WRITEPROTECT). The tree is let go.
//  2. A goroutine per process (serve) reads its userfaultfd. A write to
//     a protected page P blocks the writing thread and reports P. P is
//     still as at the freeze: the handler reads the pages of P's 64 KiB
//     block that are not copied yet, keeps them (saved), and clears
//     their protection, which wakes the thread.
//  3. The bulk copier (copy) reads the pages in image order through
//     /proc/PID/mem into ctcr's page buffers (pageSink), takes the
//     handler's saved copy for every page it has, and clears the
//     protection of what it read. Both sides hold mu from their read to
//     marking the pages, so a page is read before its protection is
//     cleared, by one side or the other: every page is as at the freeze.
//  4. When a process's pages are written its userfaultfd is closed: the
//     kernel clears the protection of every page and wakes every thread
//     still waiting.
//
// Kill safety: the task's own descriptor of the userfaultfd is closed
// at once; ctcr's is the only one. A ctcr that dies, at any instant,
// closes it: the kernel's release of a userfaultfd unregisters its
// mappings (clearing every protection bit) and wakes the faulting
// threads, which write on. TestSnapshot's kill cases show it.
//
// RSS: the saved pages of all processes are bounded by uffdSavedMax.
// Past it, a fault on a page not yet copied is left waiting until the
// bulk copier passes the page (slow for that thread, not wrong).
//
// Shared anonymous memory and private file mappings are copied while
// the tree is stopped, into a memory file, as the fork route copies
// some (uffdEligible says why). What this route does not cover goes the
// fork's way, per process: hugetlb mappings, an AIO ring (the kernel writes
// it), a mapping another userfaultfd holds, a task that may not make a
// userfaultfd for kernel faults (no CAP_SYS_PTRACE while
// vm.unprivileged_userfaultfd is 0), or a kernel without write-protect
// userfaultfd.
//
// What the task does to its own memory during the copy: munmap, mremap
// and madvise(MADV_DONTNEED, MADV_REMOVE) take pages away without a
// write fault. The userfaultfd reports them (UFFD_EVENT_UNMAP, _REMAP,
// _REMOVE), but only once done: if they took pages not copied yet, the
// dump fails (errSnapshotTorn) rather than save what is no longer
// there; a dump with CTCR_SNAPSHOT=fork does not meet this. Pages freed
// with MADV_FREE and reclaimed before the copy are not reported (read
// as zeros); the same holds of the fork's child, which shares them.
//
// The VmFlags (the madvise advice the images keep) are read from the
// task after it runs again (a fork's child has them as at the freeze):
// an madvise in between shows.

// uffdSavedMax bounds the bytes of pages the fault handlers keep, all
// processes together (issue 11: ctcr's RSS <= 128 MiB for 1 GiB).
const uffdSavedMax = 32 << 20

// uffdMinBytes: a process with fewer bytes of private anonymous pages
// is copied while stopped (8 MiB: 3 ms here). The write-protect route
// reads the pages from the process itself, so a process that exits
// during the copy fails the dump; the small ones, a shell or a sleep of
// a container, come and go often, and cost little to copy at once.
const uffdMinBytes = 8 << 20

// uffdSmall is take's answer for a process under uffdMinBytes.
const uffdSmall = "few private pages"

// uffdBlock is what a fault saves and releases at once: the writes of a
// thread that walks its memory fault once per block, not per page.
const uffdBlock = 16 * pageSize

// errSnapshotTorn: the task took pages away (munmap, mremap, madvise)
// before they were copied.
var errSnapshotTorn = errors.New("pages taken away during the copy")

// snapshotMode returns the --leave-running snapshot route the
// environment asks for (CTCR_SNAPSHOT): "fork", the default, or "uffd".
// The fork stays the default: measured side by side on this machine
// class, write-protecting 1 GiB costs about what the fork's page-table
// copy does (both touch every 4 KiB entry), while the write-protect
// route holds writers in faults during the copy and fails the dump if
// the task unmaps pages not yet copied.
func snapshotMode() (string, error) {
	switch v := os.Getenv("CTCR_SNAPSHOT"); v {
	case "", "fork":
		return "fork", nil
	case "uffd":
		return "uffd", nil
	default:
		return "", fmt.Errorf("CTCR_SNAPSHOT=%q: want fork or uffd", v)
	}
}

// Page states of a uffdSnapshot.
const (
	pageUncopied = iota // still protected (unless a fault is past the budget)
	pageSaved           // the handler kept it and cleared its protection
	pageCopied          // the bulk copier has it
)

// uffdSnapshot is the write-protect snapshot of one process.
type uffdSnapshot struct {
	p    *dumpProc
	path string    // the pages image to write; immutable
	mem  *os.File  // the task's /proc/PID/mem; immutable
	set  *uffdSet  // immutable
	runs []pageRun // the pages the image holds, in order; immutable
	// first[i] is the index of runs[i]'s first page in state.
	first []int
	// frozen holds the pages of the runs with noFork (see
	// uffdEligible), one after the other, copied while the task was
	// stopped; nil if none.
	frozen *os.File
	// regs are the registered mappings, sorted; immutable.
	regs []proc.PageRange

	fd      int  // ctcr's descriptor of the userfaultfd; -1 once closed
	serving bool // serve runs until stop
	stop    chan struct{}
	done    chan struct{} // closed when serve returns

	mu    sync.Mutex
	state []uint8        // per page of runs; guarded by mu
	saved map[int][]byte // by page index; guarded by mu
	torn  error          // the first event that took uncopied pages; guarded by mu

	faults   atomic.Int64 // write faults served
	waited   atomic.Int64 // faults left waiting for the copier (budget)
	savedAll atomic.Int64 // pages the handler saved
}

// uffdSet is the write-protect snapshots of a dump.
type uffdSet struct {
	snaps []*uffdSnapshot
	logf  func(string, ...any)
	held  atomic.Int64 // bytes of saved pages, all processes
}

// uffdEligible returns p's anonymous private mappings, and those whose
// pages are copied while it is stopped, as the fork route copies some:
// shared anonymous memory (the other processes mapping it are not
// protected) and private file mappings (a userfaultfd in synchronous
// write-protect mode takes only anonymous memory, shmem and hugetlb:
// vma_can_userfault, mm/userfaultfd.c; their written pages are few, the
// data of programs and libraries). Or it says why the route does not
// fit p (then forked).
func uffdEligible(p *dumpProc) (private, frozen []*vma.VmaEntry, why string) {
	for _, e := range p.mm.Vmas {
		st := e.GetStatus()
		if st&(vmaAnonShared|vmaAnonPrivate|vmaFilePrivate) == 0 {
			continue
		}
		switch {
		case hugePageSize(e) != 0:
			return nil, nil, fmt.Sprintf("hugetlb mapping %#x-%#x", e.GetStart(), e.GetEnd())
		case st&vmaAreaAioring != 0:
			return nil, nil, fmt.Sprintf("AIO ring %#x-%#x", e.GetStart(), e.GetEnd())
		case vmaSpecial(e):
		case st&vmaAnonPrivate != 0:
			private = append(private, e)
		default:
			frozen = append(frozen, e)
		}
	}
	return private, frozen, ""
}

// scanPages plans the pages of vmas (private anonymous mappings) of the
// stopped task pid to save, as collectPages does but by runs: every
// present or swapped page. 1.5-5 ms per GiB of 4 KiB pages here, where
// the pagemap costs 20-40.
func scanPages(pid int, vmas []*vma.VmaEntry) ([]pageRun, error) {
	pmr, err := proc.OpenPagemap(pid)
	if err != nil {
		return nil, fmt.Errorf("task %d: %w", pid, err)
	}
	defer pmr.Close()
	var runs []pageRun
	var rs []proc.PageRange
	for _, e := range vmas {
		if rs, err = pmr.Populated(e.GetStart(), e.GetEnd(), false, rs[:0]); err != nil {
			return nil, fmt.Errorf("task %d: %w", pid, err)
		}
		first := len(runs)
		for _, r := range rs {
			if n := len(runs); n > first && runs[n-1].addr+runs[n-1].npages*pageSize == r.Start {
				runs[n-1].npages += (r.End - r.Start) / pageSize
				continue
			}
			runs = append(runs, pageRun{addr: r.Start, npages: (r.End - r.Start) / pageSize, unread: true})
		}
	}
	return runs, nil
}

// take write-protects p's memory and plans its pages (step 1 above),
// and starts its fault handler. It returns "" and the runs planned, or
// why the route does not fit p (nothing changed in p then).
//
// Preconditions: runs on the tracer thread; p is seized and planned
// lazily (p.lazy).
func (us *uffdSet) take(p, parent *dumpProc, path string) ([]pageRun, string, error) {
	start := time.Now()
	vmas, frozenVMAs, why := uffdEligible(p)
	if why != "" {
		return nil, why, nil
	}
	fd, err := takeUffd(p, p.leader().ctl, unix.O_CLOEXEC|unix.O_NONBLOCK)
	if errors.Is(err, unix.EPERM) {
		return nil, fmt.Sprintf("it may not make a userfaultfd for kernel faults: %v", err), nil
	}
	if err != nil {
		return nil, "", err
	}
	s := &uffdSnapshot{p: p, path: path, set: us, fd: fd, stop: make(chan struct{}), done: make(chan struct{}), saved: map[int][]byte{}}
	ok := false
	defer func() {
		if !ok {
			// Closing it clears whatever was protected.
			s.close()
		}
	}()
	// The plan comes after the remote call, which may have touched a
	// page of the stack: as the fork route plans after its fork.
	pp, err := openParentPages(p, parent)
	if err != nil {
		return nil, "", err
	}
	var runs, frozen []pageRun
	if pp != nil {
		// A child compares its page frames with its parent's: the
		// pagemap, 8 bytes a page.
		runs, err = collectPages(p.pid, vmas, nil, pp)
		if err == nil {
			frozen, err = collectPages(p.pid, frozenVMAs, p.lazy.only, pp)
		}
		pp.close()
	} else {
		runs, err = scanPages(p.pid, vmas)
		if err == nil {
			frozen, err = collectPages(p.pid, frozenVMAs, p.lazy.only, nil)
		}
	}
	if err != nil {
		return nil, "", err
	}
	for i := range frozen {
		frozen[i].noFork = true
	}
	var bytes uint64
	for _, r := range runs {
		bytes += r.npages * pageSize
	}
	if bytes < uffdMinBytes {
		return nil, uffdSmall, nil
	}
	planned := time.Now()
	feats := uint64(kernel.UFFD_FEATURE_PAGEFAULT_FLAG_WP | kernel.UFFD_FEATURE_EVENT_REMAP | kernel.UFFD_FEATURE_EVENT_REMOVE | kernel.UFFD_FEATURE_EVENT_UNMAP)
	if err := kernel.UffdAPI(fd, feats); err != nil {
		return nil, fmt.Sprintf("userfaultfd write protection: %v", err), nil
	}
	// Only the mappings that hold pages to save: a fault elsewhere is
	// none of ctcr's business.
	for _, e := range vmas {
		i := sort.Search(len(runs), func(i int) bool { return runs[i].addr >= e.GetStart() })
		if i == len(runs) || runs[i].addr >= e.GetEnd() {
			continue
		}
		if err := kernel.UffdRegisterWP(fd, e.GetStart(), e.GetEnd()-e.GetStart()); err != nil {
			return nil, fmt.Sprintf("register mapping %#x-%#x: %v", e.GetStart(), e.GetEnd(), err), nil
		}
		s.regs = append(s.regs, proc.PageRange{Start: e.GetStart(), End: e.GetEnd()})
	}
	registered := time.Now()
	for _, r := range s.regs {
		if err := kernel.UffdWriteProtect(fd, r.Start, r.End-r.Start, true); err != nil {
			return nil, fmt.Sprintf("write-protect mapping %#x-%#x: %v", r.Start, r.End, err), nil
		}
	}
	protected := time.Now()
	if s.mem, err = os.Open(fmt.Sprintf("/proc/%d/mem", p.pid)); err != nil {
		return nil, "", fmt.Errorf("task %d: %w", p.pid, err)
	}
	if len(frozen) > 0 {
		// Only the pages not left to a parent image.
		if s.frozen, err = saveNoFork(p.pid, frozen); err != nil {
			return nil, "", err
		}
		runs = append(runs, frozen...)
		slices.SortStableFunc(runs, func(a, b pageRun) int { return cmp.Compare(a.addr, b.addr) })
	}
	n := 0
	for _, r := range runs {
		if r.inParent || r.preCopied {
			continue // the parent's image has them
		}
		s.runs = append(s.runs, r)
		if r.noFork {
			s.first = append(s.first, -1)
			continue
		}
		s.first = append(s.first, n)
		n += int(r.npages)
	}
	s.state = make([]uint8, n)
	ok = true
	us.snaps = append(us.snaps, s)
	// Before anything runs that could write to the task's memory,
	// ctcr's tracer included.
	s.serving = true
	go s.serve()
	us.logf("task %d: write-protect snapshot: %d mappings protected, %d pages to copy after, %d runs copied now (%v: userfaultfd and plan %v, register %v, protect %v)",
		p.pid, len(s.regs), n, len(frozen), time.Since(start), planned.Sub(start), registered.Sub(planned), protected.Sub(registered))
	return runs, "", nil
}

// index returns the index in state of the page at addr, or -1 if the
// image does not hold it.
func (s *uffdSnapshot) index(addr uint64) int {
	i := sort.Search(len(s.runs), func(i int) bool { return s.runs[i].addr+s.runs[i].npages*pageSize > addr })
	if i == len(s.runs) || s.runs[i].addr > addr || s.first[i] < 0 {
		return -1
	}
	return s.first[i] + int((addr-s.runs[i].addr)/pageSize)
}

// serve is the fault handler (step 2 above), until stop.
func (s *uffdSnapshot) serve() {
	defer close(s.done)
	buf := make([]byte, 64*kernel.UffdMsgSize)
	pfd := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		if n, _ := unix.Poll(pfd, 50); n <= 0 {
			continue // timeout or EINTR: look at stop again
		}
		n, err := unix.Read(s.fd, buf)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			s.setTorn(fmt.Errorf("task %d: read its userfaultfd: %w", s.p.pid, err))
			return
		}
		for off := 0; off+kernel.UffdMsgSize <= n; off += kernel.UffdMsgSize {
			m := buf[off : off+kernel.UffdMsgSize]
			a, b, c := binary.LittleEndian.Uint64(m[8:]), binary.LittleEndian.Uint64(m[16:]), binary.LittleEndian.Uint64(m[24:])
			switch m[0] {
			case kernel.UFFD_EVENT_PAGEFAULT:
				s.fault(b &^ (pageSize - 1))
			case kernel.UFFD_EVENT_REMOVE:
				s.discarded(a, b, "madvise")
			case kernel.UFFD_EVENT_UNMAP:
				s.discarded(a, b, "munmap")
			case kernel.UFFD_EVENT_REMAP:
				s.discarded(a, a+c, "mremap")
			}
		}
	}
}

// fault serves a write fault at page addr: it saves the pages of addr's
// block that are not copied yet and releases the block, which wakes
// the writer. Past the budget it saves nothing and leaves the writer
// waiting for the bulk copier, unless addr is copied already.
func (s *uffdSnapshot) fault(addr uint64) {
	s.faults.Add(1)
	testKillInUffdFault(s.faults.Load())
	start, end := addr&^(uffdBlock-1), addr&^(uffdBlock-1)+uffdBlock
	for _, r := range s.regs {
		if r.Start <= addr && addr < r.End {
			start, end = max(start, r.Start), min(end, r.End)
			break
		}
	}
	s.mu.Lock()
	if s.set.held.Load() >= uffdSavedMax {
		start, end = addr, addr+pageSize
	}
	var need []int // indexes of the pages to save, by page of the block
	for a := start; a < end; a += pageSize {
		if i := s.index(a); i >= 0 && s.state[i] == pageUncopied {
			need = append(need, i)
		} else {
			need = append(need, -1)
		}
	}
	saving := false
	for _, i := range need {
		saving = saving || i >= 0
	}
	if saving && s.set.held.Load() >= uffdSavedMax {
		s.mu.Unlock()
		s.waited.Add(1)
		return // the copier's release wakes it
	}
	if saving {
		// Only the pages to save: reading a page the task never
		// touched would give it one.
		for k := 0; k < len(need); {
			if need[k] < 0 {
				k++
				continue
			}
			j := k
			for j < len(need) && need[j] >= 0 {
				j++
			}
			a := start + uint64(k)*pageSize
			data := make([]byte, (j-k)*pageSize)
			if n, err := s.mem.ReadAt(data, int64(a)); n < len(data) {
				// Gone from under the read: the task unmapped it
				// (its event says so too) or died.
				s.tornLocked(fmt.Errorf("task %d: read pages %#x-%#x on a write fault: %w", s.p.pid, a, a+uint64(len(data)), err))
				s.mu.Unlock()
				kernel.UffdWriteProtect(s.fd, start, end-start, false)
				return
			}
			for q := k; q < j; q++ {
				i := need[q]
				s.saved[i] = data[(q-k)*pageSize : (q-k+1)*pageSize : (q-k+1)*pageSize]
				s.state[i] = pageSaved
				s.set.held.Add(pageSize)
				s.savedAll.Add(1)
			}
			k = j
		}
	}
	s.mu.Unlock()
	// ENOENT: the mapping went meanwhile (its event tells).
	kernel.UffdWriteProtect(s.fd, start, end-start, false)
}

// discarded records that the task took [start, end) away: a failure if
// any page there is not copied yet.
func (s *uffdSnapshot) discarded(start, end uint64, how string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := sort.Search(len(s.runs), func(i int) bool { return s.runs[i].addr+s.runs[i].npages*pageSize > start })
	for ; i < len(s.runs) && s.runs[i].addr < end; i++ {
		r := s.runs[i]
		if s.first[i] < 0 {
			continue // copied while stopped
		}
		for a := max(r.addr, start); a < min(end, r.addr+r.npages*pageSize); a += pageSize {
			if s.state[s.first[i]+int((a-r.addr)/pageSize)] == pageUncopied {
				s.tornLocked(fmt.Errorf("task %d: %s of %#x-%#x took pages not copied yet (dump with CTCR_SNAPSHOT=fork): %w",
					s.p.pid, how, start, end, errSnapshotTorn))
				return
			}
		}
	}
}

func (s *uffdSnapshot) setTorn(err error) {
	s.mu.Lock()
	s.tornLocked(err)
	s.mu.Unlock()
}

// Preconditions: s.mu is held.
func (s *uffdSnapshot) tornLocked(err error) {
	if s.torn == nil {
		s.torn = err
	}
}

// copy writes s's pages image (step 3 above), while the tree runs.
func (s *uffdSnapshot) copy(pr *progress) error {
	sink, err := newPageSink(s.path)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			sink.abort()
		}
	}()
	var frozenOff int64
	for i, r := range s.runs {
		if err := Interrupted(); err != nil {
			return err
		}
		if s.first[i] < 0 {
			// Copied while stopped, into s.frozen, in run order.
			for pos, end := r.addr, r.addr+r.npages*pageSize; pos < end; {
				buf, err := sink.buffer()
				if err != nil {
					return err
				}
				k := min(end-pos, uint64(len(buf.b)))
				if _, err := s.frozen.ReadAt(buf.b[:k], frozenOff); err != nil {
					sink.release(buf)
					return fmt.Errorf("task %d: its shared pages saved at %#x: %w", s.p.pid, pos, err)
				}
				sink.submit(buf, int(k))
				pr.add(k)
				pos, frozenOff = pos+k, frozenOff+int64(k)
			}
			continue
		}
		for pos, end := r.addr, r.addr+r.npages*pageSize; pos < end; {
			buf, err := sink.buffer()
			if err != nil {
				return err
			}
			k := min(end-pos, uint64(len(buf.b)))
			n, rerr := s.mem.ReadAt(buf.b[:k], int64(pos))
			s.mu.Lock()
			torn := s.torn
			if torn == nil && uint64(n) < k {
				torn = fmt.Errorf("task %d: read pages %#x-%#x: %w", s.p.pid, pos, pos+k, rerr)
			}
			if torn == nil {
				idx := s.first[i] + int((pos-r.addr)/pageSize)
				for j := 0; j < int(k/pageSize); j++ {
					if s.state[idx+j] == pageSaved {
						copy(buf.b[j*pageSize:(j+1)*pageSize], s.saved[idx+j])
						delete(s.saved, idx+j)
						s.set.held.Add(-pageSize)
					}
					s.state[idx+j] = pageCopied
				}
			}
			s.mu.Unlock()
			if torn != nil {
				sink.release(buf)
				return torn
			}
			sink.submit(buf, int(k))
			// Wakes whoever waits there. ENOENT: the mapping went
			// meanwhile, after the read (its event tells).
			kernel.UffdWriteProtect(s.fd, pos, k, false)
			pr.add(k)
			pos += k
		}
	}
	ok = true
	if err := sink.close(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.torn
}

// close stops the handler and closes the userfaultfd: the kernel clears
// every protection left and wakes every waiting thread.
func (s *uffdSnapshot) close() {
	if s.fd < 0 {
		return
	}
	if s.serving {
		close(s.stop)
		<-s.done
	}
	unix.Close(s.fd)
	s.fd = -1
	if s.mem != nil {
		s.mem.Close()
	}
	if s.frozen != nil {
		s.frozen.Close()
	}
	s.mu.Lock()
	s.saved = nil
	s.mu.Unlock()
}

// snapsOrNil returns the snapshots of us, which may be nil.
func (us *uffdSet) snapsOrNil() []*uffdSnapshot {
	if us == nil {
		return nil
	}
	return us.snaps
}

// writeMemImages writes the mm and pagemap images of every snapshot's
// process, once the tree runs: its VmFlags, unless read while it was
// stopped (lazyMem), are read now. It returns how many it wrote.
func (us *uffdSet) writeMemImages(stage *images.Staging) (int, error) {
	// writeImages kept them while the tree was frozen, and they were
	// written once it ran (pendingImages): written again, over them.
	w := func(k images.Kind, name string, msgs ...proto.Message) error {
		if err := images.ReplaceFile(stage.Path(name), k, msgs...); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		return nil
	}
	for _, s := range us.snapsOrNil() {
		p := s.p
		if p.lazy != nil && p.lazy.vmFlags == nil {
			f, err := proc.ReadVmFlags(p.pid)
			if err != nil {
				return 0, fmt.Errorf("task %d exited before its write-protect snapshot was copied (dump with CTCR_SNAPSHOT=fork): %w", p.pid, err)
			}
			for _, e := range p.mm.Vmas {
				adviseVMA(e, f[e.GetStart()])
			}
		}
		if err := p.writeMemImages(w); err != nil {
			return 0, err
		}
	}
	return len(us.snapsOrNil()), nil
}

// closeAll closes every snapshot.
func (us *uffdSet) closeAll() {
	for _, s := range us.snapsOrNil() {
		s.close()
	}
}

// copyAll writes the pages image of every snapshot, then closes it,
// and logs what the tree's writes cost.
func (us *uffdSet) copyAll(pr *progress) error {
	if len(us.snapsOrNil()) == 0 {
		return nil
	}
	testKillInSnapshotCopy()
	start := time.Now()
	for _, s := range us.snaps {
		testAwaitUffdFault(s)
		err := s.copy(pr)
		s.close()
		if err != nil {
			return err
		}
		us.logf("task %d: write-protect snapshot copied; %d write faults, %d pages saved by the handler, %d faults left to wait for the copier",
			s.p.pid, s.faults.Load(), s.savedAll.Load(), s.waited.Load())
	}
	us.logf("%d write-protect snapshots copied in %v", len(us.snaps), time.Since(start))
	return nil
}

// testAwaitUffdFault belongs to the hook below: the copier waits, up
// to 30 s, for the handler to reach the fault it dies on. On a loaded
// machine the writer may otherwise get no CPU before the whole copy is
// done, and the dump ends with no kill to test.
func testAwaitUffdFault(s *uffdSnapshot) {
	v := os.Getenv("CTCR_TEST_KILL_IN_UFFD_FAULT")
	if v == "" {
		return
	}
	want, _ := strconv.ParseInt(v, 10, 64)
	for deadline := time.Now().Add(30 * time.Second); s.faults.Load() < want && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
}

// testKillInUffdFault is a test hook: CTCR_TEST_KILL_IN_UFFD_FAULT=N
// makes ctcr kill itself with SIGKILL on the Nth write fault a handler
// serves, before it releases the page: the writer waits in the fault
// when ctcr dies, and must write on.
func testKillInUffdFault(n int64) {
	v := os.Getenv("CTCR_TEST_KILL_IN_UFFD_FAULT")
	if v == "" {
		return
	}
	if want, _ := strconv.ParseInt(v, 10, 64); want == n {
		unix.Kill(os.Getpid(), unix.SIGKILL)
		time.Sleep(time.Minute) // the signal is on its way
	}
}
