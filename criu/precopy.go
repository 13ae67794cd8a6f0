package criu

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/vma"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/kernel"
	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/criu/ptrace"
)

// Pre-copy: the memory of a running tree is copied ahead of its dump, so
// that the dump, with the tree stopped, copies only the pages written
// since.
//
// Written pages are told apart by userfaultfd write-protection in async
// mode (Linux 6.7), which needs no soft-dirty bit: the tree's private
// mappings are registered and write-protected, a write only clears the
// page's protection bit (the kernel resolves the fault itself; the task
// never waits for ctcr), and PAGEMAP_SCAN lists the pages whose bit is
// gone. A userfaultfd belongs to the mm of the task that makes it, so
// each task makes one in a remote syscall; ctcr takes it with
// pidfd_getfd and the task's own descriptor is closed at once.
//
// The pre-copied pages are a parent image in CRIU's sense: the dump's
// DIR/pre-copy holds pagemap-PID.img and pages-N.img, DIR/parent links to
// it, and the dump's own pagemap marks the pages it left there PE_PARENT.

// pePreCopied is CRIU's PE_PARENT: the pages are in the parent image.
const pePreCopied = 1 << 0

// preCopyDir is the directory of a checkpoint holding its pre-copied
// pages, and parentLink the link CRIU follows to its parent image.
const (
	preCopyDir = "pre-copy"
	parentLink = "parent"
)

// Pre-copy rounds: after the first (every page), a round copies again
// the pages written during the one before, until few are (less than
// 1/preCopyConverged of the first round's bytes), a round no longer
// copies much less than the one before (the tree writes those pages all
// the time), or preCopyMaxRounds rounds are done. Each round shortens
// what the dump copies frozen.
const (
	preCopyMaxRounds = 4
	preCopyConverged = 32
)

// PreCopyOptions says which tree to pre-copy, into which checkpoint.
type PreCopyOptions struct {
	Pid int
	Dir string // the images directory the dump will write
	Log func(format string, args ...any)
	// Progress, if set, hears the bytes copied so far.
	Progress func(bytes uint64)
}

// PreCopy is the memory of a tree copied while it ran, and the tracking
// of what it writes since. Pass it to Dump in DumpOptions.PreCopy, and
// Close it once the dump is done (or failed).
type PreCopy struct {
	dir   string // staging directory of the pages, inside the images dir
	procs map[int]*preProc
	// prevDir, for a dump or pre-dump on top of a pre-dump, is where
	// that pre-dump is, and link what the parent link says (CRIU's
	// --prev-images-dir: relative to the images dir, or absolute); dir
	// is then "".
	prevDir, link string
	order         []*preProc // the processes to pre-dump, parents first
	logf          func(format string, args ...any)
	taken         bool // dir was moved into a dump's staging
	Bytes         uint64
	Rounds        int
	Time          time.Duration
}

// preProc is the pre-copy of one process.
type preProc struct {
	pid   int
	start uint64 // its start time
	index int    // its pages are pages-<index>.img
	uffd  int    // ctcr's descriptor of the task's userfaultfd, or -1
	vmas  []*vma.VmaEntry
	// tracked are the mappings registered for tracking, by start.
	// pages are the pagemap entries of what was copied, in the pages
	// file's order, and offs their offsets in it.
	pages []*pagemap.PagemapEntry
	offs  []uint64
	bytes uint64
	// stale are pre-copied pages that could not be copied again after a
	// write: never to be taken from the pre-copy.
	stale []proc.PageRange
	// covered, if set, are the pages the parent image holds (an earlier
	// pre-dump's); otherwise those of pages.
	covered []proc.PageRange
	vpid    int  // its id in the images
	fresh   bool // its userfaultfd was made by this ctcr, not taken from a tracker
}

