package criu

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"strings"
	"testing"

	"github.com/ctcr/ctcr/criu/proc"
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

func TestPlanVdsoProxy(t *testing.T) {
	img := make([]byte, 0x2000)
	for i := range img {
		img[i] = byte(i)
	}
	old := &vdsoImage{Size: 0x2000, Image: img, Symbols: map[string]uint64{
		"__vdso_a@V": 0x700, "a@V": 0x700, "__vdso_b@V": 0x800,
	}}
	cur := &vdsoImage{Size: 0x1000, Symbols: map[string]uint64{
		"__vdso_a@V": 0x900, "a@V": 0x900, "__vdso_b@V": 0x650, "__vdso_new@V": 0x500,
	}}
	p, err := planVdsoProxy(old, cur)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[uint64]uint64{0x700: 0x900, 0x800: 0x650}; !maps.Equal(p.jumps, want) {
		t.Errorf("jumps %#x, want %#x", p.jumps, want)
	}
	const base = 0x7f0000001000
	code := p.code(base)
	if len(code) != 0x2000 {
		t.Fatalf("the proxy is %d bytes, want the old vDSO's 8192", len(code))
	}
	jump := func(to uint64) []byte {
		return []byte{0x49, 0xbb, byte(to), byte(to >> 8), byte(to >> 16), byte(to >> 24), byte(to >> 32), byte(to >> 40), byte(to >> 48), byte(to >> 56), 0x41, 0xff, 0xe3}
	}
	for off, to := range p.jumps {
		if got := code[off : off+vdsoJumpSize]; !bytes.Equal(got, jump(base+to)) {
			t.Errorf("at %#x: % x, want a jump to %#x", off, got, base+to)
		}
	}
	for _, off := range []int{0, 0x6ff, 0x70d, 0x7ff, 0x80d, 0x1fff} {
		if code[off] != img[off] {
			t.Errorf("at %#x the proxy has %#x, want the old vDSO's %#x", off, code[off], img[off])
		}
	}
	// Without the old image: int3 wherever no jump is.
	noImg := *old
	noImg.Image = nil
	if p, err := planVdsoProxy(&noImg, cur); err != nil || p.code(base)[0] != 0xcc || p.code(base)[0x1fff] != 0xcc {
		t.Errorf("a proxy without the old image (%v) does not trap outside its jumps", err)
	}

	refused := []struct {
		name string
		syms map[string]uint64
		want string
	}{
		{"a function this kernel lacks", map[string]uint64{"__vdso_gone@V": 0x700}, "__vdso_gone@V"},
		{"one function at two places", map[string]uint64{"__vdso_a@V": 0x700, "__vdso_b@V": 0x700}, "0x700"},
		{"no room for a jump", map[string]uint64{"__vdso_a@V": 0x700, "__vdso_b@V": 0x708}, "0x700"},
		{"a jump past the end", map[string]uint64{"__vdso_a@V": 0x1ff8}, "0x1ff8"},
	}
	for _, c := range refused {
		o := &vdsoImage{Size: 0x2000, Symbols: c.syms}
		if _, err := planVdsoProxy(o, cur); err == nil || !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an unsupported error naming %s", c.name, err, c.want)
		}
	}
}

func TestFreeBelow(t *testing.T) {
	busy := []proc.PageRange{{Start: 0x100000, End: 0x500000}, {Start: 0x800000, End: 0x900000}}
	for _, c := range []struct {
		top, size, want uint64
		ok              bool
	}{
		{0x900000, 0x200000, 0x600000, true}, // between the two
		{0x900000, 0x400000, 0, false},       // nowhere below
		{userTop, 0x400000, userTop - 0x400000, true},
		{0x880000, 0x1000, 0x7ff000, true}, // top inside a busy range
		{0x300000, 0xf0000, 0x10000, true}, // just fits above the first 64 KiB
	} {
		got, ok := freeBelow(busy, c.top, c.size)
		if got != c.want || ok != c.ok {
			t.Errorf("freeBelow(top %#x, size %#x) = %#x, %v; want %#x, %v", c.top, c.size, got, ok, c.want, c.ok)
		}
	}
}

// FuzzVdsoProxy feeds vdso.json contents to the proxy plan against this
// process's vDSO: a plan is refused with an error or yields a proxy of
// the old vDSO's size whose jumps all fit, never a panic.
func FuzzVdsoProxy(f *testing.F) {
	cur, err := readVdso(os.Getpid())
	if err != nil || cur == nil {
		f.Skipf("this process has no vDSO to plan against: %v", err)
	}
	good, _ := json.Marshal(cur)
	f.Add(good)
	f.Add([]byte(`{"size":8192,"symbols":{"__vdso_time@LINUX_2.6":8180}}`))
	f.Add([]byte(`{"size":8192,"symbols":{"__vdso_time@LINUX_2.6":1,"time@LINUX_2.6":5}}`))
	f.Add([]byte(`{"size":16,"symbols":{},"image":"AAAA"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var old vdsoImage
		if json.Unmarshal(b, &old) != nil || old.Size == 0 || old.Size > maxVdsoSize {
			return // checkVdso refuses these as corrupt
		}
		p, err := planVdsoProxy(&old, cur)
		if err != nil {
			if !errors.Is(err, ErrUnsupported) {
				t.Fatalf("plan: %v, want an unsupported error", err)
			}
			return
		}
		code := p.code(0x7f0000000000)
		if uint64(len(code)) != old.Size {
			t.Fatalf("a proxy of %d bytes for a vDSO of %d", len(code), old.Size)
		}
		for off := range p.jumps {
			if off+vdsoJumpSize > old.Size || code[off] != 0x49 {
				t.Fatalf("jump at %#x does not fit or is not there", off)
			}
		}
	})
}
