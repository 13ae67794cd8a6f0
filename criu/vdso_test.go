package criu

import (
	"maps"
	"os"
	"testing"
)

func TestReadVdso(t *testing.T) {
	v, err := readVdso(os.Getpid())
	if err != nil || v == nil {
		t.Fatalf("readVdso of this process: %v, %v", v, err)
	}
	const fn = "__vdso_clock_gettime@LINUX_2.6"
	if off, ok := v.Symbols[fn]; !ok || off == 0 || off >= v.Size {
		t.Fatalf("the vDSO's %s is at %#x (found %v) in %d bytes", fn, off, ok, v.Size)
	}
	if !v.sameLayout(v) {
		t.Error("a vDSO differs from itself")
	}
	moved := *v
	moved.Symbols = maps.Clone(v.Symbols)
	moved.Symbols[fn] += 16
	if v.sameLayout(&moved) {
		t.Errorf("a vDSO whose %s moved reads the same", fn)
	}
	other := *v
	other.SHA256 = "0"
	if !v.sameLayout(&other) {
		t.Error("a vDSO with other bytes at the same places reads as different")
	}
}
