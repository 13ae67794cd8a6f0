package ns

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/internal/inroot"
)

// TestExtractTreeNeverFollowsALink unpacks crafted archives into a real,
// fresh tmpfs, as restore does: whatever the archive holds, nothing is
// created, written or chmodded outside the tmpfs, and every escape is an
// error naming its entry. A genuine archive (a file in a directory, a
// symlink, a FIFO, modes) unpacks as it was.
func TestExtractTreeNeverFollowsALink(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	host := t.TempDir()
	secret := filepath.Join(host, "secret")
	if err := os.WriteFile(secret, []byte("host"), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := func(name string, mode int64) *tar.Header {
		return &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: 4}
	}
	link := func(name, to string) *tar.Header {
		return &tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: to, Mode: 0o777}
	}
	dir := func(name string, mode int64) *tar.Header {
		return &tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode}
	}
	climb := strings.Repeat("../", 20) + strings.TrimPrefix(host, "/")
	for _, tc := range []struct {
		name  string
		entry string // named in the error; "" for an archive that must unpack
		hdrs  []*tar.Header
	}{
		{"a setuid file through an absolute link", "esc/x", []*tar.Header{link("esc", host), reg("esc/x", 0o4755)}},
		{"a file through a climbing link", "up/x", []*tar.Header{link("up", climb), reg("up/x", 0o644)}},
		{"a directory through a link", "esc/d/", []*tar.Header{link("esc", host), dir("esc/d/", 0o777)}},
		{"a directory entry over a link to a host file", "lnk/", []*tar.Header{link("lnk", secret), dir("lnk/", 0o777)}},
		{"a file entry over a link to a host file", "lnk", []*tar.Header{link("lnk", secret), reg("lnk", 0o4777)}},
		{"a FIFO through a link", "esc/p", []*tar.Header{link("esc", host), {Name: "esc/p", Typeflag: tar.TypeFifo, Mode: 0o666}}},
		{"an entry climbing by name", "../x", []*tar.Header{reg("../x", 0o644)}},
		{"a genuine archive", "", []*tar.Header{dir("d/", 0o750), reg("d/f", 0o640), link("l", "/d/f"), {Name: "p", Typeflag: tar.TypeFifo, Mode: 0o600}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt := t.TempDir()
			if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
				t.Fatal(err)
			}
			defer unix.Unmount(mnt, unix.MNT_DETACH)
			archive := filepath.Join(t.TempDir(), "a.tar.gz")
			if err := os.WriteFile(archive, tarGz(t, tc.hdrs), 0o600); err != nil {
				t.Fatal(err)
			}
			root, err := inroot.Open(mnt, "the tmpfs")
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()
			err = extractTree(archive, root)
			switch {
			case tc.entry == "" && err != nil:
				t.Fatalf("a genuine archive: %v", err)
			case tc.entry != "" && err == nil:
				t.Errorf("extractTree succeeded")
			case tc.entry != "" && !strings.Contains(err.Error(), `entry "`+tc.entry+`"`):
				t.Errorf("the error does not name the entry %q: %v", tc.entry, err)
			}
			ents, _ := os.ReadDir(host)
			if len(ents) != 1 {
				t.Errorf("the host directory holds %d entries, want 1 (secret)", len(ents))
			}
			if st, err := os.Stat(secret); err != nil || st.Mode() != 0o600 {
				t.Errorf("the host's secret is now %v (%v)", st.Mode(), err)
			}
			if tc.entry == "" {
				for p, want := range map[string]os.FileMode{"d": os.ModeDir | 0o750, "d/f": 0o640, "p": os.ModeNamedPipe | 0o600} {
					if st, err := os.Lstat(filepath.Join(mnt, p)); err != nil || st.Mode() != want {
						t.Errorf("%s: %v (%v), want %v", p, st.Mode(), err, want)
					}
				}
				if to, err := os.Readlink(filepath.Join(mnt, "l")); err != nil || to != "/d/f" {
					t.Errorf("l -> %q (%v), want /d/f", to, err)
				}
			}
		})
	}
}

func tarGz(t *testing.T, hdrs []*tar.Header) []byte {
	t.Helper()
	var b bytes.Buffer
	gz := gzip.NewWriter(&b)
	tw := tar.NewWriter(gz)
	for _, h := range hdrs {
		h.ModTime = time.Unix(1700000000, 0)
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte("data")[:h.Size])
		}
	}
	tw.Close()
	gz.Close()
	return b.Bytes()
}