// StartPreCopy arms write tracking in every process of the tree under
// o.Pid and copies their memory while they run. It stops each task only
// for the moment of a remote syscall.
func StartPreCopy(o PreCopyOptions) (*PreCopy, error) {
	Begin()
	defer End()
	start := time.Now()
	logf := func(format string, args ...any) {
		if o.Log != nil {
			o.Log(format, args...)
		}
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", o.Pid)); err != nil || o.Pid <= 0 {
		return nil, fmt.Errorf("task %d: %w", o.Pid, ErrNoTask)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("images: creating checkpoint directory: %w", err)
	}
	images.RemoveStalePartials(o.Dir)
	dir, err := images.MkdirPartial(o.Dir, "pre-copy-")
	if err != nil {
		return nil, fmt.Errorf("pre-copy directory: %w", err)
	}
	pc := &PreCopy{dir: dir, procs: map[int]*preProc{}, logf: logf}
	ok := false
	defer func() {
		if !ok {
			pc.Close()
		}
	}()
	if err := pc.arm(o.Pid); err != nil {
		return nil, err
	}
	pr := newProgress(o.Progress)
	defer pr.done()
	pids := make([]int, 0, len(pc.procs))
	for pid := range pc.procs {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	for _, pid := range pids {
		if err := Interrupted(); err != nil {
			return nil, err
		}
		if err := pc.procs[pid].first(dir, pr); err != nil {
			if errors.Is(err, ErrUnsupported) || diskError(err) {
				return nil, err
			}
			logf("pre-copy: task %d is dumped whole: %v", pid, err)
			pc.drop(pid)
			continue
		}
		p := pc.procs[pid]
		logf("pre-copy: task %d: %d mappings tracked, %d bytes copied", pid, len(p.vmas), p.bytes)
		pc.Bytes += p.bytes
	}
	pc.Rounds = 1
	first, prev := pc.Bytes, pc.Bytes
	for pc.Rounds < preCopyMaxRounds {
		if err := Interrupted(); err != nil {
			return nil, err
		}
		var again uint64
		for _, pid := range pids {
			p := pc.procs[pid]
			if p == nil {
				continue
			}
			n, err := p.again(dir, pr)
			if diskError(err) {
				return nil, err
			}
			if err != nil {
				logf("pre-copy: task %d is dumped whole: %v", pid, err)
				pc.drop(pid)
				continue
			}
			again += n
		}
		pc.Rounds++
		pc.Bytes += again
		logf("pre-copy round %d: %d bytes written since the round before", pc.Rounds, again)
		if again*preCopyConverged <= first || again*4 >= prev*3 {
			break
		}
		prev = again
	}
	// On disk before the tree is frozen: the dump's commit syncs only
	// what it wrote itself.
	for _, p := range pc.procs {
		path := filepath.Join(dir, images.Pages.FileName(p.index))
		if err := syncFile(path); err != nil {
			return nil, err
		}
		// Checksummed now, while the tree runs, not at the commit of
		// the dump, while it is frozen.
		if err := images.RecordFileSum(path); err != nil {
			return nil, err
		}
	}
	pc.Time = time.Since(start)
	logf("pre-copied %d bytes of %d processes in %d rounds (%v)", pc.Bytes, len(pc.procs), pc.Rounds, pc.Time)
	ok = true
	return pc, nil
}

// arm seizes the tree for a moment: each process makes a userfaultfd,
// which ctcr takes, and runs on.
func (pc *PreCopy) arm(root int) error {
	tr := ptrace.NewTracer()
	defer tr.Close()
	d := &dumpTree{byPid: map[int]*dumpProc{}, opts: &DumpOptions{Log: pc.logf}}
	err := tr.Do(func() error {
		if err := d.seize(root); err != nil {
			return err
		}
		for i, p := range d.procs {
			if p.zombie {
				continue
			}
			fd, err := makeUffd(p)
			if err != nil {
				if errors.Is(err, errTaskGone) {
					return err
				}
				pc.logf("pre-copy: task %d is dumped whole: %v", p.pid, err)
				continue
			}
			pc.procs[p.pid] = &preProc{pid: p.pid, index: i + 1, uffd: fd}
		}
		return nil
	})
	if rerr := tr.Do(d.resume); err == nil && rerr != nil {
		err = fmt.Errorf("pre-copy: let the tree run on: %w", rerr)
	}
	if err != nil {
		return err
	}
	for pid, p := range pc.procs {
		if err := kernel.UffdAPI(p.uffd, kernel.UFFD_FEATURE_WP_ASYNC); err != nil {
			if errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("pre-copy needs userfaultfd write-protection in async mode (Linux 6.7): %w", ErrUnsupported)
			}
			pc.logf("pre-copy: task %d is dumped whole: userfaultfd API: %v", pid, err)
			pc.drop(pid)
		}
	}
	return nil
}

