package proc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/kernel"
)

// Bits of a /proc/PID/pagemap entry (Documentation/admin-guide/mm/pagemap.rst).
// Bits 0-54 hold the PFN, or the swap type and offset when PagemapSwapped
// is set; the PFN reads as 0 without CAP_SYS_ADMIN.
const (
	PagemapPresent    = 1 << 63
	PagemapSwapped    = 1 << 62
	PagemapFileShared = 1 << 61 // page is file-backed or shared anonymous
	PagemapExclusive  = 1 << 56 // page is mapped exactly once
	PagemapSoftDirty  = 1 << 55
)

// pagemapChunk is how many entries one pread asks for: 512 KiB, 256 MiB
// of address space with 4 KiB pages. The kernel walks the page tables in
// its own PAGEMAP_WALK_SIZE steps inside one read, so bigger reads only
// save syscalls.
const pagemapChunk = 64 << 10

// PagemapReader reads entries of one task's /proc/PID/pagemap.
// It is not safe for concurrent use: Read reuses one scratch buffer.
type PagemapReader struct {
	f        *os.File
	pageSize uint64
	scratch  []byte // pread target, at most pagemapChunk entries
	// win holds the entries of [winStart, winStart+len(win)*pageSize)
	// that Prefetch read, from which Read answers.
	win      []uint64
	winStart uint64
}

// OpenPagemap opens /proc/PID/pagemap. It needs PTRACE_MODE_READ on the
// task.
func OpenPagemap(pid int) (*PagemapReader, error) {
	// Opened raw and wrapped with os.NewFile (one fcntl): os.Open adds
	// an fstat, four fcntl and an epoll_ctl, once per task of a dump.
	path := pidFile(pid, "pagemap")
	fd, err := openRead(path, 0)
	if err != nil {
		return nil, err
	}
	return &PagemapReader{f: os.NewFile(uintptr(fd), path), pageSize: uint64(os.Getpagesize())}, nil
}

// Read returns the entries for the pages of [start, end), which must be
// page aligned. It reuses buf when it is big enough. The kernel returns no
// entries beyond the task's TASK_SIZE (so not for [vsyscall]) and none at
// all once the task has exited and lost its mm: Read reports both as
// io.ErrUnexpectedEOF.
func (r *PagemapReader) Read(start, end uint64, buf []uint64) ([]uint64, error) {
	if start%r.pageSize != 0 || end%r.pageSize != 0 || start > end {
		return nil, fmt.Errorf("%s: range [%#x, %#x) is not page aligned and ordered", r.f.Name(), start, end)
	}
	n := (end - start) / r.pageSize
	if uint64(cap(buf)) >= n {
		buf = buf[:n]
	} else {
		buf = make([]uint64, n)
	}
	if start >= r.winStart && (start-r.winStart)/r.pageSize+n <= uint64(len(r.win)) {
		copy(buf, r.win[(start-r.winStart)/r.pageSize:])
		return buf, nil
	}
	// The scratch grows to what the reads ask for, up to one chunk: most
	// mappings of a small task are a few pages, and a reader per task
	// that allocated the whole 512 KiB chunk up front made a dump of
	// 1,000 processes clear and collect half a gigabyte.
	if want := 8 * min(n, pagemapChunk); uint64(len(r.scratch)) < want {
		r.scratch = make([]byte, max(want, 8*512))
	}
	off := int64(start / r.pageSize * 8)
	for done := uint64(0); done < n; {
		k := min(n-done, pagemapChunk)
		b := r.scratch[:8*k]
		if _, err := r.f.ReadAt(b, off); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("%s at %#x: %w", r.f.Name(), start+done*r.pageSize, err)
		}
		for i := range k {
			buf[done+i] = binary.NativeEndian.Uint64(b[8*i:])
		}
		done += k
		off += int64(8 * k)
	}
	return buf, nil
}

// Prefetch reads the entries of [start, end) (page aligned, at most
// 64 Ki entries) in one pread, for the Reads that follow inside it. The
// mappings of a program and of its libraries lie next to each other, a
// few pages apart: a dump of a tree of small processes read some 38
// pagemap slices per process, one system call each, where 5 or 6 cover
// them. A failure drops the window and is left for Read to report, with
// the range it asked for.
func (r *PagemapReader) Prefetch(start, end uint64) {
	r.win = r.win[:0]
	n := (end - start) / r.pageSize
	if start%r.pageSize != 0 || end%r.pageSize != 0 || start >= end || n > pagemapChunk {
		return
	}
	if want := 8 * n; uint64(len(r.scratch)) < want {
		r.scratch = make([]byte, max(want, 8*512))
	}
	b := r.scratch[:8*n]
	if _, err := r.f.ReadAt(b, int64(start/r.pageSize*8)); err != nil {
		return
	}
	if uint64(cap(r.win)) < n {
		r.win = make([]uint64, n)
	}
	r.win = r.win[:n]
	for i := range n {
		r.win[i] = binary.NativeEndian.Uint64(b[8*i:])
	}
	r.winStart = start
}

// Close closes the pagemap file.
func (r *PagemapReader) Close() error {
	return r.f.Close()
}

