package proc

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
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
}

// OpenPagemap opens /proc/PID/pagemap. It needs PTRACE_MODE_READ on the
// task.
func OpenPagemap(pid int) (*PagemapReader, error) {
	f, err := os.Open(pidFile(pid, "pagemap"))
	if err != nil {
		return nil, err
	}
	return &PagemapReader{f: f, pageSize: uint64(os.Getpagesize())}, nil
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
	if r.scratch == nil {
		r.scratch = make([]byte, 8*pagemapChunk)
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

// Close closes the pagemap file.
func (r *PagemapReader) Close() error {
	return r.f.Close()
}
