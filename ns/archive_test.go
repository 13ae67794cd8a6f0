package ns

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestArchiveTreeStaysInside archives a directory as a tmpfs of the
// test's own mount namespace is archived at dump: directories, files,
// symlinks and FIFOs are kept with their content; a socket file is left
// out; a directory in mountpoints is kept empty; and a symlink to a
// directory outside, under any name, is archived as the link, never
// walked.
func TestArchiveTreeStaysInside(t *testing.T) {
	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "secret"), []byte("host"), 0o600); err != nil {
		t.Fatal(err)
	}
	top := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(top, "d/e"), 0o750))
	must(os.WriteFile(filepath.Join(top, "d/f"), []byte("data"), 0o640))
	must(os.WriteFile(filepath.Join(top, "d/e/g"), []byte("deeper"), 0o600))
	must(os.Symlink(host, filepath.Join(top, "esc")))
	must(os.Symlink("../../../../../../.."+host, filepath.Join(top, "d/up")))
	must(unix.Mkfifo(filepath.Join(top, "p"), 0o600))
	must(os.MkdirAll(filepath.Join(top, "mnt/hidden"), 0o755))
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	must(err)
	defer unix.Close(sock)
	must(unix.Bind(sock, &unix.SockaddrUnix{Name: filepath.Join(top, "s")}))

	out := filepath.Join(t.TempDir(), "tmpfs.tar.gz.img")
	must(archiveTree(os.Getpid(), top, map[string]bool{filepath.Join(top, "mnt"): true}, out))

	f, err := os.Open(out)
	must(err)
	defer f.Close()
	gz, err := gzip.NewReader(f)
	must(err)
	tr := tar.NewReader(gz)
	got := map[string]string{}
	var order []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(err)
		b, err := io.ReadAll(tr)
		must(err)
		switch h.Typeflag {
		case tar.TypeSymlink:
			got[h.Name] = "-> " + h.Linkname
		case tar.TypeFifo:
			got[h.Name] = "fifo"
		case tar.TypeDir:
			got[h.Name] = "dir"
		default:
			got[h.Name] = string(b)
		}
		order = append(order, h.Name)
	}
	want := map[string]string{
		"d/": "dir", "d/e/": "dir", "d/e/g": "deeper", "d/f": "data",
		"d/up": "-> ../../../../../../.." + host, "esc": "-> " + host,
		"mnt/": "dir", "p": "fifo",
	}
	if len(got) != len(want) {
		t.Errorf("archive holds %v (in order %v), want %v", got, order, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("entry %q: %q, want %q", k, got[k], v)
		}
	}
	if strings.Join(order, " ") != "d/ d/e/ d/e/g d/f d/up esc mnt/ p" {
		t.Errorf("entries in order %v, want a depth-first walk in lexical order", order)
	}
}

// TestArchiveReopenRefusesAReplacedEntry: an entry stat'ed through its
// O_PATH fd and then replaced (here a directory by a symlink to one
// outside, as a racing writer could) is refused when it is opened for
// its content, not followed.
func TestArchiveReopenRefusesAReplacedEntry(t *testing.T) {
	top := t.TempDir()
	if err := os.Mkdir(filepath.Join(top, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := os.Open(top)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	fi, err := os.Lstat(filepath.Join(top, "d"))
	if err != nil {
		t.Fatal(err)
	}
	a := &archiver{mp: "/tmp/x"}
	// Another directory put in its place: not the same inode.
	if err := os.Rename(filepath.Join(top, "d"), filepath.Join(top, "old")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(top, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := a.reopen(dir, "d", "d", fi, unix.O_RDONLY|unix.O_DIRECTORY); err == nil || !strings.Contains(err.Error(), "replaced") {
		t.Errorf("reopen of a directory replaced by another: %v, want a refusal", err)
	}
	// A symlink to a directory outside in its place: O_NOFOLLOW.
	if err := os.Remove(filepath.Join(top, "d")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(t.TempDir(), filepath.Join(top, "d")); err != nil {
		t.Fatal(err)
	}
	_, err = a.reopen(dir, "d", "d", fi, unix.O_RDONLY|unix.O_DIRECTORY)
	if !errors.Is(err, unix.ELOOP) && !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("reopen of a directory replaced by a symlink: %v, want ELOOP or ENOTDIR", err)
	}
	if err == nil || !strings.Contains(err.Error(), "/tmp/x/d") {
		t.Errorf("error %v does not name the entry /tmp/x/d", err)
	}
}
