package container

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writeFakeBundle makes dir a complete checkpoint of id as far as the
// generation code looks: a ctcr.json, and images/ with one file.
func writeFakeBundle(t *testing.T, dir, id string, created time.Time) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "images"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "images", "pages-1.img"), make([]byte, 4096), 0o600)
	b, _ := json.Marshal(Meta{ID: id, Runtime: "runc", Created: created})
	if err := os.WriteFile(filepath.Join(dir, "ctcr.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func withCheckpointRoot(t *testing.T) {
	old := CheckpointRoot
	CheckpointRoot = t.TempDir()
	t.Cleanup(func() { CheckpointRoot = old })
}

func TestGenerationsOldLayoutStillRestores(t *testing.T) {
	withCheckpointRoot(t)
	home := Home("ct")
	writeFakeBundle(t, home, "ct", time.Now().Add(-time.Hour))
	if d, err := FindCheckpoint("ct", "", ""); err != nil || d != home {
		t.Fatalf("FindCheckpoint of an old-layout home: %q, %v; want %s", d, err, home)
	}
	gens, err := Generations("ct")
	if err != nil || len(gens) != 1 || gens[0].Name != "." || !gens[0].Complete || gens[0].Bytes < 4096 {
		t.Fatalf("Generations of an old-layout home: %+v, %v; want one complete \".\"", gens, err)
	}
	// A new generation beside it becomes latest, and is what restores.
	dir, err := newGeneration(home)
	if err != nil {
		t.Fatal(err)
	}
	writeFakeBundle(t, dir, "ct", time.Now())
	if err := setLatest(home, filepath.Base(dir)); err != nil {
		t.Fatal(err)
	}
	if d, err := FindCheckpoint("ct", "", ""); err != nil || d != dir {
		t.Fatalf("FindCheckpoint with latest beside an old-layout checkpoint: %q, %v; want %s", d, err, dir)
	}
	if d, err := FindCheckpoint("ct", "", "."); err != nil || d != home {
		t.Fatalf("FindCheckpoint of \".\": %q, %v; want the old layout's %s", d, err, home)
	}
	gens, _ = Generations("ct")
	if len(gens) != 2 || gens[0].Name != "." || gens[1].Name != filepath.Base(dir) || !gens[1].Latest {
		t.Fatalf("Generations: %+v; want \".\" then the new latest", gens)
	}
	if gens[0].Bytes >= 2*4096+1024 {
		t.Errorf("the old layout's size (%d) counts the new generation's files too", gens[0].Bytes)
	}
}

func TestGenerationsPruneAndFind(t *testing.T) {
	withCheckpointRoot(t)
	home := Home("ct")
	var dirs []string
	for i := 0; i < 4; i++ {
		d, err := newGeneration(home)
		if err != nil {
			t.Fatal(err)
		}
		writeFakeBundle(t, d, "ct", time.Now().Add(time.Duration(i)*time.Second))
		dirs = append(dirs, d)
	}
	if len(map[string]bool{dirs[0]: true, dirs[1]: true, dirs[2]: true, dirs[3]: true}) != 4 {
		t.Fatalf("newGeneration gave the same name twice: %v", dirs)
	}
	// Four generations but no latest: none was ever completed.
	if _, err := FindCheckpoint("ct", "", ""); !errors.Is(err, ErrUnknown) {
		t.Fatalf("FindCheckpoint without latest: %v, want ErrUnknown", err)
	}
	if err := setLatest(home, filepath.Base(dirs[3])); err != nil {
		t.Fatal(err)
	}
	removed, err := prune(home, 2)
	if err != nil || len(removed) != 2 || removed[0] != dirs[0] || removed[1] != dirs[1] {
		t.Fatalf("prune(2): removed %v, %v; want %v", removed, err, dirs[:2])
	}
	gens, _ := Generations("ct")
	if len(gens) != 2 || gens[0].Dir != dirs[2] || !gens[1].Latest {
		t.Fatalf("after prune(2): %+v", gens)
	}
	if _, err := FindCheckpoint("ct", "", filepath.Base(dirs[0])); !errors.Is(err, ErrUnknown) {
		t.Errorf("FindCheckpoint of a pruned generation: %v, want ErrUnknown", err)
	}
	for _, bad := range []string{"..", "../x", "a/b"} {
		if _, err := FindCheckpoint("ct", "", bad); err == nil {
			t.Errorf("FindCheckpoint accepted the generation name %q", bad)
		}
	}
	if _, err := FindCheckpoint("nosuch", "", ""); !errors.Is(err, ErrUnknown) {
		t.Errorf("FindCheckpoint of a container with no home: %v, want ErrUnknown", err)
	}
	ents, _ := os.ReadDir(home)
	for _, e := range ents {
		if e.Name() != LatestLink && e.Name() != filepath.Base(dirs[2]) && e.Name() != filepath.Base(dirs[3]) {
			t.Errorf("%s left in %s", e.Name(), home)
		}
	}
}
