package criu

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"sync/atomic"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/vma"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/proc"
)

// restoreMemory replaces the puppet's address space with the image's.
//
// Preconditions: runs on the tracer thread.
func (t *restoringTask) restoreMemory() error {
	maps, err := proc.Maps(t.pid)
	if err != nil {
		return fmt.Errorf("%s: %w", t.where(), err)
	}
	var cur []proc.Mapping
	unmap := t.ctl.newBatch()
	t.kept = map[uint64]bool{}
	for _, m := range maps {
		switch {
		case m.Start >= t.ctlAddr && m.End <= t.ctlAddr+ctlSize:
		case isVdsoName(m.Path):
			cur = append(cur, m)
		case m.Path == "[vsyscall]":
		case t.keeps(m):
			// A private mapping forked from the parent as it is in the
			// image: its pages stay shared copy-on-write.
			t.kept[m.Start] = true
		default:
			unmap.add(unix.SYS_MUNMAP, m.Start, m.End-m.Start)
		}
	}
	if _, err := unmap.run(); err != nil {
		return fmt.Errorf("%s: unmap the puppet's memory: %w", t.where(), err)
	}
	if err := t.moveVdso(cur); err != nil {
		return err
	}
	t.filled = vmasWithPages(t.img.mm.Vmas, t.img.pagemap)
	// Files first, all in one message over the socket (the mapped files
	// and the pages image), then every mapping in one batch; pieces of a
	// shared memory object mapped twice need the first piece to exist and
	// are mapped one by one afterwards.
	files := map[uint64]int{} // file id -> fd in the task
	var toSend []*os.File
	var ids []uint64
	defer func() {
		for _, f := range toSend {
			f.Close()
		}
	}()
	for _, v := range t.img.mm.Vmas {
		if vmaSpecial(v) || v.GetStatus()&(vmaFilePrivate|vmaFileShared) == 0 {
			continue
		}
		if _, ok := files[v.GetShmid()]; ok {
			continue
		}
		f, err := t.openMappedFile(v)
		if err != nil {
			return fmt.Errorf("%s mapping %#x-%#x: %w", t.where(), v.GetStart(), v.GetEnd(), err)
		}
		files[v.GetShmid()] = -1
		toSend = append(toSend, f)
		ids = append(ids, v.GetShmid())
	}
	pagesFd := -1
	var parentFds []int
	if len(t.img.pagemap) > 0 {
		f, err := os.Open(t.img.pagesPath)
		if err != nil {
			return err
		}
		toSend = append(toSend, f)
	}
	for _, path := range t.img.parentPaths {
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			f, err = os.Open(os.DevNull) // a parent image with no pages of its own
		}
		if err != nil {
			return fmt.Errorf("parent image: %w", err)
		}
		toSend = append(toSend, f)
	}
	if len(toSend) > 0 {
		got, err := t.sendFds(toSend)
		if err != nil {
			return err
		}
		for i, id := range ids {
			files[id] = got[i]
		}
		got = got[len(ids):]
		if len(t.img.pagemap) > 0 {
			pagesFd, got = got[0], got[1:]
		}
		parentFds = got
	}
	if err := t.attachSysV(); err != nil {
		return err
	}
	maps2 := t.ctl.newBatch()
	var mapped []*vma.VmaEntry
	// A shared anonymous object is created by the first task that maps
	// it (whose image holds its pages); every other mapping of it, in
	// this task or a later one, maps that same object.
	var later, partial []*vma.VmaEntry
	for _, v := range t.img.mm.Vmas {
		if vmaSpecial(v) || v.GetStatus()&vmaAreaSysVIPC != 0 {
			continue
		}
		if t.kept[v.GetStart()] {
			if t.needsWrite(v) {
				maps2.add(unix.SYS_MPROTECT, v.GetStart(), v.GetEnd()-v.GetStart(), uint64(v.GetProt()|unix.PROT_WRITE))
				mapped = append(mapped, v)
			}
			continue
		}
		if v.GetStatus()&vmaAnonShared != 0 {
			if _, ok := t.tree.shmem[v.GetShmid()]; ok {
				later = append(later, v)
				continue
			}
			t.tree.shmem[v.GetShmid()] = shmemPiece{pid: t.pid, start: v.GetStart(), end: v.GetEnd()}
			if v.GetPgoff() != 0 || t.tree.shmemExtent(v.GetShmid()) > v.GetEnd()-v.GetStart() {
				// The object reaches beyond this mapping: made whole first.
				partial = append(partial, v)
				continue
			}
		}
		nr, args := t.mmapCall(v, files)
		maps2.add(nr, args...)
		mapped = append(mapped, v)
	}
	if res, err := maps2.run(); err != nil {
		v := mapped[len(res)]
		if hp := hugePageSize(v); hp != 0 && errors.Is(err, unix.ENOMEM) {
			// The usual cause: no free huge pages (vm.nr_hugepages).
			return fmt.Errorf("%s hugetlb mapping %#x-%#x needs %d free huge pages of %d KiB (see HugePages_Free in /proc/meminfo, vm.nr_hugepages): %w",
				t.where(), v.GetStart(), v.GetEnd(), (v.GetEnd()-v.GetStart())/hp, hp>>10, err)
		}
		return fmt.Errorf("%s mapping %#x-%#x: %w", t.where(), v.GetStart(), v.GetEnd(), err)
	}
	for _, v := range partial {
		if err := t.mapShmemPart(v); err != nil {
			return fmt.Errorf("%s mapping %#x-%#x: %w", t.where(), v.GetStart(), v.GetEnd(), err)
		}
	}
	for _, v := range later {
		if err := t.mapShmemPiece(v, t.tree.shmem[v.GetShmid()]); err != nil {
			return fmt.Errorf("%s mapping %#x-%#x: %w", t.where(), v.GetStart(), v.GetEnd(), err)
		}
	}
	for _, e := range t.img.pagemap {
		if e.GetFlags()&peParentTask == 0 {
			continue
		}
		v := vmaAt(t.img.mm.Vmas, e.GetVaddr())
		if v == nil || !t.kept[v.GetStart()] {
			return fmt.Errorf("%s: pages at %#x were its parent's, but its mapping there did not come from the restored parent: %w", t.where(), e.GetVaddr(), images.ErrCorrupt)
		}
	}
	if err := t.dropForeignPages(); err != nil {
		return err
	}
	if err := t.fillPages(pagesFd, parentFds); err != nil {
		return err
	}
	if err := t.restoreAioRings(); err != nil {
		return err
	}
	fix := t.ctl.newBatch()
	if pagesFd >= 0 {
		fix.add(unix.SYS_CLOSE, uint64(pagesFd))
	}
	for _, fd := range parentFds {
		fix.add(unix.SYS_CLOSE, uint64(fd))
	}
	for _, fd := range files {
		fix.add(unix.SYS_CLOSE, uint64(fd))
	}
	for _, v := range t.img.mm.Vmas {
		if vmaSpecial(v) && t.vdsoAt != 0 {
			continue // not there any more: a proxy, or nothing
		}
		if !vmaSpecial(v) && t.needsWrite(v) {
			fix.add(unix.SYS_MPROTECT, v.GetStart(), v.GetEnd()-v.GetStart(), uint64(v.GetProt()))
		}
		// Advice and locks last: a fork must not miss a mapping that
		// becomes MADV_DONTFORK, nor lock pages not yet filled.
		for a := uint64(0); a < 64; a++ {
			if v.GetMadv()&(1<<a) != 0 {
				fix.add(unix.SYS_MADVISE, v.GetStart(), v.GetEnd()-v.GetStart(), a)
			}
		}
		if v.GetFlags()&unix.MAP_LOCKED != 0 {
			fix.add(unix.SYS_MLOCK, v.GetStart(), v.GetEnd()-v.GetStart())
		}
	}
	if _, err := fix.run(); err != nil {
		return fmt.Errorf("%s: protect, advise and lock mappings: %w", t.where(), err)
	}
	return nil
}

