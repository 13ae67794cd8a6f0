package criu

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/proc"
)

// vdsoFile records the vDSO the tree ran with. The restored tasks get
// this kernel's vDSO, but the C library keeps the addresses of vDSO
// functions it looked up once: on a kernel whose vDSO differs (another
// build, another host), those would point into the middle of other code.
// So the restore compares where the two have their functions and, if
// they differ, puts a proxy at the old place (vdsoProxy). CRIU's images
// have no field for it.
const vdsoFile = "vdso.json"

// vdsoImage is what vdso.json holds: the size of the vDSO and where
// each function it exports is. Its bytes may differ between machines
// running the same kernel (the kernel patches in the instructions the
// CPU has), so they are not compared, only their hash kept.
type vdsoImage struct {
	Size    uint64            `json:"size"`
	Symbols map[string]uint64 `json:"symbols"` // name@version: offset
	SHA256  string            `json:"sha256"`
	// Image is the vDSO itself, for a proxy to keep (vdsoProxy).
	Image []byte `json:"image,omitempty"`
}

// sameLayout reports whether code that looked up functions in vDSO a
// finds the same functions at the same places in vDSO b.
func (a *vdsoImage) sameLayout(b *vdsoImage) bool {
	if a.Size != b.Size || len(a.Symbols) != len(b.Symbols) {
		return false
	}
	for name, off := range a.Symbols {
		if o, ok := b.Symbols[name]; !ok || o != off {
			return false
		}
	}
	return true
}

// vdsoSymbols returns the functions the vDSO image b exports.
func vdsoSymbols(b []byte) (map[string]uint64, error) {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	syms, err := f.DynamicSymbols()
	if err != nil {
		return nil, err
	}
	base := uint64(0)
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			base = p.Vaddr
			break
		}
	}
	out := map[string]uint64{}
	for _, sym := range syms {
		if elf.ST_TYPE(sym.Info) != elf.STT_FUNC || sym.Value == 0 {
			continue
		}
		out[sym.Name+"@"+sym.Version] = sym.Value - base
	}
	return out, nil
}

// readVdso returns what vdso.json keeps of task pid's [vdso], or nil if
// it has none.
func readVdso(pid int) (*vdsoImage, error) {
	maps, err := proc.Maps(pid)
	if err != nil {
		return nil, fmt.Errorf("task %d: %w", pid, err)
	}
	for _, m := range maps {
		if m.Path != "[vdso]" {
			continue
		}
		mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
		if err != nil {
			return nil, err
		}
		defer mem.Close()
		b := make([]byte, m.End-m.Start)
		if _, err := mem.ReadAt(b, int64(m.Start)); err != nil {
			return nil, fmt.Errorf("task %d: read its vDSO: %w", pid, err)
		}
		syms, err := vdsoSymbols(b)
		if err != nil {
			return nil, fmt.Errorf("task %d: its vDSO: %w", pid, err)
		}
		sum := sha256.Sum256(b)
		return &vdsoImage{Size: uint64(len(b)), Symbols: syms, SHA256: hex.EncodeToString(sum[:]), Image: b}, nil
	}
	return nil, nil
}

// writeVdso records the vDSO of task pid in dir.
func writeVdso(dir string, pid int) error {
	img, err := readVdso(pid)
	if err != nil || img == nil {
		return err
	}
	b, err := json.Marshal(img)
	if err != nil {
		return err
	}
	return images.WriteNewFile(filepath.Join(dir, vdsoFile), b)
}

// vdsoProxy keeps the calls of restored tasks into a vDSO that differs
// from this kernel's working, as CRIU does: this kernel's vDSO (with its
// data pages) goes to a free place, and the old vDSO's place holds the
// old vDSO again with, at each function it exports, a jump to the same
// function of the new one. Code that looked a function up before the
// checkpoint jumps on, and so does code that looks one up now: the C
// library's copy of the auxiliary vector names the old vDSO, whose
// symbol table is intact. Only its data pages are gone, which nothing
// reaches but its own functions. (A checkpoint whose vdso.json lacks the
// image gets int3 wherever no jump is.)
type vdsoProxy struct {
	old   []byte            // the old vDSO, if vdso.json has it
	size  uint64            // of the old vDSO
	jumps map[uint64]uint64 // offset in the old vDSO: offset in the new
}