// errTaskGone says a task ended while the pre-copy held it.
var errTaskGone = errors.New("task ended")

// makeUffd has the seized process p make a userfaultfd, takes it into
// ctcr and closes the task's own. The task's registers and signal mask
// are kept in its leader's thread for resume to put back.
//
// Preconditions: runs on the tracer thread; p is seized.
func makeUffd(p *dumpProc) (int, error) {
	maps, err := proc.Maps(p.pid)
	if err != nil {
		return -1, fmt.Errorf("task %d: %w: %w", p.pid, errTaskGone, err)
	}
	mem, err := ptrace.OpenMem(p.pid)
	if err != nil {
		return -1, fmt.Errorf("task %d: %w: %w", p.pid, errTaskGone, err)
	}
	ip, gadget, ok := findLoneInsn(mem, maps)
	if !ok {
		mem.Close()
		return -1, fmt.Errorf("task %d has no vDSO to run remote syscalls from", p.pid)
	}
	th := p.leader()
	if th.regs, err = ptrace.GetRegs(th.tid); err != nil {
		mem.Close()
		return -1, err
	}
	if th.xstate, err = ptrace.GetXState(th.tid); err != nil {
		mem.Close()
		return -1, err
	}
	// In sigsuspend and the like the kernel reports the mask the syscall
	// puts back, the thread's own (Linux 5.2+), which resume puts back.
	if th.sigmask, err = ptrace.GetSigmask(th.tid); err != nil {
		mem.Close()
		return -1, err
	}
	// Own: each single-stepped call gives the thread its registers and
	// mask back before the next (ptrace.OwnState), so that a ctcr dying
	// here leaves it running, at worst with an fd it never opened.
	sig, err := p.stopSignal()
	if err != nil {
		mem.Close()
		return -1, err
	}
	tgid, vtid, err := ownIDs(p.pid, th.tid)
	if err != nil {
		mem.Close()
		return -1, err
	}
	th.ctl = &taskCtl{tid: th.tid, mem: mem, xstate: th.xstate, r: &ptrace.Remote{Tid: th.tid, IP: ip, Base: th.regs,
		Own: &ptrace.OwnState{Mask: th.sigmask, Sig: sig, TgkillArgs: [2]uint64{uint64(tgid), uint64(vtid)}}}}
	mainRsp := uint64(0)
	if th.tid == p.pid {
		mainRsp = th.regs.Rsp
	}
	th.ctl.lone = findLoneSpot(mem, maps, gadget, mainRsp)
	return takeUffd(p, th.ctl, unix.O_CLOEXEC|unix.O_NONBLOCK|kernel.UFFD_USER_MODE_ONLY)
}

// takeUffd has the seized process p make a userfaultfd with flags, by a
// lone call through ctl (its leader's), takes it into ctcr (non-blocking,
// close-on-exec) and closes the task's own: from then on the only
// descriptor of it is ctcr's, so a ctcr that dies takes it away.
//
// Preconditions: runs on the tracer thread; p is seized.
func takeUffd(p *dumpProc, ctl *taskCtl, flags uint64) (int, error) {
	fd, callErr := ctl.call(unix.SYS_USERFAULTFD, flags)
	if callErr != nil {
		if errors.Is(callErr, ptrace.ErrExited) {
			return -1, fmt.Errorf("task %d: %w", p.pid, errTaskGone)
		}
		return -1, fmt.Errorf("task %d: userfaultfd: %w", p.pid, callErr)
	}
	pidfd, err := unix.PidfdOpen(p.pid, 0)
	if err == nil {
		var ours int
		ours, err = unix.PidfdGetfd(pidfd, int(fd), 0)
		unix.Close(pidfd)
		if err == nil {
			unix.CloseOnExec(ours)
		}
		if _, cerr := ctl.call(unix.SYS_CLOSE, fd); cerr != nil && err == nil {
			unix.Close(ours)
			err = cerr
		}
		if err == nil {
			return ours, nil
		}
	}
	ctl.call(unix.SYS_CLOSE, fd)
	return -1, fmt.Errorf("task %d: take its userfaultfd: %w", p.pid, err)
}

