package images

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// commitSample stages and commits a small checkpoint with a
// subdirectory, and returns its directory.
func commitSample(t *testing.T) string {
	t.Helper()
	final := filepath.Join(t.TempDir(), "ckpt")
	s, err := NewStaging(final)
	if err != nil {
		t.Fatal(err)
	}
	stage(t, s, InventoryFile, "core-1.img", "pages-1.img")
	if err := os.Mkdir(s.Path("pre-copy"), 0o700); err != nil {
		t.Fatal(err)
	}
	stage(t, s, "pre-copy/pages-1.img")
	// Recorded while written, as the page path does.
	f, err := os.OpenFile(s.Path("big.img"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("0123456789"))
	if err := RecordSum(f, crcOf([]byte("0123456789"))); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Symlink("pre-copy", s.Path("parent")); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	return final
}

func crcOf(b []byte) uint32 {
	f, _ := os.CreateTemp("", "crc")
	defer os.Remove(f.Name())
	f.Write(b)
	f.Seek(0, 0)
	_, c, _ := checksumReader(f)
	return c
}

func forgetVerified() {
	verified.Lock()
	verified.m = map[string]fileSum{}
	verified.Unlock()
}

func TestManifestVerifies(t *testing.T) {
	dir := commitSample(t)
	if w, err := VerifyManifest(dir); err != nil || len(w) != 0 {
		t.Fatalf("fresh checkpoint: warnings %v, error %v", w, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pre-copy", ManifestFile)); err != nil {
		t.Errorf("the subdirectory has no manifest of its own: %v", err)
	}
}

func TestManifestFindsDamage(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		harm       func(dir string) error
	}{
		{"deleted", "core-1.img: missing", func(d string) error { return os.Remove(filepath.Join(d, "core-1.img")) }},
		{"truncated", "big.img: truncated", func(d string) error { return os.Truncate(filepath.Join(d, "big.img"), 3) }},
		{"grown", "big.img: 11 bytes", func(d string) error {
			f, err := os.OpenFile(filepath.Join(d, "big.img"), os.O_APPEND|os.O_WRONLY, 0)
			if err == nil {
				_, err = f.Write([]byte("x"))
				f.Close()
			}
			return err
		}},
		{"flipped", "big.img: damaged", func(d string) error {
			f, err := os.OpenFile(filepath.Join(d, "big.img"), os.O_WRONLY, 0)
			if err == nil {
				_, err = f.WriteAt([]byte("X"), 4)
				f.Close()
			}
			return err
		}},
		{"flipped in a subdirectory", "pre-copy/pages-1.img: damaged", func(d string) error {
			return os.WriteFile(filepath.Join(d, "pre-copy", "pages-1.img"), []byte("pre-copy/pages-1.imX"), 0o600)
		}},
		{"added", "core-2.img: not in the manifest", func(d string) error { return os.WriteFile(filepath.Join(d, "core-2.img"), nil, 0o600) }},
		{"link changed", "parent: leads to", func(d string) error {
			os.Remove(filepath.Join(d, "parent"))
			return os.Symlink("/", filepath.Join(d, "parent"))
		}},
		{"manifest damaged", "manifest.json: damaged", func(d string) error {
			return os.WriteFile(filepath.Join(d, ManifestFile), []byte("{\x01"), 0o600)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forgetVerified()
			dir := commitSample(t)
			if err := tc.harm(dir); err != nil {
				t.Fatal(err)
			}
			_, err := VerifyManifest(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v, want one containing %q and wrapping ErrCorrupt", err, tc.want)
			}
			if strings.ContainsAny(err.Error(), "\x01\n") {
				t.Errorf("error %q holds raw bytes", err)
			}
		})
	}
}

func TestManifestMissing(t *testing.T) {
	dir := commitSample(t)
	os.Remove(filepath.Join(dir, ManifestFile))
	if _, err := VerifyManifest(dir); !errors.Is(err, ErrNoManifest) {
		t.Fatalf("error %v, want ErrNoManifest", err)
	}
}

func TestStalePartialsRemoved(t *testing.T) {
	dir := t.TempDir()
	dead := filepath.Join(dir, PartialPrefix+"pre-copy-pid999999999-1")
	live := filepath.Join(dir, PartialPrefix+"pid1-2")
	old := filepath.Join(dir, PartialPrefix+"12345")
	for _, d := range []string{dead, live, old} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	RemoveStalePartials(dir)
	if _, err := os.Stat(dead); err == nil {
		t.Errorf("%s of a dead PID stayed", dead)
	}
	for _, d := range []string{live, old} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s was removed: %v", d, err)
		}
	}
}

func TestAbortRemovesWhatItMade(t *testing.T) {
	base := t.TempDir()
	final := filepath.Join(base, "a", "b")
	s, err := NewStaging(final)
	if err != nil {
		t.Fatal(err)
	}
	stage(t, s, "core-1.img")
	if err := s.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(base, "a")); err == nil {
		t.Errorf("the failed dump left %s behind", filepath.Join(base, "a"))
	}
}

func TestUpdateManifest(t *testing.T) {
	dir := commitSample(t)
	if err := os.WriteFile(filepath.Join(dir, "stats-dump"), []byte("late"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := UpdateManifest(dir, "stats-dump"); err != nil {
		t.Fatal(err)
	}
	forgetVerified()
	if _, err := VerifyManifest(dir); err != nil {
		t.Fatalf("after the update: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "stats-dump"), []byte("LATE"), 0o600)
	forgetVerified()
	if _, err := VerifyManifest(dir); err == nil || !strings.Contains(err.Error(), "stats-dump: damaged") {
		t.Fatalf("a damaged late file: error %v", err)
	}
}
