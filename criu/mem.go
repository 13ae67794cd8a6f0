package criu

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"sort"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/vma"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/proc"
)

// VMA status bits of CRIU's images (criu/include/image.h).
const (
	vmaAreaRegular  = 1 << 0
	vmaAreaStack    = 1 << 1
	vmaAreaVsyscall = 1 << 2
	vmaAreaVDSO     = 1 << 3
	vmaAreaHeap     = 1 << 5
	vmaFilePrivate  = 1 << 6
	vmaFileShared   = 1 << 7
	vmaAnonShared   = 1 << 8
	vmaAnonPrivate  = 1 << 9
	vmaAreaSysVIPC  = 1 << 10
	vmaAreaSocket   = 1 << 11
	vmaAreaVVAR     = 1 << 12
	vmaAreaMemfd    = 1 << 14
)

// Pagemap entry flags (criu/include/pagemap.h).
const pePresent = 1 << 2

const pageSize = 4096

// vmaSpecial reports a kernel-provided mapping that restore moves into
// place instead of recreating.
func vmaSpecial(e *vma.VmaEntry) bool {
	return e.GetStatus()&(vmaAreaVDSO|vmaAreaVVAR) != 0
}

func isVdsoName(p string) bool {
	return p == "[vdso]" || p == "[vvar]" || p == "[vvar_vclock]"
}

