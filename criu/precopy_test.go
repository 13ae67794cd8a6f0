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
	ti := &restoredTaskImages{parentRuns: []fileRun{{addr: 0, end: 4 * p, off: 0}, {addr: 4 * p, end: 6 * p, off: 4 * p}, {addr: 10 * p, end: 12 * p, off: 6 * p}}}
	var offs []uint64
	if err := ti.eachParentRun(3*p, 5*p, func(_, _, off uint64) { offs = append(offs, off) }); err != nil || !reflect.DeepEqual(offs, []uint64{3 * p, 4 * p}) {
		t.Errorf("eachParentRun across two runs: offsets %v, err %v", offs, err)
	}
	if err := ti.eachParentRun(5*p, 11*p, func(_, _, _ uint64) {}); err == nil {
		t.Error("eachParentRun over a hole in the parent image: no error")
	}
	if err := ti.eachParentRun(12*p, 13*p, func(_, _, _ uint64) {}); err == nil {
		t.Error("eachParentRun past the parent image: no error")
	}
}
