package proc

import (
	"fmt"
	"unsafe"
)

// PAGEMAP_SCAN categories (include/uapi/linux/fs.h) that Populated
// reports.
const (
	// PageIsFile: the page is a file's (the page cache's), not
	// anonymous: in a private file mapping, a page never written.
	PageIsFile    = 1 << 2
	PageIsPresent = pageIsPresent
	PageIsSwapped = pageIsSwapped
)

// Populated returns the runs of present or swapped pages of [start,
// end), appended to out, each with its categories among PageIsPresent
// and PageIsSwapped (a run has one set of them), and PageIsFile if
// file is set (which costs a lookup of every page's struct page: 4-10
// times the walk, measured here). One
// PAGEMAP_SCAN walk per 256 runs: where reading the pagemap costs 8
// bytes and a copy per page, this costs one entry per run, so it can be
// done with the task stopped for a large mapping.
func (r *PagemapReader) Populated(start, end uint64, file bool, out []PageRange) ([]PageRange, error) {
	var vec [256]PageRange
	ret := uint64(pageIsPresent | pageIsSwapped)
	if file {
		ret |= PageIsFile
	}
	for start < end {
		arg := pmScanArg{
			Start: start, End: end,
			Vec: uint64(uintptr(unsafe.Pointer(&vec[0]))), VecLen: uint64(len(vec)),
			CategoryAnyofMask: pageIsPresent | pageIsSwapped,
			ReturnMask:        ret,
		}
		arg.Size = uint64(unsafe.Sizeof(arg))
		n, err := ioctlPtr(r.f, pagemapScan, unsafe.Pointer(&arg))
		if err != nil {
			return out, fmt.Errorf("%s: PAGEMAP_SCAN of [%#x, %#x): %w", r.f.Name(), start, end, err)
		}
		out = append(out, vec[:n]...)
		if n < len(vec) {
			return out, nil
		}
		if arg.WalkEnd <= start {
			return out, fmt.Errorf("%s: PAGEMAP_SCAN of [%#x, %#x) made no progress", r.f.Name(), start, end)
		}
		start = arg.WalkEnd
	}
	return out, nil
}