// first registers p's private mappings for tracking, write-protects
// them and copies every page the dump would, into pages-<index>.img.
func (p *preProc) first(dir string, pr *progress) error {
	if err := p.register(); err != nil {
		return err
	}
	// Which pages to copy is read before the protection: a protected
	// page the task never touched reads as swapped in the pagemap.
	runs, err := collectPages(p.pid, p.vmas, nil, nil)
	if err != nil {
		return err
	}
	pmr, err := proc.OpenPagemap(p.pid)
	if err != nil {
		return err
	}
	defer pmr.Close()
	// From here on a write shows: what is copied next is at least as
	// new as the protection. A mapping the task replaced meanwhile is
	// left out.
	_, protected, err := p.written(pmr, true)
	if err != nil {
		return err
	}
	// Nothing is copied yet: what a failed scan lost is copied after
	// the retry's protection anyway.
	p.stale = nil
	return p.copyFirst(filepath.Join(dir, images.Pages.FileName(p.index)), clip(runs, protected), pr)
}

// clip returns the parts of runs inside ranges (sorted, disjoint).
func clip(runs []pageRun, ranges []proc.PageRange) []pageRun {
	var out []pageRun
	j := 0
	for _, r := range runs {
		s, end := r.addr, r.addr+r.npages*pageSize
		for j < len(ranges) && ranges[j].End <= s {
			j++
		}
		for k := j; k < len(ranges) && ranges[k].Start < end; k++ {
			a, b := max(s, ranges[k].Start), min(end, ranges[k].End)
			q := r
			q.addr, q.npages = a, (b-a)/pageSize
			out = append(out, q)
		}
	}
	return out
}

// copyFirst copies the pages of runs into p's pages file at path.
func (p *preProc) copyFirst(path string, runs []pageRun, pr *progress) error {
	var err error
	p.pages, p.offs, p.bytes, err = copyRunning(p.pid, runs, path, pr)
	return err
}

// copyRunning copies the pages of runs of a running task into the pages
// file at path, and returns the pagemap entries (PE_PRESENT) of what it
// copied, their offsets in the file and its size. It reads through
// /proc/PID/mem: that never pins a page (which would break copy-on-write
// sharing) and reads any protection. A run the task unmaps meanwhile is
// cut where the read stopped, and read on after the page that failed.
// The pages go through ctcr's page buffers (pageSink), never through a
// mapping of the file; a write error (a full disk) stops it at once.
func copyRunning(pid int, runs []pageRun, path string, pr *progress) ([]*pagemap.PagemapEntry, []uint64, uint64, error) {
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return nil, nil, 0, err
	}
	defer mem.Close()
	s, err := newPageSink(path)
	if err != nil {
		return nil, nil, 0, err
	}
	ok := false
	defer func() {
		if !ok {
			s.abort()
		}
	}()
	var entries []*pagemap.PagemapEntry
	var offs []uint64
	var off uint64 // the file holds only what was read, in order
	for _, r := range runs {
		for pos, end := r.addr, r.addr+r.npages*pageSize; pos < end; {
			buf, err := s.buffer()
			if err != nil {
				return nil, nil, 0, err
			}
			k := min(end-pos, uint64(len(buf.b)))
			n, _ := mem.ReadAt(buf.b[:k], int64(pos))
			got := uint64(n) / pageSize * pageSize
			if got == 0 {
				s.release(buf)
			} else {
				s.submit(buf, int(got))
				if i := len(entries) - 1; i >= 0 && entries[i].GetVaddr()+uint64(entries[i].GetNrPages())*pageSize == pos && entries[i].GetNrPages() < 1<<30 {
					entries[i].NrPages = proto.Uint32(entries[i].GetNrPages() + uint32(got/pageSize))
				} else {
					entries = append(entries, &pagemap.PagemapEntry{Vaddr: proto.Uint64(pos), NrPages: proto.Uint32(uint32(got / pageSize)), Flags: proto.Uint32(pePresent)})
					offs = append(offs, off)
				}
				off += got
				pr.add(got)
			}
			pos += got
			if got < k {
				pos += pageSize // unmapped meanwhile: read on after it
			}
		}
	}
	ok = true
	if err := s.close(); err != nil {
		return nil, nil, 0, err
	}
	return entries, offs, off, nil
}

