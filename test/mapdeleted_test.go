package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMappedMemfdsAndUnlinkedFiles dumps the mapdeleted workload:
// MAP_SHARED and MAP_PRIVATE mappings of a memfd also open as an fd, a
// memfd only mappings hold, a private mapping of a file unlinked after
// mmap (with a copied page) and a shared one whose fd is kept. Each
// memfd and file must be saved once, and after restore each mapping must
// be at its address with its offset, protection and sharing, and hold
// its content; writes through shared mappings and fds must reach each
// other, as the workload checks itself.
func TestMappedMemfdsAndUnlinkedFiles(t *testing.T) {
	t.Run("memfd and unlinked file mappings keep content, sharing and addresses", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "mapdeleted")
		img := filepath.Join(t.TempDir(), "img")
		dump(t, w, img, false, 0)
		// Two memfds and two unlinked files, each saved once however
		// many fds and mappings reach it.
		if b, err := os.ReadFile(filepath.Join(img, "memfd.img")); err != nil {
			t.Errorf("the dump wrote no memfd.img: %v", err)
		} else {
			// "ctcr-map" is also the start of "ctcr-maponly".
			if n, m := strings.Count(string(b), "ctcr-map"), strings.Count(string(b), "ctcr-maponly"); n != 2 || m != 1 {
				t.Errorf("memfd.img names ctcr-map %d times and ctcr-maponly %d times, want each once", n-m, m)
			}
		}
		ghosts, _ := filepath.Glob(filepath.Join(img, "ghost-file-*.img"))
		if len(ghosts) != 2 {
			t.Errorf("the dump wrote ghost files %v, want two (deleted.dat and shared.dat)", ghosts)
		}
		decodeWithCrit(t, img)
		restoreForeground(t, w, img, scenario{}, nil)
	})
	t.Run("the mapdeleted workload passes when it is never dumped", func(t *testing.T) {
		w := startWorkload(t, "mapdeleted")
		w.checkPasses(30*time.Second, "mapdeleted")
	})
}