// classifyVMA turns one /proc/PID/maps line, with the mapping's VmFlags
// from smaps (nil when unknown), into a VMA image entry. File mappings
// get a reg-file entry through files.
func classifyVMA(pid int, m proc.Mapping, vmFlags []string, files *fileTable) (*vma.VmaEntry, error) {
	prot := 0
	if m.Read {
		prot |= unix.PROT_READ
	}
	if m.Write {
		prot |= unix.PROT_WRITE
	}
	if m.Exec {
		prot |= unix.PROT_EXEC
	}
	e := &vma.VmaEntry{
		Start: proto.Uint64(m.Start), End: proto.Uint64(m.End), Pgoff: proto.Uint64(m.Offset),
		Shmid: proto.Uint64(0), Prot: proto.Uint32(uint32(prot)), Fd: proto.Int64(-1),
	}
	var flags, status uint32
	if m.Shared {
		flags = unix.MAP_SHARED
	} else {
		flags = unix.MAP_PRIVATE
	}
	where := fmt.Sprintf("task %d mapping %#x-%#x", pid, m.Start, m.End)
	switch {
	case m.Path == "[vdso]":
		status = vmaAreaRegular | vmaAreaVDSO
		flags |= unix.MAP_ANONYMOUS
	case m.Path == "[vvar]" || m.Path == "[vvar_vclock]":
		status = vmaAreaRegular | vmaAreaVVAR
		flags |= unix.MAP_ANONYMOUS
	case m.Path == "[vsyscall]":
		return nil, nil // a fixed kernel page in every process
	case strings.HasPrefix(m.Path, "/SYSV"):
		// The segment's content is saved with the tree's own IPC
		// namespace, and its id kept there; the mapping names it (the
		// inode of the segment's file is its id, 0 for the first).
		if !files.savesIPC && !files.hostSysV {
			return nil, fmt.Errorf("%s: SysV shared memory %s of an IPC namespace ctcr does not save (it saves a container's own, and the host's segments a tree maps): %w", where, m.Path, ErrUnsupported)
		}
		status = vmaAreaRegular | vmaAreaSysVIPC
		e.Shmid = proto.Uint64(m.Inode)
	case m.Path == "/dev/zero" && m.Shared && m.Deleted, m.Path == "/dev/zero (deleted)":
		// MAP_SHARED|MAP_ANONYMOUS is a shmem file the kernel names so.
		status = vmaAreaRegular | vmaAnonShared
		flags |= unix.MAP_ANONYMOUS
		e.Shmid = proto.Uint64(m.Inode)
	case m.Inode == 0:
		status = vmaAreaRegular | vmaAnonPrivate
		flags |= unix.MAP_ANONYMOUS
		if m.Shared {
			status = vmaAreaRegular | vmaAnonShared
			e.Shmid = proto.Uint64(m.Inode)
		}
		switch m.Path {
		case "[heap]":
			status |= vmaAreaHeap
		case "[stack]":
			status |= vmaAreaStack
			flags |= unix.MAP_GROWSDOWN
		}
	case strings.HasPrefix(m.Path, "socket:[") && m.Shared:
		// A packet socket's ring: mapped again from the socket restore
		// sets the ring up on; its frames are not saved.
		id, err := packetRingVMA(files, m, where)
		if err != nil {
			return nil, err
		}
		status = vmaAreaRegular | vmaAreaSocket | vmaFileShared
		e.Shmid = proto.Uint64(uint64(id))
	case m.Path == "/[aio]" && m.Deleted:
		// The ring of an AIO context (aio.go).
		aioRingVMA(e, m.Inode)
		return e, nil
	case m.Path == "/anon_hugepage" && m.Deleted:
		// MAP_ANONYMOUS|MAP_HUGETLB: a file of the kernel's internal
		// hugetlbfs. It is anonymous memory again at restore, of the
		// same huge page size (the file's block size), private or
		// shared as it was.
		src, err := mappedFile(pid, m, where)
		if err != nil {
			return nil, err
		}
		huge, err := hugeFlags(src.st, where)
		if err != nil {
			return nil, err
		}
		flags |= unix.MAP_ANONYMOUS | huge
		status = vmaAreaRegular | vmaAnonPrivate
		if m.Shared {
			status = vmaAreaRegular | vmaAnonShared
			e.Shmid = proto.Uint64(m.Inode)
		}
	case m.Deleted && strings.HasPrefix(m.Path, "/"):
		// A memfd, or a file unlinked since it was mapped: its content is
		// kept in the images (memfd.img or a ghost file), once, however
		// many fds and mappings reach it.
		src, err := mappedFile(pid, m, where)
		if err != nil {
			return nil, err
		}
		var id uint32
		if strings.HasPrefix(m.Path, "/memfd:") && src.st.Nlink == 0 {
			id, err = dumpMappedMemfd(files, src, m.Path, m.Shared && (m.Write || slices.Contains(vmFlags, "mw")))
			status = vmaAreaRegular | vmaAreaMemfd
		} else {
			id, err = dumpMappedGhost(files, src, m.Path, m.Shared)
			status = vmaAreaRegular
		}
		if err != nil {
			return nil, err
		}
		e.Shmid = proto.Uint64(uint64(id))
		if m.Shared {
			status |= vmaFileShared
		} else {
			status |= vmaFilePrivate
		}
	case strings.HasPrefix(m.Path, "/"):
		st, err := files.stats.statInTree(pid, m.Path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if st.Ino != m.Inode || unix.Major(st.Dev) != m.Major || unix.Minor(st.Dev) != m.Minor {
			return nil, fmt.Errorf("%s: %s is no longer the mapped file (replaced after mmap): %w", where, m.Path, ErrUnsupported)
		}
		// A private mapping of /dev/zero is anonymous memory that maps
		// names /dev/zero: it is mapped from /dev/zero again, so it keeps
		// that name, and its pages are saved as copied-on-write ones. What
		// another character device maps is the driver's, which ctcr
		// cannot save.
		if st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev != unix.Mkdev(1, 5) {
			return nil, fmt.Errorf("%s: %s is a character device (%d:%d) whose memory ctcr cannot save (only /dev/zero's): %w",
				where, m.Path, unix.Major(st.Rdev), unix.Minor(st.Rdev), ErrUnsupported)
		}
		// A shared mapping may be made writable with mprotect only if its
		// file was open for writing ("mw", VM_MAYWRITE): the file is
		// opened again with the same rights, not fewer, not more.
		oflags := unix.O_RDONLY
		if m.Shared && (m.Write || slices.Contains(vmFlags, "mw")) {
			oflags = unix.O_RDWR
		}
		// A file of a nested mount namespace's own view names its
		// mount (files_mntview.go).
		mntID, err := files.viewMount(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End), m.Path, &st, false)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		id := files.regFileIn(m.Path, uint32(oflags), 0, &st, mntID)
		e.Shmid = proto.Uint64(uint64(id))
		if m.Shared {
			status = vmaAreaRegular | vmaFileShared
		} else {
			status = vmaAreaRegular | vmaFilePrivate
		}
	default:
		return nil, fmt.Errorf("%s: unknown mapping %q: %w", where, m.Path, ErrUnsupported)
	}
	e.Flags = proto.Uint32(flags)
	e.Status = proto.Uint32(status)
	return e, nil
}

