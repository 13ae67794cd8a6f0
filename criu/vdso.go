package criu

import (
	"crypto/sha256"
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
// compares the two and refuses rather than let that happen. (CRIU
// instead keeps the old vDSO as a table of jumps into the new one.)
// CRIU's images have no field for it.
const vdsoFile = "vdso.json"

// vdsoImage is what vdso.json holds.
type vdsoImage struct {
	Size   uint64 `json:"size"`
	SHA256 string `json:"sha256"`
}

// readVdso returns the size and hash of task pid's [vdso], or nil if it
// has none.
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
		sum := sha256.Sum256(b)
		return &vdsoImage{Size: uint64(len(b)), SHA256: hex.EncodeToString(sum[:])}, nil
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
	if got == nil || *got != want {
		have := "none"
		if got != nil {
			have = fmt.Sprintf("%d bytes, sha256 %.12s", got.Size, got.SHA256)
		}
		return fmt.Errorf("the checkpoint ran with a vDSO of %d bytes, sha256 %.12s, this kernel has %s: its tasks would jump into the wrong code (restoring across kernels whose vDSO differs): %w",
			want.Size, want.SHA256, have, ErrUnsupported)
	}
	return nil
}