// needsWrite reports a VMA that is mapped writable while its pages are
// filled, and given its real protection afterwards. Only VMAs with pages
// in the image are: mapping a never-written one writable would change its
// flags (VM_ACCOUNT) and let the kernel merge it with its neighbours.
func (t *restoringTask) needsWrite(v *vma.VmaEntry) bool {
	return v.GetProt()&unix.PROT_WRITE == 0 && t.filled[v.GetStart()]
}

// vmasWithPages returns the start addresses of the VMAs that have pages
// in the pagemap. Both lists are sorted by address.
func vmasWithPages(vmas []*vma.VmaEntry, pm []*pagemap.PagemapEntry) map[uint64]bool {
	out := map[uint64]bool{}
	i := 0
	for _, e := range pm {
		s := e.GetVaddr()
		end := s + uint64(e.GetNrPages())*pageSize
		for i < len(vmas) && vmas[i].GetEnd() <= s {
			i++
		}
		for j := i; j < len(vmas) && vmas[j].GetStart() < end; j++ {
			out[vmas[j].GetStart()] = true
		}
	}
	return out
}

// moveVdso puts the kernel's [vvar], [vvar_vclock] and [vdso] where the
// image had them. The vDSO code finds its data at fixed offsets from
// itself, so the group moves as one and must have the image's layout.
func (t *restoringTask) moveVdso(cur []proc.Mapping) error {
	var want []*vma.VmaEntry
	for _, v := range t.img.mm.Vmas {
		if vmaSpecial(v) {
			want = append(want, v)
		}
	}
	if len(want) == 0 {
		for _, m := range cur {
			if _, err := t.ctl.call(unix.SYS_MUNMAP, m.Start, m.End-m.Start); err != nil {
				return fmt.Errorf("%s: unmap %s: %w", t.where(), m.Path, err)
			}
		}
		return nil
	}
	sort.Slice(cur, func(i, j int) bool { return cur[i].Start < cur[j].Start })
	if t.tree.vdsoProxy != nil {
		return t.proxyVdso(cur)
	}
	if len(cur) != len(want) {
		return fmt.Errorf("%s: the image has %d vDSO/vvar mappings, this kernel %d: restoring across kernels: %w", t.where(), len(want), len(cur), ErrUnsupported)
	}
	delta := want[0].GetStart() - cur[0].Start
	for i := range cur {
		if cur[i].End-cur[i].Start != want[i].GetEnd()-want[i].GetStart() || want[i].GetStart()-cur[i].Start != delta {
			return fmt.Errorf("%s: the image's vDSO layout differs from this kernel's: restoring across kernels: %w", t.where(), ErrUnsupported)
		}
	}
	if delta == 0 {
		return nil
	}
	// If the target overlaps the current place, go through a free spot
	// first; mremap cannot move a mapping onto one of its own group.
	lo, hi := cur[0].Start, cur[len(cur)-1].End
	wlo, whi := want[0].GetStart(), want[len(want)-1].GetEnd()
	moves := [][2]uint64{{lo, wlo}}
	if wlo < hi && lo < whi {
		tmp := t.ctlAddr + ctlSize/2
		if hi-lo > ctlSize/2 {
			return fmt.Errorf("%s: vDSO group of %d bytes too large to move", t.where(), hi-lo)
		}
		// The upper half of the control area is scratch nobody uses yet.
		if _, err := t.ctl.call(unix.SYS_MUNMAP, tmp, hi-lo); err != nil {
			return err
		}
		moves = [][2]uint64{{lo, tmp}, {tmp, wlo}}
	}
	b := t.ctl.newBatch()
	for _, mv := range moves {
		for _, m := range cur {
			from := mv[0] + (m.Start - lo)
			to := mv[1] + (m.Start - lo)
			size := m.End - m.Start
			b.add(unix.SYS_MREMAP, from, size, size, unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, to)
		}
	}
	if _, err := b.run(); err != nil {
		return fmt.Errorf("%s: move the vDSO from %#x to %#x: %w", t.where(), lo, wlo, err)
	}
	return nil
}