// hugeFlags returns MAP_HUGETLB with the huge page size of hugetlbfs
// file st (its block size) in the MAP_HUGE_* bits, which is how CRIU's
// vma_entry.flags records a hugetlb mapping.
func hugeFlags(st *unix.Stat_t, where string) (uint32, error) {
	size := uint64(st.Blksize)
	if size < pageSize || size&(size-1) != 0 {
		return 0, fmt.Errorf("%s: hugetlb file of block size %d, not a page size: %w", where, size, ErrUnsupported)
	}
	return unix.MAP_HUGETLB | uint32(bits.TrailingZeros64(size))<<unix.MAP_HUGE_SHIFT, nil
}

// hugePageSize returns the huge page size of a hugetlb VMA entry, 0 for
// another one.
func hugePageSize(e *vma.VmaEntry) uint64 {
	if e.GetFlags()&unix.MAP_HUGETLB == 0 {
		return 0
	}
	return 1 << (e.GetFlags() >> unix.MAP_HUGE_SHIFT & unix.MAP_HUGE_MASK)
}

// mappedFile reaches the file mapping m of task pid maps through
// /proc/PID/map_files, which leads to the mapped inode even once its
// name is gone, and checks that it is the one maps names.
func mappedFile(pid int, m proc.Mapping, where string) (procFile, error) {
	src := procFile{where: where, path: fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End), st: &unix.Stat_t{}}
	if err := unix.Stat(src.path, src.st); err != nil {
		return src, fmt.Errorf("%s: %s: %w", where, m.Path, err)
	}
	if src.st.Ino != m.Inode || src.st.Mode&unix.S_IFMT != unix.S_IFREG {
		return src, fmt.Errorf("%s: %s: map_files leads to inode %d of mode %#o, maps says inode %d: %w", where, m.Path, src.st.Ino, src.st.Mode, m.Inode, ErrUnsupported)
	}
	return src, nil
}

// pageRun is a run of contiguous pages to dump.
type pageRun struct {
	addr   uint64
	npages uint64
	unread bool // read through /proc/PID/mem: PROT_NONE, or mapped more than once
	// inParent: the very pages the parent has at the same addresses
	// (shared copy-on-write since fork). They are written once, in the
	// parent's image; restore forks the task from its restored parent so
	// it shares them again.
	inParent bool
	// preCopied: pages copied by the pre-copy and not written since;
	// they stay in the parent image.
	preCopied bool
	// noFork: pages a fork does not hand the snapshot child as they are
	// at the freeze (shared, not inherited, or wiped: snapshot.go); a
	// snapshot dump copies them while the task is still stopped.
	noFork bool
	// joined: the run goes on from the previous one, in the same VMA and
	// of the same kind, split from it only by how its pages are read
	// (which pages are mapped once differs between a task and its
	// snapshot child): the image gives both one pagemap entry.
	joined bool
}

