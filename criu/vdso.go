package criu

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ctcr/ctcr/criu/proc"
)

// vdsoFile records the vDSO the tree ran with. The restored tasks get
// this kernel's vDSO at the old address, but the C library keeps the
// addresses of vDSO functions it looked up once: on a kernel whose vDSO
// differs (another build, another host), those point into the middle of
// other code, and the first clock_gettime crashes. So the restore
// compares where the two have their functions and refuses rather than
// let that happen. (CRIU
// instead keeps the old vDSO as a table of jumps into the new one.)
// CRIU's images have no field for it.
const vdsoFile = "vdso.json"

// vdsoImage is what vdso.json holds: the size of the vDSO and where
// each function it exports is. Its bytes may differ between machines
// running the same kernel (the kernel patches in the instructions the
// CPU has), so they are not compared, only their hash kept.
type vdsoImage struct {
	Size    uint64            `json:"size"`
	Symbols map[string]uint64 `json:"symbols"` // name@version: offset
	SHA256  string            `json:"sha256"`
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
		return &vdsoImage{Size: uint64(len(b)), Symbols: syms, SHA256: hex.EncodeToString(sum[:])}, nil
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
	return os.WriteFile(filepath.Join(dir, vdsoFile), b, 0o600)
}

// checkVdso refuses a checkpoint in dir whose vDSO differs from this
// kernel's (ctcr's own). A checkpoint without vdso.json is not checked.
func checkVdso(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, vdsoFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var want vdsoImage
	if err := json.Unmarshal(b, &want); err != nil {
		return corruptf(filepath.Join(dir, vdsoFile), "%v", err)
	}
	got, err := readVdso(os.Getpid())
	if err != nil {
		return err
	}
	if got == nil || !want.sameLayout(got) {
		have := "none"
		if got != nil {
			have = fmt.Sprintf("%d bytes, %d functions, sha256 %.12s", got.Size, len(got.Symbols), got.SHA256)
		}
		return fmt.Errorf("the checkpoint ran with a vDSO of %d bytes, %d functions, sha256 %.12s, this kernel has %s at other places: its tasks would jump into the wrong code (restoring across kernels whose vDSO differs): %w",
			want.Size, len(want.Symbols), want.SHA256, have, ErrUnsupported)
	}
	return nil
}
