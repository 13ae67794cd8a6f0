package test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPlantedNamesAreNotWrittenThrough plants a symlink to a file
// outside where ctcr creates a file of its own, and wants the target
// untouched: a file in the image directory (stats-dump, written there
// after the commit) is refused by name, the dump being complete without
// it; a file the user names (--pidfile), which ctcr overwrites by
// design, is replaced by a new file, never opened through the link.
// In a container checkpoint's directory, images/ and runtime/ planted
// as symlinks to a directory outside are refused by name before the
// container is touched. (The images a dump stages are covered file by file by the criu
// package's TestImageWritersRefuseAPlantedName.)
func TestPlantedNamesAreNotWrittenThrough(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "counter")
	pid := strconv.Itoa(w.pid)
	plant := func(t *testing.T, at string) (target string) {
		t.Helper()
		target = filepath.Join(t.TempDir(), "precious")
		if err := os.WriteFile(target, []byte("precious\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(at), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, at); err != nil {
			t.Fatal(err)
		}
		return target
	}
	untouched := func(t *testing.T, target string) {
		t.Helper()
		if b, err := os.ReadFile(target); err != nil || string(b) != "precious\n" {
			t.Errorf("the symlink's target holds %q (%v): ctcr wrote through the link", b, err)
		}
	}

	t.Run("stats-dump planted in the dump directory is refused by name", func(t *testing.T) {
		img := filepath.Join(t.TempDir(), "img")
		target := plant(t, filepath.Join(img, "stats-dump"))
		r := runCtcr(t, 120*time.Second, "dump", "-t", pid, "-D", img, "--leave-running")
		w.logs = append(w.logs, r.errP)
		if r.code() != 0 {
			t.Fatalf("%s: exit status %d, want 0 (the checkpoint is complete without its timings): %s", r, r.code(), r.stderr())
		}
		if !strings.Contains(r.stderr(), "stats-dump") || !strings.Contains(r.stderr(), "was there before") {
			t.Errorf("%s warned nothing about the planted stats-dump: %q", r, r.stderr())
		}
		untouched(t, target)
		if fi, err := os.Lstat(filepath.Join(img, "stats-dump")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("the planted stats-dump is no longer the symlink planted (%v, %v)", fi, err)
		}
		if _, err := os.Stat(filepath.Join(img, "inventory.img")); err != nil {
			t.Errorf("the dump wrote no inventory.img: %v", err)
		}
		if err := assertRunnable(w.pid); err != nil {
			t.Fatalf("after dump --leave-running the task is %v", err)
		}
	})

	t.Run("a --pidfile that is a symlink is replaced, not written through", func(t *testing.T) {
		img := filepath.Join(t.TempDir(), "img")
		dump(t, w, img, false, 0)
		pidfile := filepath.Join(t.TempDir(), "pid")
		target := plant(t, pidfile)
		r := runCtcr(t, 60*time.Second, "restore", "-D", img, "-d", "--pidfile", pidfile)
		w.logs = append(w.logs, r.errP)
		if r.code() != 0 {
			t.Fatalf("%s: exit status %d, want 0: %s", r, r.code(), r.stderr())
		}
		untouched(t, target)
		if b, err := os.ReadFile(pidfile); err != nil || strings.TrimSpace(string(b)) != pid {
			t.Errorf("the pidfile holds %q (%v), want %s", b, err, pid)
		}
		if fi, err := os.Lstat(pidfile); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("the pidfile is not a regular file (%v, %v)", fi, err)
		}
	})

	for _, sub := range []string{"images", "runtime"} {
		t.Run("a container checkpoint refuses "+sub+"/ planted as a symlink", func(t *testing.T) {
			c := newContainer(t, "tidy-planted", nil)
			c.start()
			dir := filepath.Join(t.TempDir(), "ck")
			elsewhere := t.TempDir()
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(elsewhere, filepath.Join(dir, sub)); err != nil {
				t.Fatal(err)
			}
			r := runCtcr(t, 60*time.Second, "checkpoint", c.id, "-D", dir, "--leave-running")
			// 16: the checkpoint failed and the container runs on.
			if r.code() != 16 || !strings.Contains(r.stderr(), sub+" is not a directory but a symlink") {
				t.Errorf("%s: exit status %d, want 16 with a message naming %s: %s", r, r.code(), sub, r.stderr())
			}
			if ents, err := os.ReadDir(elsewhere); err != nil || len(ents) != 0 {
				t.Errorf("the symlink's target directory holds %v (%v), want it untouched", ents, err)
			}
			c.assertCounting(t, "after the refused checkpoint")
		})
	}
}