// register registers p's private mappings for tracking: all of them,
// those made since an earlier registration too (registering a mapping
// again with the same userfaultfd changes nothing).
//
// A mapping registered here for the first time counts as written whole
// (stale) until the next scan protects it: mremap moves pages with
// their page table entries into a new, unregistered mapping, and their
// write-protect bits may come along, so once registered they would read
// as not written since their last copy, which was made at another
// address (the pieces dirtier swaps came back from the parent image).
func (p *preProc) register() error {
	p.vmas = nil
	pmr, err := proc.OpenPagemap(p.pid)
	if err != nil {
		return err
	}
	defer pmr.Close()
	// A mapping the task unmaps or replaces meanwhile fails to register
	// (the range has a hole, or is another mapping): read the mappings
	// again and try those that failed once more, twice.
	failed := func(*vma.VmaEntry) bool { return true }
	for try := 0; try < 3; try++ {
		vmas, err := privateVMAs(p.pid)
		if err != nil {
			return err
		}
		var again []*vma.VmaEntry
		for _, e := range vmas {
			if !failed(e) || p.trackedAt(e.GetStart()) != nil {
				continue
			}
			was, werr := pmr.WPAsyncRegistered(e.GetStart(), e.GetEnd())
			if err := kernel.UffdRegisterWP(p.uffd, e.GetStart(), e.GetEnd()-e.GetStart()); err != nil {
				again = append(again, e)
				continue
			}
			if werr != nil || !was {
				// Its pages are copied whole by this image. Anonymous
				// ones are protected first, every page, whatever state
				// its entry is in: the scan that protects written pages
				// leaves alone an entry that reads as protected, and
				// pieces dirtier moved with mremap and wrote while
				// unregistered lost later writes (TestPreDumpCompress,
				// about 1 run in 80 under load). A file mapping is left
				// to the scan: protecting its untouched pages would give
				// them markers that read as swapped pages.
				if e.GetStatus()&vmaAnonPrivate != 0 {
					if err := kernel.UffdWriteProtect(p.uffd, e.GetStart(), e.GetEnd()-e.GetStart(), true); err != nil {
						again = append(again, e)
						continue
					}
				}
				p.stale = append(p.stale, proc.PageRange{Start: e.GetStart(), End: e.GetEnd()})
			}
			p.vmas = append(p.vmas, e)
			sortVMAs(p.vmas)
		}
		if len(again) == 0 {
			break
		}
		// Not trackable for good (another userfaultfd has it): copied
		// at the dump.
		failed = func(e *vma.VmaEntry) bool {
			for _, a := range again {
				if e.GetStart() < a.GetEnd() && a.GetStart() < e.GetEnd() {
					return true
				}
			}
			return false
		}
	}
	return nil
}

// privateVMAs returns the task's private mappings whose pages a dump
// copies, in address order: shared memory is copied at the dump.
func privateVMAs(pid int) ([]*vma.VmaEntry, error) {
	maps, err := proc.Maps(pid)
	if err != nil {
		return nil, err
	}
	files := newFileTable()
	var out []*vma.VmaEntry
	for _, m := range maps {
		if m.Shared {
			continue
		}
		e, err := classifyVMA(pid, m, nil, files) // private mappings only: VmFlags do not matter
		// An AIO ring's pages are the kernel's to write: copied at the dump.
		if err != nil || e == nil || vmaSpecial(e) || e.GetStatus()&(vmaAnonPrivate|vmaFilePrivate) == 0 || e.GetStatus()&vmaAreaAioring != 0 {
			continue
		}
		out = append(out, e)
	}
	sortVMAs(out)
	return out, nil
}

