package criu

import (
	"reflect"
	"testing"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/proc"
)

func TestSplitPreCopied(t *testing.T) {
	const p = pageSize
	runs := []pageRun{
		{addr: 0, npages: 10},
		{addr: 20 * p, npages: 4, inParent: true},
		{addr: 30 * p, npages: 4, unread: true},
	}
	clean := []proc.PageRange{{Start: 2 * p, End: 4 * p}, {Start: 8 * p, End: 32 * p}}
	got := splitPreCopied(runs, clean)
	want := []pageRun{
		{addr: 0, npages: 2},
		{addr: 2 * p, npages: 2, preCopied: true},
		{addr: 4 * p, npages: 4},
		{addr: 8 * p, npages: 2, preCopied: true},
		{addr: 20 * p, npages: 4, inParent: true}, // the parent task's: never split
		{addr: 30 * p, npages: 2, unread: true, preCopied: true},
		{addr: 32 * p, npages: 2, unread: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("splitPreCopied:\n got %+v\nwant %+v", got, want)
	}
}

func TestNormalizeRanges(t *testing.T) {
	got := normalize([]proc.PageRange{{Start: 8, End: 9}, {Start: 1, End: 3}, {Start: 2, End: 5}, {Start: 5, End: 6}})
	want := []proc.PageRange{{Start: 1, End: 6}, {Start: 8, End: 9}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("normalize: got %v, want %v", got, want)
	}
}

func TestPreCopyOverlap(t *testing.T) {
	const p = pageSize
	pp := &preProc{
		pages: []*pagemap.PagemapEntry{
			{Vaddr: proto.Uint64(0), NrPages: proto.Uint32(4)},
			{Vaddr: proto.Uint64(10 * p), NrPages: proto.Uint32(2)},
		},
		offs: []uint64{0, 4 * p},
	}
	type piece struct{ addr, size, off uint64 }
	var got []piece
	pp.overlap([]proc.PageRange{{Start: 3 * p, End: 11 * p}}, func(a, s, o uint64) error {
		got = append(got, piece{a, s, o})
		return nil
	})
	want := []piece{{3 * p, p, 3 * p}, {10 * p, p, 4 * p}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("overlap: got %v, want %v", got, want)
	}
}

func TestEachParentRun(t *testing.T) {
	const p = pageSize
	ti := &restoredTaskImages{parentRuns: []fileRun{{addr: 0, end: 4 * p, off: 0}, {addr: 4 * p, end: 6 * p, off: 8 * p, file: 1}, {addr: 10 * p, end: 12 * p, off: 6 * p}}}
	type place struct {
		file int
		off  uint64
	}
	var got []place
	if err := ti.eachParentRun(3*p, 5*p, func(_, _ uint64, file int, off uint64) { got = append(got, place{file, off}) }); err != nil || !reflect.DeepEqual(got, []place{{0, 3 * p}, {1, 8 * p}}) {
		t.Errorf("eachParentRun across two runs in two files: %v, err %v", got, err)
	}
	if err := ti.eachParentRun(5*p, 11*p, func(_, _ uint64, _ int, _ uint64) {}); err == nil {
		t.Error("eachParentRun over a hole in the parent images: no error")
	}
	if err := ti.eachParentRun(12*p, 13*p, func(_, _ uint64, _ int, _ uint64) {}); err == nil {
		t.Error("eachParentRun past the parent images: no error")
	}
}

func TestIntersectRuns(t *testing.T) {
	runs := []fileRun{{addr: 0, end: 10, off: 100, file: 2}, {addr: 20, end: 30, off: 0}}
	want := []fileRun{{addr: 5, end: 25}}
	got := intersectRuns(runs, want)
	if exp := []fileRun{{addr: 5, end: 10, off: 105, file: 2}, {addr: 20, end: 25, off: 0}}; !reflect.DeepEqual(got, exp) {
		t.Errorf("intersectRuns: got %v, want %v", got, exp)
	}
}

func TestRangeSetOps(t *testing.T) {
	r := func(v ...uint64) []proc.PageRange {
		var out []proc.PageRange
		for i := 0; i < len(v); i += 2 {
			out = append(out, proc.PageRange{Start: v[i], End: v[i+1]})
		}
		return out
	}
	if got, want := subtract(r(0, 10, 20, 30), r(2, 4, 8, 22, 25, 26)), r(0, 2, 4, 8, 22, 25, 26, 30); !reflect.DeepEqual(got, want) {
		t.Errorf("subtract: got %v, want %v", got, want)
	}
	if got, want := intersect(r(0, 10, 20, 30), r(5, 25)), r(5, 10, 20, 25); !reflect.DeepEqual(got, want) {
		t.Errorf("intersect: got %v, want %v", got, want)
	}
	if got := subtract(r(0, 10), r(0, 10)); len(got) != 0 {
		t.Errorf("subtract of everything: got %v", got)
	}
}
