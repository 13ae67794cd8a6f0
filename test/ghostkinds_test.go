package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRemovedObjectsOfOtherKinds dumps the ghostkinds workload once per
// kind of removed object a task can still hold: an unlinked FIFO with
// data queued, a removed directory open as an fd, a removed cwd, a
// removed root (of a chrooted child), a removed device node and an
// O_PATH fd on a removed symlink. The dump must keep each as a ghost
// (ghost-file-1.img, remapped in remap-fpath.img, readable by crit);
// after restore the workload checks the object's type, mode, owner,
// rdev, data and deadness itself, and no name for it may be left in the
// workload's directory.
func TestRemovedObjectsOfOtherKinds(t *testing.T) {
	// ghost has what crit must find in ghost-file-1.img: the mode with
	// its type (S_IFIFO 0010000, S_IFDIR 0040000, S_IFCHR 0020000,
	// S_IFLNK 0120000), the rdev 1:3 (crit prints it so), the symlink's target.
	for _, k := range []struct {
		kind, what string
		ghost      []string
	}{
		{"fifo", "an unlinked FIFO keeps its mode and queued data and passes data between its fds", []string{`"mode": 4512`}},
		{"dir", "a removed directory fd stays a dead directory with its mode and owner", []string{`"mode": 16873`, `"uid": 1234`}},
		{"cwd", "a removed cwd stays a dead directory that /proc shows as deleted", []string{`"mode": 16872`}},
		{"root", "a removed root stays the chrooted child's dead root", []string{`"mode": 16877`}},
		{"dev", "a removed device node keeps its numbers, mode and owner", []string{`"mode": 8592`, `"rdev": "1:3"`}},
		{"symlink", "an O_PATH fd on a removed symlink still reads its target", []string{`"symlnk_target": "some/target-xyz"`}},
	} {
		t.Run(k.what, func(t *testing.T) {
			needCtcr(t)
			w := startWorkload(t, "ghostkinds", k.kind)
			img := filepath.Join(t.TempDir(), "img")
			kids := childrenOf(w.pid)
			dump(t, w, img, false, 0)
			// The chrooted child, killed by the dump, was re-parented
			// to this subreaper: reap it, or its PID stays taken.
			for pid := range kids {
				if _, _, err := reap(pid, 10*time.Second); err != nil {
					t.Fatal(err)
				}
			}
			for _, name := range []string{"remap-fpath.img", "ghost-file-1.img"} {
				if _, err := os.Stat(filepath.Join(img, name)); err != nil {
					t.Errorf("the dump wrote no %s: %v", name, err)
				}
			}
			decodeWithCrit(t, img)
			if crit, err := exec.LookPath("crit"); err == nil {
				out, err := exec.Command(crit, "decode", "--pretty", "-i", filepath.Join(img, "ghost-file-1.img")).CombinedOutput()
				for _, want := range k.ghost {
					if err != nil || !strings.Contains(string(out), want) {
						t.Errorf("crit decode of ghost-file-1.img has no %s (%v):\n%s", want, err, out)
					}
				}
			}
			restoreForeground(t, w, img, scenario{}, nil)
			left, _ := filepath.Glob(w.path("*gk-*"))
			if len(left) != 0 {
				t.Errorf("names left in the workload's directory after restore: %v", left)
			}
		})
	}
	for _, kind := range []string{"fifo", "dir"} {
		t.Run("when its name was taken since the dump, a removed "+kind+" is made beside it and the name is left alone", func(t *testing.T) {
			needCtcr(t)
			w := startWorkload(t, "ghostkinds", kind, "name-taken")
			img := filepath.Join(t.TempDir(), "img")
			dump(t, w, img, false, 0)
			planted := w.path("gk-" + kind)
			if err := os.WriteFile(planted, []byte("planted"), 0o600); err != nil {
				t.Fatal(err)
			}
			restoreForeground(t, w, img, scenario{}, nil)
			if b, err := os.ReadFile(planted); err != nil || string(b) != "planted" {
				t.Errorf("the file planted at %s reads %q (%v) after restore, want \"planted\"", planted, b, err)
			}
			left, _ := filepath.Glob(w.path("*gk-*"))
			if len(left) != 1 {
				t.Errorf("names in the workload's directory after restore: %v, want only %s", left, planted)
			}
		})
	}
	t.Run("a removed directory whose own directory is gone too is refused naming that directory", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "ghostkinds", "dir", "in-sub")
		img := filepath.Join(t.TempDir(), "img")
		dump(t, w, img, false, 0)
		sub := w.path("sub")
		if err := os.Remove(sub); err != nil {
			t.Fatal(err)
		}
		r := runCtcr(t, 60*time.Second, "restore", "-D", img)
		if r.code() != 1 || !strings.Contains(r.stderr(), "its directory "+sub+" is gone") {
			t.Errorf("%s: exit status %d, stderr %q; want 1 and the error naming %s", r, r.code(), r.stderr(), sub)
		}
		if _, err := os.Stat(sub); err == nil {
			t.Errorf("the failed restore made %s again", sub)
		}
	})
	t.Run("a cwd in the proc directory of a process that exited is refused naming it, and the task runs on", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "ghostkinds", "proccwd")
		r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", filepath.Join(t.TempDir(), "img"))
		if r.code() != 1 || !strings.Contains(r.stderr(), "of a proc file system was removed") || !strings.Contains(r.stderr(), "/proc/") {
			t.Errorf("%s: exit status %d, stderr %q; want 1 and the error naming the /proc directory", r, r.code(), r.stderr())
		}
		w.checkPasses(30*time.Second, "ghostkinds proccwd after the refused dump")
	})
	for _, kind := range []string{"fifo", "dir", "cwd", "root", "dev", "symlink", "proccwd"} {
		t.Run("the ghostkinds workload passes when it is never dumped: "+kind, func(t *testing.T) {
			w := startWorkload(t, "ghostkinds", kind)
			w.checkPasses(30*time.Second, "ghostkinds "+kind)
		})
	}
}