// again copies anew, in place, the pre-copied pages written since the
// round before, and protects them again. It returns the bytes copied.
func (p *preProc) again(dir string, pr *progress) (uint64, error) {
	pmr, err := proc.OpenPagemap(p.pid)
	if err != nil {
		return 0, err
	}
	defer pmr.Close()
	written, _, err := p.written(pmr, true)
	if err != nil {
		return 0, err
	}
	if len(written) == 0 || len(p.pages) == 0 {
		return 0, nil
	}
	f, err := os.OpenFile(filepath.Join(dir, images.Pages.FileName(p.index)), os.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	// Written in place: the checksum of the first copy no longer holds.
	images.ForgetSum(f)
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", p.pid))
	if err != nil {
		return 0, err
	}
	defer mem.Close()
	var n uint64
	buf := make([]byte, 1<<20)
	err = p.overlap(written, func(addr, size, off uint64) error {
		for size > 0 {
			k := min(size, uint64(len(buf)))
			got, _ := mem.ReadAt(buf[:k], int64(addr))
			if uint64(got) < k {
				// Unmapped meanwhile: never to be taken from the
				// pre-copy, whatever maps there next.
				p.stale = append(p.stale, proc.PageRange{Start: addr, End: addr + size})
				got = int(uint64(got) / pageSize * pageSize)
				k = uint64(got)
				if k == 0 {
					return nil
				}
			}
			if err := pwriteAll(f, buf[:k], int64(off)); err != nil {
				return images.WriteError(dir, filepath.Base(f.Name()), err)
			}
			pr.add(k)
			n += k
			addr, off, size = addr+k, off+k, size-k
		}
		return nil
	})
	return n, err
}

// written returns the pages written since the last protection (sorted,
// disjoint) in the task's mappings that are still tracked, and those
// mappings; protect protects the pages again. A mapping is still tracked
// if it lies in one registered at the pre-copy, at the same file offset,
// and is still registered (a new mapping made at the same place is not).
//
// A scan fails if the task changes the mapping meanwhile (the range is
// then another mapping, not registered): it is tried again, twice, on the
// mappings read anew. With protect, the pages of a failed scan are stale
// for good: the scan may have protected some of them again before it
// failed, and what it found there is lost.
func (p *preProc) written(pmr *proc.PagemapReader, protect bool) (written, tracked []proc.PageRange, err error) {
	var retry []proc.PageRange // the ranges whose scan failed; nil: all
	for try := 0; try < 3; try++ {
		maps, err := proc.Maps(p.pid)
		if err != nil {
			return nil, nil, err
		}
		var failed []proc.PageRange
		for _, m := range maps {
			if retry != nil && len(intersect([]proc.PageRange{{Start: m.Start, End: m.End}}, retry)) == 0 {
				continue
			}
			t := p.trackedAt(m.Start)
			if t == nil || m.End > t.GetEnd() || m.Shared {
				continue
			}
			if m.Inode != 0 && m.Offset != t.GetPgoff()+(m.Start-t.GetStart()) {
				continue
			}
			r := proc.PageRange{Start: m.Start, End: m.End}
			w, err := pmr.Written(m.Start, m.End, protect, nil)
			if err != nil {
				failed = append(failed, r)
				if protect {
					p.stale = append(p.stale, r)
				}
				continue
			}
			tracked = append(tracked, r)
			written = append(written, w...)
		}
		if len(failed) == 0 {
			break
		}
		retry = failed
	}
	return normalize(written), normalize(tracked), nil
}

// trackedAt returns the registered mapping holding addr, or nil.
func (p *preProc) trackedAt(addr uint64) *vma.VmaEntry {
	i := sort.Search(len(p.vmas), func(i int) bool { return p.vmas[i].GetEnd() > addr })
	if i < len(p.vmas) && p.vmas[i].GetStart() <= addr {
		return p.vmas[i]
	}
	return nil
}

// overlap calls fn for each part of the pre-copied pages that lies in
// ranges (sorted, disjoint), with its address, size and offset in the
// pages file.
func (p *preProc) overlap(ranges []proc.PageRange, fn func(addr, size, off uint64) error) error {
	i := 0
	for k, e := range p.pages {
		s := e.GetVaddr()
		end := s + uint64(e.GetNrPages())*pageSize
		for i < len(ranges) && ranges[i].End <= s {
			i++
		}
		for j := i; j < len(ranges) && ranges[j].Start < end; j++ {
			a, b := max(s, ranges[j].Start), min(end, ranges[j].End)
			if a < b {
				if err := fn(a, b-a, p.offs[k]+(a-s)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// clean ends p's tracking, with the task stopped for its dump, and
// returns the runs of pages the parent image holds and the task has not
// written since (sorted, disjoint), in the mappings still tracked.
func (p *preProc) clean() ([]proc.PageRange, error) {
	defer p.release()
	pmr, err := proc.OpenPagemap(p.pid)
	if err != nil {
		return nil, err
	}
	defer pmr.Close()
	written, tracked, err := p.written(pmr, false)
	if err != nil {
		return nil, err
	}
	written = normalize(append(written, p.stale...))
	return intersect(subtract(tracked, written), p.coveredRanges()), nil
}

// coveredRanges returns the pages the parent image holds for p: what
// the pre-copy copied, or what an earlier pre-dump's pagemap lists.
func (p *preProc) coveredRanges() []proc.PageRange {
	if p.covered != nil {
		return p.covered
	}
	var out []proc.PageRange
	for _, e := range p.pages {
		out = append(out, proc.PageRange{Start: e.GetVaddr(), End: e.GetVaddr() + uint64(e.GetNrPages())*pageSize})
	}
	return normalize(out)
}

// subtract returns the parts of a not in b; both sorted and disjoint.
func subtract(a, b []proc.PageRange) []proc.PageRange {
	var out []proc.PageRange
	j := 0
	for _, r := range a {
		pos := r.Start
		for j < len(b) && b[j].End <= pos {
			j++
		}
		for k := j; k < len(b) && b[k].Start < r.End; k++ {
			if b[k].Start > pos {
				out = append(out, proc.PageRange{Start: pos, End: b[k].Start})
			}
			pos = max(pos, b[k].End)
		}
		if pos < r.End {
			out = append(out, proc.PageRange{Start: pos, End: r.End})
		}
	}
	return out
}

// intersect returns the parts common to a and b; both sorted and
// disjoint.
func intersect(a, b []proc.PageRange) []proc.PageRange {
	var out []proc.PageRange
	j := 0
	for _, r := range a {
		for j < len(b) && b[j].End <= r.Start {
			j++
		}
		for k := j; k < len(b) && b[k].Start < r.End; k++ {
			if s, e := max(r.Start, b[k].Start), min(r.End, b[k].End); s < e {
				out = append(out, proc.PageRange{Start: s, End: e})
			}
		}
	}
	return out
}

// normalize sorts ranges and merges those that overlap or touch.
func normalize(ranges []proc.PageRange) []proc.PageRange {
	sort.Slice(ranges, func(i, j int) bool { return ranges[i].Start < ranges[j].Start })
	var out []proc.PageRange
	for _, r := range ranges {
		if n := len(out); n > 0 && r.Start <= out[n-1].End {
			out[n-1].End = max(out[n-1].End, r.End)
			continue
		}
		out = append(out, r)
	}
	return out
}

// release ends the tracking of p: its mappings are unregistered (which
// clears the protection bits) and the userfaultfd closed.
func (p *preProc) release() {
	if p.uffd < 0 {
		return
	}
	for _, e := range p.vmas {
		kernel.UffdUnregister(p.uffd, e.GetStart(), e.GetEnd()-e.GetStart())
	}
	unix.Close(p.uffd)
	p.uffd = -1
}

// pagemapImage returns the pagemap image of p's pre-copied pages.
func (p *preProc) pagemapImage() []proto.Message {
	msgs := []proto.Message{&pagemap.PagemapHead{PagesId: proto.Uint32(uint32(p.index))}}
	for _, e := range p.pages {
		msgs = append(msgs, e)
	}
	return msgs
}

// drop forgets the pre-copy of pid: it is dumped whole.
func (pc *PreCopy) drop(pid int) {
	if p := pc.procs[pid]; p != nil {
		p.release()
		if pc.dir != "" {
			os.Remove(filepath.Join(pc.dir, images.Pages.FileName(p.index)))
		}
		delete(pc.procs, pid)
	}
}

// Close ends the tracking of every task still tracked and removes the
// pre-copied pages unless a dump took them.
func (pc *PreCopy) Close() error {
	if pc == nil {
		return nil
	}
	for _, p := range pc.procs {
		p.release()
	}
	if pc.taken || pc.dir == "" {
		return nil
	}
	return os.RemoveAll(pc.dir)
}

// splitPreCopied marks the parts of runs that lie in clean (sorted,
// disjoint) as pre-copied: the dump leaves their pages in the parent
// image.
func splitPreCopied(runs []pageRun, clean []proc.PageRange) []pageRun {
	if len(clean) == 0 {
		return runs
	}
	var out []pageRun
	j := 0
	for _, r := range runs {
		if r.inParent {
			out = append(out, r)
			continue
		}
		s, end := r.addr, r.addr+r.npages*pageSize
		for j < len(clean) && clean[j].End <= s {
			j++
		}
		pos := s
		piece := func(a, b uint64, pre bool) {
			if a < b {
				q := r
				q.addr, q.npages, q.preCopied = a, (b-a)/pageSize, pre
				out = append(out, q)
			}
		}
		for k := j; k < len(clean) && clean[k].Start < end; k++ {
			a, b := max(pos, clean[k].Start), min(end, clean[k].End)
			piece(pos, a, false)
			piece(a, b, true)
			pos = b
		}
		piece(pos, end, false)
	}
	return out
}

// of returns the pre-copy of process pid, or nil.
func (pc *PreCopy) of(pid int) *preProc {
	if pc == nil {
		return nil
	}
	return pc.procs[pid]
}

// stage moves the pre-copied pages into the dump's staging directory as
// its parent image, with a pagemap image for each process (named by its
// id in the images, known only now).
func (pc *PreCopy) stage(stage *images.Staging, procs []*dumpProc) error {
	if pc == nil {
		return nil
	}
	if pc.prevDir != "" {
		// On top of a pre-dump: only the link to it.
		if err := os.Symlink(pc.link, stage.Path(parentLink)); err != nil {
			return fmt.Errorf("parent image: %w", err)
		}
		return nil
	}
	if len(pc.procs) == 0 {
		return nil
	}
	dir := stage.Path(preCopyDir)
	if err := os.Rename(pc.dir, dir); err != nil {
		return fmt.Errorf("pre-copy: %w", err)
	}
	pc.taken = true
	used := map[int]bool{}
	for _, p := range procs {
		pre := pc.procs[p.pid]
		if pre == nil || p.zombie {
			continue
		}
		path := filepath.Join(dir, images.Pagemap.FileName(p.vpid))
		if err := images.WriteFile(path, images.Pagemap, pre.pagemapImage()...); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		if err := syncFile(path); err != nil {
			return err
		}
		used[pre.index] = true
	}
	// Pages of processes that left the tree since are of no use.
	for _, pre := range pc.procs {
		if !used[pre.index] {
			os.Remove(filepath.Join(dir, images.Pages.FileName(pre.index)))
		}
	}
	if err := os.Symlink(preCopyDir, stage.Path(parentLink)); err != nil {
		return fmt.Errorf("pre-copy: %w", err)
	}
	return nil
}

// syncFile flushes the file at path to disk.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}

// vmaRange is a VMA entry with only bounds and offset: what tracking
// needs of a mapping.
func vmaRange(start, end, pgoff uint64) *vma.VmaEntry {
	return &vma.VmaEntry{Start: proto.Uint64(start), End: proto.Uint64(end), Pgoff: proto.Uint64(pgoff)}
}