// peParentTask flags a pagemap entry whose pages are the parent task's.
// It is ctcr's own: CRIU writes such pages again in the child's image
// (its bits 0-3 are PE_PARENT, PE_LAZY, PE_PRESENT and
// PE_PAYLOAD_ALIGNED, criu/include/pagemap.h).
const peParentTask = 1 << 16

// pfnMask selects the page frame number of a pagemap entry (bits 0-54,
// visible to CAP_SYS_ADMIN).
const pfnMask = 1<<55 - 1

// parentPages lets the dump of a child compare its pages with its
// parent's, which is still stopped.
type parentPages struct {
	vmas []*vma.VmaEntry
	pmr  *proc.PagemapReader
}

func (pp *parentPages) close() {
	if pp != nil {
		pp.pmr.Close()
	}
}

// sameVMA reports whether a child VMA is the parent's, inherited by fork.
//
// A hugetlb mapping never is: restore does not keep the parent's (its
// pages could not be dropped but in whole huge pages), so the child
// saves its own copy of every page.
func (pp *parentPages) sameVMA(e *vma.VmaEntry) bool {
	if pp == nil || e.GetStatus()&(vmaAnonPrivate|vmaFilePrivate) == 0 || hugePageSize(e) != 0 {
		return false
	}
	for _, v := range pp.vmas {
		if v.GetStart() == e.GetStart() {
			return v.GetEnd() == e.GetEnd() && v.GetProt() == e.GetProt() && v.GetFlags() == e.GetFlags() &&
				v.GetStatus() == e.GetStatus() && v.GetShmid() == e.GetShmid() && v.GetPgoff() == e.GetPgoff()
		}
	}
	return false
}

// wantPage decides from a pagemap entry whether a page of this VMA holds
// data only the image can give back.
func wantPage(e *vma.VmaEntry, pm uint64) bool {
	if pm&(proc.PagemapPresent|proc.PagemapSwapped) == 0 {
		return false
	}
	st := e.GetStatus()
	switch {
	case st&vmaAnonShared != 0:
		return true
	case st&vmaAnonPrivate != 0:
		return true
	case st&vmaFilePrivate != 0:
		// Present pages still backed by the page cache are the file's
		// own: only copied-on-write (anonymous) pages are dumped.
		return pm&proc.PagemapFileShared == 0 || pm&proc.PagemapSwapped != 0
	}
	return false
}