// shmExec is shmat's SHM_EXEC: the mapping may be executed.
const shmExec = 0o100000

// attachSysV attaches the SysV shared memory segments the task had
// mapped, before anything else is mapped: the IPC namespace was restored
// with their ids and content. shmat maps a whole segment at the address
// its first mapping less its offset; what the task had unmapped of it
// is unmapped again (anything mapped there since comes next), and each
// mapping gets its protection.
func (t *restoringTask) attachSysV() error {
	type attach struct {
		shmid, base uint64
		flags       uint64
		vmas        []*vma.VmaEntry
	}
	var groups []*attach
	byBase := map[[2]uint64]*attach{}
	for _, v := range t.img.mm.Vmas {
		if v.GetStatus()&vmaAreaSysVIPC == 0 {
			continue
		}
		if v.GetPgoff() > v.GetStart() {
			return fmt.Errorf("%s: SysV mapping %#x-%#x at offset %#x: %w", t.where(), v.GetStart(), v.GetEnd(), v.GetPgoff(), images.ErrCorrupt)
		}
		key := [2]uint64{v.GetShmid(), v.GetStart() - v.GetPgoff()}
		a := byBase[key]
		if a == nil {
			a = &attach{shmid: key[0], base: key[1], flags: unix.SHM_RDONLY}
			byBase[key] = a
			groups = append(groups, a)
		}
		if v.GetProt()&unix.PROT_WRITE != 0 {
			a.flags &^= unix.SHM_RDONLY
		}
		if v.GetProt()&unix.PROT_EXEC != 0 {
			a.flags |= shmExec
		}
		a.vmas = append(a.vmas, v)
	}
	if len(groups) == 0 {
		return nil
	}
	b := t.ctl.newBatch()
	for _, a := range groups {
		b.add(unix.SYS_SHMAT, a.shmid, a.base, a.flags)
	}
	res, err := b.run()
	if err != nil {
		a := groups[len(res)]
		return fmt.Errorf("%s: attach SysV shared memory segment %d at %#x: %w", t.where(), a.shmid, a.base, err)
	}
	maps, err := proc.Maps(t.pid)
	if err != nil {
		return fmt.Errorf("%s: %w", t.where(), err)
	}
	fix := t.ctl.newBatch()
	for _, a := range groups {
		end := a.base
		for _, m := range maps {
			if m.Start == a.base {
				end = m.End
			}
		}
		var keep []proc.PageRange
		for _, v := range a.vmas {
			keep = append(keep, proc.PageRange{Start: v.GetStart(), End: v.GetEnd()})
			fix.add(unix.SYS_MPROTECT, v.GetStart(), v.GetEnd()-v.GetStart(), uint64(v.GetProt()))
		}
		for _, r := range subtract([]proc.PageRange{{Start: a.base, End: end}}, normalize(keep)) {
			fix.add(unix.SYS_MUNMAP, r.Start, r.End-r.Start)
		}
	}
	if _, err := fix.run(); err != nil {
		return fmt.Errorf("%s: fit its SysV shared memory mappings: %w", t.where(), err)
	}
	return nil
}

