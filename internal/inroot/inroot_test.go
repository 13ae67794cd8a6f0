package inroot

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// tree makes a root directory with planted links, and a directory
// outside it holding a secret.
func tree(t *testing.T) (root, outside string) {
	t.Helper()
	base := t.TempDir()
	root, outside = filepath.Join(base, "root"), filepath.Join(base, "outside")
	for _, d := range []string{root, outside, filepath.Join(root, "in"), filepath.Join(root, "abs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(outside, "secret"), []byte("outside"), 0o600)
	os.WriteFile(filepath.Join(root, "in", "secret"), []byte("inside"), 0o600)
	// Absolute: as the root's own processes see it, /in.
	os.Symlink("/in", filepath.Join(root, "abs-in"))
	// Absolute to the host's path of outside: nothing inside the root.
	os.Symlink(outside, filepath.Join(root, "abs-out"))
	// Relative, climbing far above the root.
	os.Symlink(strings.Repeat("../", 16)+strings.TrimPrefix(outside, "/"), filepath.Join(root, "climb"))
	os.Symlink("/proc/self/root"+outside, filepath.Join(root, "magic"))
	return root, outside
}

func TestResolutionStaysInTheRoot(t *testing.T) {
	dir, _ := tree(t)
	r, err := Open(dir, "the test root")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, tc := range []struct {
		path  string
		links Links
		want  string // content, or "" for an error
	}{
		{"/in/secret", NoLinks, "inside"},
		{"in/secret", NoLinks, "inside"},
		{"/../../in/secret", NoLinks, "inside"},
		{"/abs-in/secret", InRoot, "inside"},
		{"/abs-in/secret", NoLinks, ""},
		{"/abs-out/secret", InRoot, ""},
		{"/climb/secret", InRoot, ""},
		{"/magic/secret", InRoot, ""},
	} {
		f, err := r.OpenFile(tc.path, unix.O_RDONLY, 0, tc.links)
		if tc.want == "" {
			if err == nil {
				b, _ := os.ReadFile(f.Name())
				f.Close()
				t.Errorf("%s (links %d) opened, reads %q; want an error", tc.path, tc.links, b)
			} else if !strings.Contains(err.Error(), tc.path) {
				t.Errorf("%s: the error does not name the path: %v", tc.path, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s (links %d): %v", tc.path, tc.links, err)
			continue
		}
		b := make([]byte, 64)
		n, _ := f.Read(b)
		f.Close()
		if string(b[:n]) != tc.want {
			t.Errorf("%s (links %d) reads %q, want %q", tc.path, tc.links, b[:n], tc.want)
		}
	}
	if _, err := r.OpenFile("/abs-in/secret", unix.O_RDONLY, 0, NoLinks); !errors.Is(err, ErrSymlink) {
		t.Errorf("NoLinks through a symlink: %v, want ErrSymlink", err)
	}
}

func TestEntriesAreNeverReachedThroughALink(t *testing.T) {
	dir, outside := tree(t)
	r, err := Open(dir, "the test root")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// Through the parent.
	if _, err := r.Parent("/abs-out/new", NoLinks); !errors.Is(err, ErrSymlink) {
		t.Errorf("the parent of /abs-out/new: %v, want ErrSymlink", err)
	}
	// On the entry itself: a chmod of a link fails, the target keeps its mode.
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "in", "lnk"))
	d, err := r.Parent("/in/lnk", NoLinks)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Lchmod(0o4777); err == nil {
		t.Error("Lchmod of a symlink succeeded")
	}
	if _, err := d.Open(unix.O_RDONLY, 0); !errors.Is(err, ErrSymlink) {
		t.Errorf("Open of a symlink entry: %v, want ErrSymlink", err)
	}
	if err := d.Mkdir(0o755); err == nil {
		t.Error("Mkdir over a symlink succeeded")
	}
	if st, _ := os.Stat(filepath.Join(outside, "secret")); st.Mode().Perm() != 0o600 {
		t.Errorf("the outside secret is now %v", st.Mode())
	}
	if _, err := r.Parent("/in/..", NoLinks); !errors.Is(err, ErrBadName) {
		t.Errorf(`Parent("/in/.."): %v, want ErrBadName`, err)
	}
	// MkdirAll: through a link that leads to an existing directory
	// inside the root it goes on there; it never creates what a
	// dangling link names (that would follow it), inside or outside.
	f, err := r.MkdirAll("/abs-in/made/here", 0o755, InRoot)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := os.Stat(filepath.Join(dir, "in", "made", "here")); err != nil {
		t.Errorf("MkdirAll through /abs-in did not make /in/made/here: %v", err)
	}
	if f, err := r.MkdirAll("/abs-out/made/here", 0o755, InRoot); err == nil {
		f.Close()
		t.Error("MkdirAll through the dangling /abs-out succeeded")
	}
	if _, err := os.Stat(filepath.Join(outside, "made")); err == nil {
		t.Error("MkdirAll through /abs-out made a directory outside the root")
	}
}