// collectPages reads the pagemap of every dumpable VMA and returns the
// runs of pages to save, in address order; of a shared anonymous VMA in
// only, just the pages in its ranges there. With parent, pages a private
// VMA still shares with the same VMA of the parent (the same page frame)
// become inParent runs.
func collectPages(pid int, vmas []*vma.VmaEntry, only map[*vma.VmaEntry][]proc.PageRange, parent *parentPages) ([]pageRun, error) {
	pmr, err := proc.OpenPagemap(pid)
	if err != nil {
		return nil, fmt.Errorf("task %d: %w", pid, err)
	}
	defer pmr.Close()
	var runs []pageRun
	var buf, pbuf []uint64
	winEnd := uint64(0) // the end of the window pmr holds
	for i, e := range vmas {
		st := e.GetStatus()
		if st&(vmaAnonShared|vmaAnonPrivate|vmaFilePrivate) == 0 {
			continue
		}
		start, end := e.GetStart(), e.GetEnd()
		if st&vmaAnonShared == 0 && end > winEnd {
			winEnd = pagemapWindow(vmas, i)
			if winEnd > end {
				pmr.Prefetch(start, winEnd)
				if parent != nil {
					// A forked child's mappings are its parent's,
					// whose pagemap is read beside its own.
					parent.pmr.Prefetch(start, winEnd)
				}
			}
		}
		if st&vmaAnonShared != 0 {
			// The object's pages, whoever touched them: the task's
			// pagemap lists only those it has mapped itself, not those
			// its exited children wrote (PostgreSQL's buffers).
			data, err := shmemData(pid, e)
			if err != nil {
				return nil, err
			}
			if part, ok := only[e]; ok {
				data = intersect(data, part)
			}
			for _, r := range data {
				runs = append(runs, pageRun{addr: r.Start, npages: (r.End - r.Start) / pageSize, unread: true})
			}
			continue
		}
		unread := e.GetProt()&unix.PROT_READ == 0
		inherited := parent.sameVMA(e)
		// Runs never cross a VMA boundary, so each pagemap entry lies in
		// one mapping (restore decides per mapping what it inherits).
		first := len(runs)
		// Read the pagemap in slices so a huge sparse VMA costs bounded memory.
		const chunk = 1 << 18 // pages
		for s := start; s < end; s += chunk * pageSize {
			ce := min(end, s+chunk*pageSize)
			buf, err = pmr.Read(s, ce, buf)
			if err != nil {
				return nil, fmt.Errorf("task %d pagemap of %#x-%#x: %w", pid, s, ce, err)
			}
			if inherited {
				if pbuf, err = parent.pmr.Read(s, ce, pbuf); err != nil {
					return nil, fmt.Errorf("pagemap of the parent of task %d at %#x-%#x: %w", pid, s, ce, err)
				}
			}
			for i, pm := range buf {
				if !wantPage(e, pm) {
					continue
				}
				addr := s + uint64(i)*pageSize
				shared := inherited && pm&proc.PagemapPresent != 0 && pbuf[i]&proc.PagemapPresent != 0 &&
					pm&pfnMask != 0 && pm&pfnMask == pbuf[i]&pfnMask
				// A page mapped more than once (copy-on-write after fork,
				// or shmem) is read through /proc/PID/mem: process_vm_readv
				// pins pages, and pinning a shared anonymous page makes
				// the kernel give the task its own copy, breaking the
				// sharing the tree had (and that restore recreates).
				viaMem := unread || pm&proc.PagemapExclusive == 0
				n := len(runs)
				cont := n > first && runs[n-1].addr+runs[n-1].npages*pageSize == addr && runs[n-1].inParent == shared
				if cont && runs[n-1].unread == viaMem {
					runs[n-1].npages++
				} else {
					runs = append(runs, pageRun{addr: addr, npages: 1, unread: viaMem, inParent: shared, joined: cont})
				}
			}
		}
	}
	return runs, nil
}

// pagemapWindowGap and pagemapWindowPages bound a window of pagemap
// read at once: mappings up to 1 MiB apart (256 entries of the gap
// read for nothing, 2 KiB), up to 64 Ki pages in all.
const (
	pagemapWindowGap   = 1 << 20
	pagemapWindowPages = 64 << 10
)

// pagemapWindow returns the end of the run of mappings from vmas[i] on
// whose pagemap one read takes: each starts at most pagemapWindowGap
// after the previous one ends, and all together span at most
// pagemapWindowPages pages.
func pagemapWindow(vmas []*vma.VmaEntry, i int) uint64 {
	start, end := vmas[i].GetStart(), vmas[i].GetEnd()
	for _, e := range vmas[i+1:] {
		if e.GetStatus()&(vmaAnonPrivate|vmaFilePrivate) == 0 {
			continue
		}
		if e.GetStart() < end || e.GetStart()-end > pagemapWindowGap || (e.GetEnd()-start)/pageSize > pagemapWindowPages {
			break
		}
		end = e.GetEnd()
	}
	return end
}