// proxyVdso moves this kernel's [vvar], [vvar_vclock] and [vdso] to a
// place the image leaves free, and puts the proxy of the image's vDSO
// where that was (vdsoProxy). The image's data pages of its vDSO are not
// mapped again: only its code used them.
func (t *restoringTask) proxyVdso(cur []proc.Mapping) error {
	p := t.tree.vdsoProxy
	var old *vma.VmaEntry
	for _, v := range t.img.mm.Vmas {
		if v.GetStatus()&vmaAreaVDSO != 0 {
			old = v
		}
	}
	if old == nil || old.GetEnd()-old.GetStart() != (p.size+pageSize-1)/pageSize*pageSize {
		return fmt.Errorf("%s: its vDSO mapping does not match vdso.json's %d bytes: %w", t.where(), p.size, images.ErrCorrupt)
	}
	lo, hi := cur[0].Start, cur[len(cur)-1].End
	vdso := -1
	for i, m := range cur {
		if m.Path == "[vdso]" {
			vdso = i
		}
	}
	if vdso < 0 {
		return fmt.Errorf("%s: this kernel gave it no [vdso]: %w", t.where(), ErrUnsupported)
	}
	busy := []proc.PageRange{{Start: lo, End: hi}, {Start: t.ctlAddr, End: t.ctlAddr + ctlSize}}
	for _, v := range t.img.mm.Vmas {
		r := proc.PageRange{Start: v.GetStart(), End: v.GetEnd()}
		if v.GetFlags()&unix.MAP_GROWSDOWN != 0 {
			r.Start -= min(r.Start, stackRoom) // where the stack grows
		}
		busy = append(busy, r)
	}
	busy = normalize(busy)
	base, ok := freeBelow(busy, old.GetStart(), hi-lo)
	if !ok {
		base, ok = freeBelow(busy, userTop, hi-lo)
	}
	if !ok {
		return fmt.Errorf("%s: no room of %d bytes for this kernel's vDSO: %w", t.where(), hi-lo, ErrUnsupported)
	}
	b := t.ctl.newBatch()
	for _, m := range cur {
		size := m.End - m.Start
		b.add(unix.SYS_MREMAP, m.Start, size, size, unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, base+(m.Start-lo))
	}
	b.add(unix.SYS_MMAP, old.GetStart(), old.GetEnd()-old.GetStart(), unix.PROT_READ|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED, ^uint64(0), 0)
	if _, err := b.run(); err != nil {
		return fmt.Errorf("%s: move the vDSO from %#x to %#x and map its proxy at %#x: %w", t.where(), lo, base, old.GetStart(), err)
	}
	t.vdsoAt = base + (cur[vdso].Start - lo)
	if err := t.ctl.mem.WriteAt(p.code(t.vdsoAt), old.GetStart()); err != nil {
		return fmt.Errorf("%s: write the vDSO proxy at %#x: %w", t.where(), old.GetStart(), err)
	}
	return nil
}

// userTop is the end of the x86-64 user address space (47 bits, less
// the guard page), and stackRoom the room kept free below a stack for
// it to grow into.
const (
	userTop   = 1<<47 - pageSize
	stackRoom = 256 << 20
)

// freeBelow returns the highest address at which size bytes, ending at
// or below top and above the first 64 KiB, miss every range of busy
// (sorted, disjoint).
func freeBelow(busy []proc.PageRange, top, size uint64) (uint64, bool) {
	const bottom = 0x10000
	end := top
	for i := len(busy) - 1; i >= -1; i-- {
		start := uint64(bottom)
		if i >= 0 {
			if busy[i].Start >= end {
				continue
			}
			start = max(start, busy[i].End)
		}
		if end > start && end-start >= size {
			return end - size, true
		}
		if i >= 0 {
			end = min(end, busy[i].Start)
		}
	}
	return 0, false
}

// mapHugeFlags are the mmap flags of a hugetlb mapping: MAP_HUGETLB and
// its page size.
const mapHugeFlags = unix.MAP_HUGETLB | unix.MAP_HUGE_MASK<<unix.MAP_HUGE_SHIFT

// mmapCall returns the mmap syscall that recreates v at its address.
func (t *restoringTask) mmapCall(v *vma.VmaEntry, files map[uint64]int) (uintptr, []uint64) {
	start, size := v.GetStart(), v.GetEnd()-v.GetStart()
	prot := uint64(v.GetProt())
	if t.needsWrite(v) {
		prot |= unix.PROT_WRITE
	}
	flags := uint64(v.GetFlags())&(unix.MAP_SHARED|unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_GROWSDOWN|unix.MAP_NORESERVE|mapHugeFlags) | unix.MAP_FIXED
	fd := int64(-1)
	off := uint64(0)
	if v.GetStatus()&(vmaFilePrivate|vmaFileShared) != 0 {
		fd = int64(files[v.GetShmid()])
		off = v.GetPgoff()
		flags &^= unix.MAP_ANONYMOUS
	} else {
		flags |= unix.MAP_ANONYMOUS
	}
	return unix.SYS_MMAP, []uint64{start, size, prot, flags, uint64(fd), off}
}

