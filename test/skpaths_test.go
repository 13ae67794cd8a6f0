package test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The unix socket paths of issue 10: names relative to the binder's
// working directory, names unlinked or taken by another file since bind,
// and socket files still there at restore.

// shortDir makes a directory with a short path for socket names, which
// have 107 bytes at most (t.TempDir's are long), removed at the end.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "sk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// TestUnixRelativePaths dumps sockets bound to paths relative to the
// binder's working directory: they must be bound there again, under the
// same relative names.
func TestUnixRelativePaths(t *testing.T) {
	t.Run("sockets bound to relative paths come back bound in the same directory by the same names", func(t *testing.T) {
		dumpRestoreWorkload(t, "skrelative")
	})
	t.Run("the skrelative workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "skrelative").checkPasses(30*time.Second, "skrelative")
	})
}

// TestUnixUnlinkedPaths dumps listeners whose path was unlinked, taken
// by a newer listener, or taken by a regular file: each gets its name
// back without a file leading to it, and what is at the path now stays.
func TestUnixUnlinkedPaths(t *testing.T) {
	t.Run("sockets whose path was unlinked or replaced keep their names and leave the path as it was", func(t *testing.T) {
		dumpRestoreWorkload(t, "skunlinked", shortDir(t))
	})
	t.Run("the skunlinked workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "skunlinked", shortDir(t)).checkPasses(30*time.Second, "skunlinked")
	})
}

// TestUnixStaleSocketFile restores a listener whose socket file is still
// there: left behind by the dumped socket it is removed and bound again;
// bound by a live socket it is left alone and the restore is refused
// naming it, and succeeds once it is gone.
func TestUnixStaleSocketFile(t *testing.T) {
	t.Run("a socket file nobody is bound to is removed and bound again", func(t *testing.T) {
		needCtcr(t)
		path := filepath.Join(shortDir(t), "s.sock")
		w := startWorkload(t, "skstale", path)
		img := filepath.Join(t.TempDir(), "img")
		dump(t, w, img, false, 0)
		if st, err := os.Lstat(path); err != nil || st.Mode()&os.ModeSocket == 0 {
			t.Fatalf("after the dump %s is not the stale socket file (%v, %v)", path, st, err)
		}
		restoreForeground(t, w, img, scenario{}, nil)
	})
	t.Run("a socket file a live socket is bound to stays, and the restore is refused naming it", func(t *testing.T) {
		needCtcr(t)
		path := filepath.Join(shortDir(t), "s.sock")
		w := startWorkload(t, "skstale", path)
		img := filepath.Join(t.TempDir(), "img")
		dump(t, w, img, false, 0)
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		r := runCtcr(t, 60*time.Second, "restore", "-D", img)
		if r.code() != 1 || !strings.Contains(r.stderr(), path) || !strings.Contains(r.stderr(), "in use") {
			t.Fatalf("%s: exit status %d, stderr %q; want 1 and a message naming %s as in use", r, r.code(), r.stderr(), path)
		}
		c, err := net.DialTimeout("unix", path, 2*time.Second)
		if err != nil {
			t.Fatalf("after the refused restore the live socket's file %s no longer leads to it: %v", path, err)
		}
		c.Close()
		l.Close() // removes the file
		if _, err := os.Lstat(path); err == nil {
			os.Remove(path)
		}
		restoreForeground(t, w, img, scenario{}, nil)
	})
	t.Run("the skstale workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "skstale", filepath.Join(shortDir(t), "s.sock")).checkPasses(30*time.Second, "skstale")
	})
}