// maxVdsoSize bounds the vDSO vdso.json may describe: x86-64's is two
// pages.
const maxVdsoSize = 1 << 20

// vdsoJumpSize is the size of one jump: movabs $target, %r11; jmp *%r11.
// r11 is scratch at a call in the x86-64 ABI (and the syscall
// instruction clobbers it anyway).
const vdsoJumpSize = 13

// planVdsoProxy returns the proxy that lets code made for vDSO old call
// into vDSO cur. It fails if cur lacks a function old has, or if old's
// functions are too close together for a jump each.
func planVdsoProxy(old, cur *vdsoImage) (*vdsoProxy, error) {
	p := &vdsoProxy{size: old.Size, jumps: map[uint64]uint64{}}
	if uint64(len(old.Image)) == old.Size {
		p.old = old.Image
	}
	var missing []string
	for name, off := range old.Symbols {
		to, ok := cur.Symbols[name]
		if !ok {
			missing = append(missing, name)
			continue
		}
		if prev, seen := p.jumps[off]; seen && prev != to {
			return nil, fmt.Errorf("the checkpoint's vDSO has one function at offset %#x that this kernel's has at %#x and %#x: %w", off, prev, to, ErrUnsupported)
		}
		p.jumps[off] = to
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, fmt.Errorf("this kernel's vDSO lacks %s, which the checkpoint's has: %w", strings.Join(missing, ", "), ErrUnsupported)
	}
	offs := make([]uint64, 0, len(p.jumps))
	for off := range p.jumps {
		offs = append(offs, off)
	}
	sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
	for i, off := range offs {
		end := off + vdsoJumpSize
		if end > old.Size || (i+1 < len(offs) && end > offs[i+1]) {
			return nil, fmt.Errorf("the checkpoint's vDSO has no room for a jump at offset %#x: %w", off, ErrUnsupported)
		}
	}
	return p, nil
}

// code returns the bytes of the proxy for this kernel's vDSO at base.
func (p *vdsoProxy) code(base uint64) []byte {
	b := bytes.Repeat([]byte{0xcc}, int(p.size))
	copy(b, p.old)
	for off, to := range p.jumps {
		j := b[off : off+vdsoJumpSize]
		j[0], j[1] = 0x49, 0xbb // movabs $imm64, %r11
		binary.LittleEndian.PutUint64(j[2:10], base+to)
		j[10], j[11], j[12] = 0x41, 0xff, 0xe3 // jmp *%r11
	}
	return b
}

// checkVdso compares the vDSO of the checkpoint in dir with this
// kernel's (ctcr's own): nil if code made for one runs with the other
// (or the checkpoint has no vdso.json), else the proxy the restored
// tasks need. With force, a proxy even if the two match.
func checkVdso(dir string, force bool) (*vdsoProxy, error) {
	b, err := os.ReadFile(filepath.Join(dir, vdsoFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var want vdsoImage
	if err := json.Unmarshal(b, &want); err != nil {
		return nil, corruptf(filepath.Join(dir, vdsoFile), "%v", err)
	}
	if want.Size == 0 || want.Size > maxVdsoSize {
		return nil, corruptf(filepath.Join(dir, vdsoFile), "a vDSO of %d bytes", want.Size)
	}
	got, err := readVdso(os.Getpid())
	if err != nil {
		return nil, err
	}
	if got == nil {
		return nil, fmt.Errorf("the checkpoint ran with a vDSO, this kernel gives none: %w", ErrUnsupported)
	}
	if want.sameLayout(got) && !force {
		return nil, nil
	}
	p, err := planVdsoProxy(&want, got)
	if err != nil {
		return nil, fmt.Errorf("the checkpoint ran with a vDSO of %d bytes, %d functions, sha256 %.12s, this kernel has %d bytes, %d functions, sha256 %.12s: %w",
			want.Size, len(want.Symbols), want.SHA256, got.Size, len(got.Symbols), got.SHA256, err)
	}
	return p, nil
}