// openMappedFile opens the file a mapping maps, to pass it to the task:
// a memfd or an unlinked file is the one restore recreates (once, for
// every fd and mapping of it, so a shared mapping stays shared with the
// fds), any other file is opened by its path.
func (t *restoringTask) openMappedFile(v *vma.VmaEntry) (*os.File, error) {
	fe := t.cp.files[uint32(v.GetShmid())]
	if v.GetStatus()&vmaAreaSocket != 0 {
		// A packet ring: mapped from the socket the task's fd gets too,
		// made once for both; the task gets its own fd of it here.
		if fe.GetType() != fdinfo.FdTypes_PACKETSK {
			return nil, corruptf("mm.img", "socket mapping %#x-%#x names file id %d, no packet socket", v.GetStart(), v.GetEnd(), v.GetShmid())
		}
		sk, err := t.tree.files.get(uint32(v.GetShmid()))
		if err != nil {
			return nil, fmt.Errorf("packet socket of the ring: %w", err)
		}
		fd, err := unix.FcntlInt(sk.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("packet socket of the ring: dup: %w", err)
		}
		return os.NewFile(uintptr(fd), sk.Name()), nil
	}
	if fe.GetType() == fdinfo.FdTypes_MEMFD {
		f, err := openMemfd(t.tree.files, fe)
		if err != nil {
			return nil, fmt.Errorf("mapped memfd: %w", err)
		}
		return f, nil
	}
	if f, ok, err := openGhostFile(t.tree.files, fe); ok {
		if err != nil {
			return nil, fmt.Errorf("mapped file: %w", err)
		}
		return f, nil
	}
	reg := fe.GetReg()
	// In the task's own view; a file of a nested mount namespace's
	// (files_mntview.go) in that namespace's, if it is not the task's.
	view := t.pid
	if ns, ok, err := t.tree.files.mountNamespace(reg); err != nil {
		return nil, err
	} else if ok && ns != t.img.core.GetIds().GetMntNsId() {
		if view, err = t.tree.files.viewPid(reg, t.pid); err != nil {
			return nil, err
		}
	}
	f, err := openInTree(view, reg.GetName(), int(reg.GetFlags())&unix.O_ACCMODE)
	if err != nil {
		return nil, fmt.Errorf("open mapped file %w", err)
	}
	if reg.Size != nil && v.GetStatus()&vmaFilePrivate != 0 {
		if fi, err := f.Stat(); err == nil && uint64(fi.Size()) != reg.GetSize() {
			// Pages past a new end would fault with SIGBUS.
			t.opts.logf("%s: mapped file %s changed size from %d to %d", t.where(), reg.GetName(), reg.GetSize(), fi.Size())
		}
	}
	return f, nil
}

// shmemPiece is the first mapping of a shared anonymous object: which
// task (host PID) has it where.
type shmemPiece struct {
	pid        int
	start, end uint64
}

// mapShmemPiece maps another piece of a shared memory object whose
// first piece is mapped: the same shmem file, reached through the first
// piece's map_files entry.
func (t *restoringTask) mapShmemPiece(v *vma.VmaEntry, first shmemPiece) error {
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/map_files/%x-%x", first.pid, first.start, first.end), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("shared memory %d: %w", v.GetShmid(), err)
	}
	defer f.Close()
	fd, err := t.sendFd(f)
	if err != nil {
		return err
	}
	prot := uint64(v.GetProt())
	if t.needsWrite(v) {
		prot |= unix.PROT_WRITE
	}
	flags := uint64(v.GetFlags())&(unix.MAP_SHARED|unix.MAP_PRIVATE) | unix.MAP_FIXED
	if _, err := t.ctl.call(unix.SYS_MMAP, v.GetStart(), v.GetEnd()-v.GetStart(), prot, flags, uint64(fd), v.GetPgoff()); err != nil {
		return err
	}
	return t.closeRemote(fd)
}

// mapShmemPart maps v, the first mapping of a shared anonymous object
// that reaches beyond it (at its offset, or past its end, in another
// task's mapping): the object is made at its full size in a mapping of
// its own, v is mapped from it at its offset, and that mapping goes.
func (t *restoringTask) mapShmemPart(v *vma.VmaEntry) error {
	size := t.tree.shmemExtent(v.GetShmid())
	whole, err := t.ctl.mmap(0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS|int(v.GetFlags()&mapHugeFlags), -1, 0)
	if err != nil {
		return fmt.Errorf("shared memory %d of %d bytes: %w", v.GetShmid(), size, err)
	}
	err = t.mapShmemPiece(v, shmemPiece{pid: t.pid, start: whole, end: whole + size})
	if _, uerr := t.ctl.call(unix.SYS_MUNMAP, whole, size); err == nil {
		err = uerr
	}
	return err
}

// fillMode says how fillPages gets the pages of a run into the task.
type fillMode int

const (
	// fillWritev reads the image in ctcr, into a small reused buffer, and
	// writes it into the task with process_vm_writev. The kernel finds
	// the task's pages with GUP, allocating them in a loop of its own, and
	// copies through its own mapping of each page: no user page fault,
	// and no first access through the task's addresses, which on this VM
	// class (shadow page tables) costs a hypervisor exit per 4 KiB even
	// for a page that is already populated. 1 GiB restored here from
	// one image, same minutes: 1.1-1.6 s, against 12.7-13.4 s with
	// fillPopulate and 24-30 s with fillFault.
	fillWritev fillMode = iota
	// fillPopulate has the kernel allocate each run's pages with
	// MADV_POPULATE_WRITE before a remote preadv fills them: no user page
	// fault, but the preadv still writes through the task's addresses.
	// The fallback when process_vm_writev is refused.
	fillPopulate
	// fillFault is the oldest way: a remote preadv into fresh memory,
	// one user page fault per 4 KiB inside copy_to_user; the fallback on
	// a kernel without MADV_POPULATE_WRITE (before 5.14).
	fillFault
)