// PAGEMAP_SCAN (Linux 6.7, include/uapi/linux/fs.h): the kernel walks a
// range of the task's page tables and returns runs of pages by category.
const (
	pagemapScan = 0xc0606610 // _IOWR('f', 16, struct pm_scan_arg)

	// PageWritten is the category of pages written since they were last
	// write-protected, in a mapping registered with a userfaultfd in
	// async write-protect mode.
	PageWritten   = 1 << 1
	pageIsPresent = 1 << 3
	pageIsSwapped = 1 << 4

	scanWPMatching   = 1 << 0 // write-protect the pages reported
	scanCheckWPAsync = 1 << 1 // fail (EPERM) on a mapping not registered in async write-protect mode
)

// pmScanArg is struct pm_scan_arg.
type pmScanArg struct {
	Size, Flags, Start, End, WalkEnd, Vec, VecLen, MaxPages       uint64
	CategoryInverted, CategoryMask, CategoryAnyofMask, ReturnMask uint64
}

// PageRange is a run of pages [Start, End) of one category (struct
// page_region).
type PageRange struct {
	Start, End, Categories uint64
}

// Written returns the runs of pages of [start, end) written since they
// were last write-protected, appended to out. The range must lie in
// mappings registered with a userfaultfd in async write-protect mode
// (else an error wrapping EPERM). With protect, the pages it returns are
// write-protected again, in the same walk, so a write that follows is
// seen by the next call.
func (r *PagemapReader) Written(start, end uint64, protect bool, out []PageRange) ([]PageRange, error) {
	var vec [256]PageRange
	flags := uint64(scanCheckWPAsync)
	if protect {
		flags |= scanWPMatching
	}
	for start < end {
		arg := pmScanArg{
			Flags: flags, Start: start, End: end,
			Vec: uint64(uintptr(unsafe.Pointer(&vec[0]))), VecLen: uint64(len(vec)),
			// Present or swapped pages only: protecting a page never
			// touched would put a marker in its page table entry,
			// allocating page tables over the whole of a sparse
			// mapping (and the pagemap would show the markers as
			// swapped pages). A page touched for the first time is
			// written anyway.
			CategoryMask: PageWritten, CategoryAnyofMask: pageIsPresent | pageIsSwapped, ReturnMask: PageWritten,
		}
		arg.Size = uint64(unsafe.Sizeof(arg))
		n, err := ioctlPtr(r.f, pagemapScan, unsafe.Pointer(&arg))
		if err != nil {
			return out, fmt.Errorf("%s: PAGEMAP_SCAN of [%#x, %#x): %w", r.f.Name(), start, end, err)
		}
		out = append(out, vec[:n]...)
		if arg.WalkEnd <= start {
			return out, fmt.Errorf("%s: PAGEMAP_SCAN of [%#x, %#x) made no progress", r.f.Name(), start, end)
		}
		start = arg.WalkEnd
	}
	return out, nil
}

// WPAsyncRegistered reports whether the mapping at [start, end) is
// registered for userfaultfd write protection in async mode: a
// PAGEMAP_SCAN with PM_SCAN_CHECK_WPASYNC fails with EPERM on any other
// mapping, and otherwise stops at the first present page.
func (r *PagemapReader) WPAsyncRegistered(start, end uint64) (bool, error) {
	var vec [1]PageRange
	arg := pmScanArg{
		Flags: scanCheckWPAsync, Start: start, End: end,
		Vec: uint64(uintptr(unsafe.Pointer(&vec[0]))), VecLen: 1, MaxPages: 1,
		CategoryAnyofMask: pageIsPresent | pageIsSwapped, ReturnMask: pageIsPresent | pageIsSwapped,
	}
	arg.Size = uint64(unsafe.Sizeof(arg))
	if _, err := ioctlPtr(r.f, pagemapScan, unsafe.Pointer(&arg)); err != nil {
		if errors.Is(err, unix.EPERM) {
			return false, nil
		}
		return false, fmt.Errorf("%s: PAGEMAP_SCAN of [%#x, %#x): %w", r.f.Name(), start, end, err)
	}
	return true, nil
}

// HasPages reports whether any page of [start, end) is present or
// swapped, in one PAGEMAP_SCAN walk that stops at the first such page:
// cheap where a mapping is populated (the first page answers) and where
// it is empty (the walk skips absent page tables), unlike reading its
// pagemap entries, which costs 8 bytes per page.
func (r *PagemapReader) HasPages(start, end uint64) (bool, error) {
	var vec [1]PageRange
	arg := pmScanArg{
		Start: start, End: end,
		Vec: uint64(uintptr(unsafe.Pointer(&vec[0]))), VecLen: 1, MaxPages: 1,
		CategoryAnyofMask: pageIsPresent | pageIsSwapped, ReturnMask: pageIsPresent | pageIsSwapped,
	}
	arg.Size = uint64(unsafe.Sizeof(arg))
	n, err := ioctlPtr(r.f, pagemapScan, unsafe.Pointer(&arg))
	if err != nil {
		return false, fmt.Errorf("%s: PAGEMAP_SCAN of [%#x, %#x): %w", r.f.Name(), start, end, err)
	}
	return n > 0, nil
}

// ioctlPtr runs ioctl(f, req, arg) and returns its non-negative result.
func ioctlPtr(f *os.File, req uint, arg unsafe.Pointer) (int, error) {
	n, err := kernel.FileSyscall(f, unix.SYS_IOCTL, uintptr(req), uintptr(arg))
	return int(n), err
}
