package images

import (
	"fmt"
	"io"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
)

// PageSize is the unit of pages-N.img and of PagemapEntry.nr_pages on
// x86-64.
const PageSize = 4096

// ReadPagemap reads pagemap-PID.img: its PagemapHead, then every
// PagemapEntry. It checks what a reader of pages-N.img relies on: entries
// are page aligned, in increasing address order, do not overlap, and their
// sizes do not overflow.
func ReadPagemap(path string) (*pagemap.PagemapHead, []*pagemap.PagemapEntry, error) {
	f, done, err := openImage(path)
	if err != nil {
		return nil, nil, err
	}
	defer done()
	r, err := NewReader(f, Pagemap, path)
	if err != nil {
		return nil, nil, err
	}
	head := &pagemap.PagemapHead{}
	if err := r.Next(head); err == io.EOF {
		return nil, nil, r.corrupt(r.off, "no pagemap head", nil)
	} else if err != nil {
		return nil, nil, err
	}
	var entries []*pagemap.PagemapEntry
	var end uint64 // end address of the previous entry
	for {
		start := r.off
		e := &pagemap.PagemapEntry{}
		if err := r.Next(e); err == io.EOF {
			return head, entries, nil
		} else if err != nil {
			return nil, nil, err
		}
		va, n := e.GetVaddr(), uint64(e.GetNrPages())
		if va%PageSize != 0 {
			return nil, nil, r.corrupt(start, fmt.Sprintf("pagemap entry vaddr %#x not page aligned", va), nil)
		}
		if n == 0 || va+n*PageSize < va {
			return nil, nil, r.corrupt(start, fmt.Sprintf("pagemap entry %#x: bad nr_pages %d", va, n), nil)
		}
		if va < end {
			return nil, nil, r.corrupt(start, fmt.Sprintf("pagemap entry %#x overlaps or precedes the previous one ending at %#x", va, end), nil)
		}
		end = va + n*PageSize
		entries = append(entries, e)
	}
}