// restoreFill is the fill mode of this process's restores: a bench knob,
// not a user option. `make bench` sets CTCR_FILL=fault to measure the
// fault-driven fill next to the default in the same run; CTCR_FILL=populate
// selects fillPopulate.
var restoreFill = func() fillMode {
	switch os.Getenv("CTCR_FILL") {
	case "fault":
		return fillFault
	case "populate":
		return fillPopulate
	}
	return fillWritev
}()

// populateMissing is set once a kernel answered EINVAL to
// MADV_POPULATE_WRITE: it predates it (5.14), so later fills fault.
var populateMissing atomic.Bool

// writevMissing is set once process_vm_writev answered ENOSYS (a kernel
// built without CONFIG_CROSS_MEMORY_ATTACH).
var writevMissing atomic.Bool

// errWritevRefused says process_vm_writev cannot fill this task: fill it
// with remote preadv calls instead.
var errWritevRefused = errors.New("process_vm_writev refused")

// fillChunk is the most a run's populate+preadv pair covers. The pages a
// populate zeroes are still in the CPU caches when the preadv overwrites
// them if the chunk is small; every pair is one more entry of the same
// batch, not one more ptrace round trip.
const fillChunk = 4 << 20

// fillBufSize is ctcr's buffer for fillWritev: one pread and one
// process_vm_writev per buffer, few enough calls for 1 GiB, little
// enough RSS for tasks restored side by side.
const fillBufSize = 8 << 20