// shmemData returns the pages of the shared anonymous mapping e of task
// pid that its object holds, resident or swapped (sorted, disjoint,
// page-aligned addresses): SEEK_DATA over the object, reached through
// /proc/PID/map_files, finds them wherever they were faulted in. They
// are read through /proc/PID/mem, which finds them in the object too.
func shmemData(pid int, e *vma.VmaEntry) ([]proc.PageRange, error) {
	if hugePageSize(e) != 0 {
		return hugetlbData(pid, e)
	}
	path := fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, e.GetStart(), e.GetEnd())
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("task %d shared mapping %#x-%#x: %w", pid, e.GetStart(), e.GetEnd(), err)
	}
	defer unix.Close(fd)
	pgoff := int64(e.GetPgoff())
	end := pgoff + int64(e.GetEnd()-e.GetStart())
	var out []proc.PageRange
	for off := pgoff; off < end; {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data from off to the end of the object
		}
		if err != nil {
			return nil, fmt.Errorf("task %d shared mapping %#x-%#x: SEEK_DATA: %w", pid, e.GetStart(), e.GetEnd(), err)
		}
		if d >= end {
			break
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("task %d shared mapping %#x-%#x: SEEK_HOLE: %w", pid, e.GetStart(), e.GetEnd(), err)
		}
		d &^= pageSize - 1
		h = min((h+pageSize-1)&^(pageSize-1), end)
		if h <= d {
			break
		}
		out = append(out, proc.PageRange{Start: e.GetStart() + uint64(d-pgoff), End: e.GetStart() + uint64(h-pgoff)})
		off = h
	}
	return out, nil
}

// hugetlbData returns the pages of the shared hugetlb mapping e of task
// pid that the task has mapped. hugetlbfs answers SEEK_DATA with the
// whole file, and reading a huge page the object lacks through
// /proc/PID/mem would allocate it (or fail when none is free): only the
// pages the pagemap shows are read. Pages of the object only another
// task mapped are that task's to save.
func hugetlbData(pid int, e *vma.VmaEntry) ([]proc.PageRange, error) {
	pmr, err := proc.OpenPagemap(pid)
	if err != nil {
		return nil, fmt.Errorf("task %d: %w", pid, err)
	}
	defer pmr.Close()
	buf, err := pmr.Read(e.GetStart(), e.GetEnd(), nil)
	if err != nil {
		return nil, fmt.Errorf("task %d pagemap of %#x-%#x: %w", pid, e.GetStart(), e.GetEnd(), err)
	}
	var out []proc.PageRange
	for i, pm := range buf {
		if pm&(proc.PagemapPresent|proc.PagemapSwapped) == 0 {
			continue
		}
		a := e.GetStart() + uint64(i)*pageSize
		if n := len(out); n > 0 && out[n-1].End == a {
			out[n-1].End += pageSize
		} else {
			out = append(out, proc.PageRange{Start: a, End: a + pageSize})
		}
	}
	return out, nil
}

// writePages copies the pages of runs from the task into the raw pages
// image at path, in order, and returns the pagemap entries describing
// them and the bytes written. The pages go through ctcr's small page
// buffers (pageSink): no mapping of the image, so no page fault per page
// and no RSS the size of the task.
func writePages(pid int, runs []pageRun, path string, pr *progress) ([]*pagemap.PagemapEntry, uint64, error) {
	entries, total := pagemapEntries(runs)
	if err := writePagesFrom(pageSource{pid: pid}, runs, path, pr); err != nil {
		return nil, 0, err
	}
	return entries, total, nil
}

// pagemapEntries returns the pagemap entries describing runs and the
// bytes of the pages image they make.
func pagemapEntries(runs []pageRun) ([]*pagemap.PagemapEntry, uint64) {
	var total uint64
	var entries []*pagemap.PagemapEntry
	for _, r := range runs {
		if !r.inParent && !r.preCopied {
			total += r.npages * pageSize
		}
		flags := uint32(pePresent)
		if r.inParent {
			flags = peParentTask
		} else if r.preCopied {
			flags = pePreCopied
		}
		a, left := r.addr, r.npages
		if k := len(entries); r.joined && k > 0 {
			if e := entries[k-1]; e.GetFlags() == flags && e.GetVaddr()+uint64(e.GetNrPages())*pageSize == a {
				n := min(left, 1<<30-uint64(e.GetNrPages()))
				e.NrPages = proto.Uint32(e.GetNrPages() + uint32(n))
				a += n * pageSize
				left -= n
			}
		}
		// An entry's nr_pages is 32 bits.
		for left > 0 {
			n := min(left, 1<<30)
			entries = append(entries, &pagemap.PagemapEntry{Vaddr: proto.Uint64(a), NrPages: proto.Uint32(uint32(n)), Flags: proto.Uint32(flags)})
			a += n * pageSize
			left -= n
		}
	}
	return entries, total
}

