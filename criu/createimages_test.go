package criu

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctcr/ctcr/criu/images"
)

// TestImageWritersRefuseAPlantedName plants, where each writer of the
// dump creates its file in the staging directory, a symlink to a file
// outside it (dangling too, and a plain file), and wants every writer to
// refuse with an error that names the file, leaving the symlink's target
// as it was: no image is ever written through a name that was there
// before.
func TestImageWritersRefuseAPlantedName(t *testing.T) {
	writers := []struct {
		file  string
		write func(stage *images.Staging) error
	}{
		{images.Inventory.FileName(), func(s *images.Staging) error {
			return images.WriteFile(s.Path(images.Inventory.FileName()), images.Inventory)
		}},
		{compressionFile, func(s *images.Staging) error { return writeCompression(s, CompressZstd) }},
		{vdsoFile, func(s *images.Staging) error { return writeVdso(s.Dir, os.Getpid()) }},
		{schedFile, func(s *images.Staging) error { return writeSched(s.Path(schedFile), &schedImage{}) }},
		{ambientFile, func(s *images.Staging) error {
			return writeAmbient(s.Dir, []*dumpProc{{threads: []*dumpThread{{vtid: 1, ambient: 1}}}})
		}},
		{"pages-1.img", func(s *images.Staging) error {
			ps, err := newPageSink(s.Path("pages-1.img"))
			if err == nil {
				ps.abort()
			}
			return err
		}},
		{"tty-data.img", func(s *images.Staging) error {
			return writeWithPayloads(s.Path("tty-data.img"), &extraImage{kind: images.Kind{Name: "RAW", File: "tty-data.img", Prefix: images.PrefixRaw}, payload: [][]byte{[]byte("x")}})
		}},
		{"sidecar.json", func(s *images.Staging) error {
			return (&fileTable{sidecars: []sidecar{{name: "sidecar.json", data: []byte("{}")}}}).writeExtra(s)
		}},
		{images.PreDumpFile, func(s *images.Staging) error { return s.WriteFile(images.PreDumpFile, []byte("{}\n")) }},
	}
	plants := []struct {
		what  string
		plant func(t *testing.T, at, target string)
	}{
		{"a symlink to a file outside", func(t *testing.T, at, target string) {
			if err := os.Symlink(target, at); err != nil {
				t.Fatal(err)
			}
		}},
		{"a dangling symlink", func(t *testing.T, at, target string) {
			os.Remove(target)
			if err := os.Symlink(target, at); err != nil {
				t.Fatal(err)
			}
		}},
		{"a file", func(t *testing.T, at, target string) {
			if err := os.WriteFile(at, []byte("planted"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, w := range writers {
		for _, p := range plants {
			t.Run(w.file+" is not written through "+p.what, func(t *testing.T) {
				tmp := t.TempDir()
				target := filepath.Join(tmp, "precious")
				if err := os.WriteFile(target, []byte("precious"), 0o600); err != nil {
					t.Fatal(err)
				}
				s, err := images.NewStaging(filepath.Join(tmp, "img"))
				if err != nil {
					t.Fatal(err)
				}
				defer s.Abort()
				p.plant(t, s.Path(w.file), target)
				err = w.write(s)
				if err == nil {
					t.Fatalf("writing %s over %s succeeded", w.file, p.what)
				}
				if !strings.Contains(err.Error(), w.file) || !errors.Is(err, fs.ErrExist) {
					t.Errorf("the error does not name %s or is no ErrExist: %v", w.file, err)
				}
				if testing.Verbose() {
					t.Log(err)
				}
				b, rerr := os.ReadFile(target)
				switch {
				case p.what == "a dangling symlink" && !errors.Is(rerr, fs.ErrNotExist):
					t.Errorf("the dangling symlink's target was created: %q, %v", b, rerr)
				case p.what != "a dangling symlink" && string(b) != "precious":
					t.Errorf("the symlink's target holds %q (%v), want it untouched", b, rerr)
				}
				if b, _ := os.ReadFile(s.Path(w.file)); p.what == "a file" && string(b) != "planted" {
					t.Errorf("the planted file holds %q, want it untouched", b)
				}
			})
		}
	}
}