// fillPages puts the pages of the pages image and of the parent images
// (pre-copied pages) into the task's memory: only the runs the image
// has, so a sparse reservation stays sparse. By default ctcr writes them
// itself (fillPagesWritev). Otherwise, or when the kernel refuses that,
// the task reads them from the pages image (fd, in the task) and the
// parent images' (parentFds, in the order of img.parentPaths) with remote
// preadv calls, up to 1024 runs a call, each run populated first unless
// CTCR_FILL=fault (see fillMode).
func (t *restoringTask) fillPages(fd int, parentFds []int) error {
	if len(t.img.pagemap) == 0 {
		return nil
	}
	if t.img.pagesZstd || t.img.parentZstd {
		return t.fillPagesZstd()
	}
	if restoreFill == fillWritev && !writevMissing.Load() {
		err := t.fillPagesWritev()
		if !errors.Is(err, errWritevRefused) {
			return err
		}
		t.opts.logf("%s: %v: filling its memory with preadv", t.where(), err)
	}
	const (
		maxIov   = 1024
		maxBatch = 1 << 30 // bytes a batch; below MAX_RW_COUNT
	)
	type iovec struct{ Base, Len uint64 }
	var batch []iovec
	var batchBytes uint64
	// The batch reads from batchFd at batchOff, where the last read
	// ended at batchEnd.
	batchFd, batchOff, batchEnd := -1, uint64(0), uint64(0)
	path := func(fd int) string {
		for i, pfd := range parentFds {
			if fd == pfd {
				return t.img.parentPaths[i]
			}
		}
		return t.img.pagesPath
	}
	// call is one queued preadv, or a populate with n == 0.
	type call struct{ addr, off, n uint64 }
	var emit func(populate bool) error
	emit = func(populate bool) error {
		b := t.ctl.newBatch()
		var calls []call
		off := batchOff
		for start := 0; start < len(batch); {
			// A group: iovecs up to fillChunk bytes, read by one preadv.
			end, n := start, uint64(0)
			for end < len(batch) && (end == start || n+batch[end].Len <= fillChunk) {
				n += batch[end].Len
				end++
			}
			if populate {
				// One populate per range of adjacent iovecs.
				for i := start; i < end; {
					s, e := batch[i].Base, batch[i].Base+batch[i].Len
					for i++; i < end && batch[i].Base == e; i++ {
						e += batch[i].Len
					}
					b.add(unix.SYS_MADVISE, s, e-s, unix.MADV_POPULATE_WRITE)
					calls = append(calls, call{addr: s})
				}
			}
			addr, err := b.put(batch[start:end])
			if err != nil {
				return err
			}
			b.add(unix.SYS_PREADV, uint64(batchFd), addr, uint64(end-start), off, 0)
			calls = append(calls, call{addr: batch[start].Base, off: off, n: n})
			off += n
			start = end
		}
		res, err := b.run()
		if err != nil {
			c := calls[len(res)]
			if c.n == 0 {
				if errors.Is(err, unix.EINVAL) {
					populateMissing.Store(true)
					return emit(false)
				}
				return fmt.Errorf("%s: populate pages at %#x: %w", t.where(), c.addr, err)
			}
			return fmt.Errorf("%s: read pages at %#x from %s offset %d: %w", t.where(), c.addr, path(batchFd), c.off, err)
		}
		for i, c := range calls {
			if c.n != 0 && res[i] != c.n {
				return fmt.Errorf("%s: read pages at %#x from %s offset %d: got %d of %d bytes", t.where(), c.addr, path(batchFd), c.off, res[i], c.n)
			}
		}
		return nil
	}
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := emit(restoreFill != fillFault && !populateMissing.Load()); err != nil {
			return err
		}
		t.tree.progress.add(batchBytes)
		batch, batchBytes = batch[:0], 0
		return nil
	}
	// read adds size bytes at addr, from offset off of file fd.
	read := func(fd int, addr, size, off uint64) error {
		for size > 0 {
			if len(batch) > 0 && (fd != batchFd || off != batchEnd) {
				if err := flush(); err != nil {
					return err
				}
			}
			if len(batch) == 0 {
				batchFd, batchOff = fd, off
			}
			n := min(size, fillChunk, maxBatch-batchBytes)
			batch = append(batch, iovec{addr, n})
			batchBytes += n
			addr, off, size = addr+n, off+n, size-n
			batchEnd = off
			if len(batch) == maxIov || batchBytes == maxBatch {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := t.eachImageRun(func(parent int, addr, n, off uint64) error {
		if parent < 0 {
			return read(fd, addr, n, off)
		}
		return read(parentFds[parent], addr, n, off)
	}); err != nil {
		return err
	}
	return flush()
}

// fillPagesWritev is fillPages by process_vm_writev (see fillWritev):
// ctcr preads a contiguous stretch of an image file into its buffer and
// writes it to the runs of the task it belongs to, up to 1024 runs a
// call. Only the image's runs are touched, so a sparse mapping stays
// sparse. It returns errWritevRefused, before writing anything, if the
// kernel refuses the call for this task.
func (t *restoringTask) fillPagesWritev() error {
	var total uint64
	for _, e := range t.img.pagemap {
		if e.GetFlags()&peParentTask == 0 {
			total += uint64(e.GetNrPages()) * pageSize
		}
	}
	if total == 0 {
		return nil
	}
	buf, err := unix.Mmap(-1, 0, int(min(total, fillBufSize)), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("%s: a buffer for its pages: %w", t.where(), err)
	}
	defer unix.Munmap(buf)
	// files[0] is the task's own pages image, files[1+i] parentPaths[i].
	files := make([]*os.File, 1+len(t.img.parentPaths))
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	path := func(file int) string {
		if file == 0 {
			return t.img.pagesPath
		}
		return t.img.parentPaths[file-1]
	}
	open := func(file int) (*os.File, error) {
		if files[file] == nil {
			f, err := os.Open(path(file))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", t.where(), err)
			}
			files[file] = f
		}
		return files[file], nil
	}
	const maxIov = 1024 // UIO_MAXIOV
	var remote []unix.RemoteIovec
	var used uint64 // bytes of buf the pending runs take
	// The pending runs read from file at off.
	file, off := -1, uint64(0)
	wrote := false
	flush := func() error {
		if used == 0 {
			return nil
		}
		f, err := open(file)
		if err != nil {
			return err
		}
		if _, err := f.ReadAt(buf[:used], int64(off)); err != nil {
			return fmt.Errorf("%s: read %d bytes of pages at %#x from %s offset %d: %w", t.where(), used, remote[0].Base, path(file), off, err)
		}
		local := []unix.Iovec{{Base: &buf[0]}}
		local[0].SetLen(int(used))
		n, err := unix.ProcessVMWritev(t.pid, local, remote, 0)
		if err != nil && !wrote && (errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM)) {
			if errors.Is(err, unix.ENOSYS) {
				writevMissing.Store(true)
			}
			return fmt.Errorf("%w: %w", errWritevRefused, err)
		}
		if err == nil && uint64(n) != used {
			err = unix.EFAULT // stopped at a run it could not write
		}
		if err != nil {
			// The run the write stopped in.
			at, left := remote[0].Base, uint64(max(n, 0))
			for _, r := range remote {
				if left < uint64(r.Len) {
					at = r.Base + uintptr(left)
					break
				}
				left -= uint64(r.Len)
			}
			return fmt.Errorf("%s: write pages at %#x (process_vm_writev): %w", t.where(), at, err)
		}
		wrote = true
		t.tree.progress.add(used)
		remote, used = remote[:0], 0
		return nil
	}
	// add queues size bytes at addr, from offset foff of file.
	add := func(f int, addr, size, foff uint64) error {
		for size > 0 {
			if used > 0 && (f != file || foff != off+used) {
				if err := flush(); err != nil {
					return err
				}
			}
			if used == 0 {
				file, off = f, foff
			}
			n := min(size, uint64(len(buf))-used)
			if k := len(remote); k > 0 && remote[k-1].Base+uintptr(remote[k-1].Len) == uintptr(addr) {
				remote[k-1].Len += int(n) // the next page of the same run
			} else {
				remote = append(remote, unix.RemoteIovec{Base: uintptr(addr), Len: int(n)})
			}
			used += n
			addr, foff, size = addr+n, foff+n, size-n
			if used == uint64(len(buf)) || len(remote) == maxIov {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := t.eachImageRun(func(parent int, addr, n, off uint64) error {
		return add(1+parent, addr, n, off)
	}); err != nil {
		return err
	}
	return flush()
}

// eachImageRun calls fn for each run of pages the images give the task,
// in pagemap order: parent is -1 for the task's own pages image, off the
// run's offset in it, or i for parent image i (t.img.parentPaths[i]) of
// pages a pre-copy or pre-dump left there. Pages the task shares with
// its parent (peParentTask) are not in any image of its own.
func (t *restoringTask) eachImageRun(fn func(parent int, addr, n, off uint64) error) error {
	var own uint64
	for _, e := range t.img.pagemap {
		addr, size := e.GetVaddr(), uint64(e.GetNrPages())*pageSize
		switch {
		case e.GetFlags()&peParentTask != 0:
			continue
		case e.GetFlags()&pePreCopied != 0:
			var err error
			if perr := t.img.eachParentRun(addr, addr+size, func(a, n uint64, file int, poff uint64) {
				if err == nil {
					err = fn(file, a, n, poff)
				}
			}); perr != nil && err == nil {
				err = fmt.Errorf("%s: %w", t.where(), perr)
			}
			if err != nil {
				return err
			}
		default:
			if err := fn(-1, addr, size, own); err != nil {
				return err
			}
			own += size
		}
	}
	return nil
}

// keeps reports whether a mapping the task got by fork is one of its
// image's private mappings, unchanged: same bounds, protection, sharing
// and file. Only such mappings can hold pages shared with the parent.
func (t *restoringTask) keeps(m proc.Mapping) bool {
	if t.memFrom != nil && m.Shared && m.Path == "/[aio]" && m.Deleted {
		// The restored parent's AIO ring, which this task's image has a
		// forked copy of: shared with the parent again, as it was.
		v := vmaAt(t.img.mm.Vmas, m.Start)
		return v != nil && v.GetStart() == m.Start && v.GetEnd() == m.End && t.aioRingCopy(v)
	}
	if t.memFrom == nil || m.Shared {
		return false
	}
	for _, v := range t.img.mm.Vmas {
		if v.GetStart() != m.Start {
			continue
		}
		st := v.GetStatus()
		if v.GetEnd() != m.End || st&(vmaAnonPrivate|vmaFilePrivate) == 0 || v.GetFlags()&unix.MAP_SHARED != 0 {
			return false
		}
		prot := uint32(0)
		if m.Read {
			prot |= unix.PROT_READ
		}
		if m.Write {
			prot |= unix.PROT_WRITE
		}
		if m.Exec {
			prot |= unix.PROT_EXEC
		}
		if prot != v.GetProt() {
			return false
		}
		if st&vmaFilePrivate != 0 {
			fe := t.cp.files[uint32(v.GetShmid())]
			if m.Inode == 0 || m.Offset != v.GetPgoff() {
				return false
			}
			// A ghost may have been made again under another name (its
			// own was taken): the inode says whether it is the one.
			if dev, ino, ok := ghostInode(t.tree.files, fe); ok {
				return ino == m.Inode && unix.Major(dev) == m.Major && unix.Minor(dev) == m.Minor
			}
			return fe.GetReg().GetName() == m.Path
		}
		// [heap] and [stack] are names the kernel derives from mm fields
		// that are set later (PR_SET_MM_MAP): any anonymous name will do.
		return m.Inode == 0 && (m.Path == "" || m.Path == "[heap]" || m.Path == "[stack]")
	}
	return false
}

// dropForeignPages discards, in the mappings kept from the parent, every
// page the image does not say is the parent's: those the task never had
// read zero (anonymous) or the file again, those it changed are filled
// from its own image next.
func (t *restoringTask) dropForeignPages() error {
	if len(t.kept) == 0 {
		return nil
	}
	b := t.ctl.newBatch()
	pm := t.img.pagemap
	i := 0
	for _, v := range t.img.mm.Vmas {
		if !t.kept[v.GetStart()] {
			continue
		}
		pos, end := v.GetStart(), v.GetEnd()
		// An entry may start in the VMA before (runs of pages cross VMA
		// boundaries): skip only those that end before this one.
		entryEnd := func(e *pagemap.PagemapEntry) uint64 { return e.GetVaddr() + uint64(e.GetNrPages())*pageSize }
		for i < len(pm) && entryEnd(pm[i]) <= pos {
			i++
		}
		for j := i; j < len(pm) && pm[j].GetVaddr() < end && pos < end; j++ {
			e := pm[j]
			if e.GetFlags()&peParentTask == 0 {
				continue // filled from the image: dropped with the rest
			}
			if s := max(e.GetVaddr(), pos); s > pos {
				b.add(unix.SYS_MADVISE, pos, s-pos, unix.MADV_DONTNEED)
			}
			pos = max(pos, min(entryEnd(e), end))
		}
		if pos < end {
			b.add(unix.SYS_MADVISE, pos, end-pos, unix.MADV_DONTNEED)
		}
	}
	if _, err := b.run(); err != nil {
		return fmt.Errorf("%s: drop pages not shared with the parent: %w", t.where(), err)
	}
	return nil
}

// vmaAt returns the VMA holding addr, or nil.
func vmaAt(vmas []*vma.VmaEntry, addr uint64) *vma.VmaEntry {
	for _, v := range vmas {
		if v.GetStart() <= addr && addr < v.GetEnd() {
			return v
		}
	}
	return nil
}