// writePagesFrom writes the pages image at path from src: the pages of
// every run that is not left to a parent image, in order.
func writePagesFrom(src pageSource, runs []pageRun, path string, pr *progress) error {
	var copied []pageRun
	for _, r := range runs {
		if !r.inParent && !r.preCopied {
			copied = append(copied, r)
		}
	}
	s, err := newPageSink(path)
	if err != nil {
		return err
	}
	if err := copyRunsFrom(src, copied, s, pr); err != nil {
		s.abort()
		// The disk's error first: a full disk, not the task, stopped it.
		if werr := s.failed(); werr != nil {
			return werr
		}
		return err
	}
	return s.close()
}

// markNoFork flags the runs (address-ordered, each inside one VMA) that
// lie in a VMA whose pages a fork does not hand over as they are now:
// shared anonymous memory (the task's writes after the freeze show in
// the child too), and mappings with VmFlags dc (MADV_DONTFORK, or
// VM_DONTCOPY set by a driver: absent in the child) or wf
// (MADV_WIPEONFORK, MAP_DROPPABLE: zero-filled in the child). vmFlags
// is keyed by VMA start (proc.ReadVmFlags).
func markNoFork(runs []pageRun, vmas []*vma.VmaEntry, vmFlags map[uint64][]string) {
	i := 0
	for _, e := range vmas {
		noFork := e.GetStatus()&vmaAnonShared != 0
		for _, f := range vmFlags[e.GetStart()] {
			noFork = noFork || f == "dc" || f == "wf"
		}
		for i < len(runs) && runs[i].addr < e.GetStart() {
			i++
		}
		for ; i < len(runs) && runs[i].addr < e.GetEnd(); i++ {
			runs[i].noFork = noFork
		}
	}
}

// sortVMAs orders entries by start address.
func sortVMAs(v []*vma.VmaEntry) {
	sort.Slice(v, func(i, j int) bool { return v[i].GetStart() < v[j].GetStart() })
}

// vmAdvice maps smaps' VmFlags names to the madvise advice that sets
// them; CRIU's vma_entry.madv holds 1 << advice for each.
var vmAdvice = map[string]uint64{
	"dc": unix.MADV_DONTFORK, "wf": unix.MADV_WIPEONFORK, "dd": unix.MADV_DONTDUMP,
	"hg": unix.MADV_HUGEPAGE, "nh": unix.MADV_NOHUGEPAGE, "mg": unix.MADV_MERGEABLE,
	"sr": unix.MADV_SEQUENTIAL, "rr": unix.MADV_RANDOM,
}

// adviseVMA records the advice and lock state of mapping e from its
// VmFlags: advice in madv, an mlock'ed mapping as MAP_LOCKED in flags.
func adviseVMA(e *vma.VmaEntry, flags []string) {
	var madv uint64
	for _, f := range flags {
		if a, ok := vmAdvice[f]; ok {
			madv |= 1 << a
		}
		if f == "lo" {
			e.Flags = proto.Uint32(e.GetFlags() | unix.MAP_LOCKED)
		}
		if f == "nr" {
			// A reservation larger than memory (VM_NORESERVE) maps
			// again only with MAP_NORESERVE under overcommit
			// heuristics.
			e.Flags = proto.Uint32(e.GetFlags() | unix.MAP_NORESERVE)
		}
	}
	if madv != 0 {
		e.Madv = proto.Uint64(madv)
	}
}
