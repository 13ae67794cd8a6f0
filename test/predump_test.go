package test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// preDumpReport is what `ctcr pre-dump --json` prints.
type preDumpReport struct {
	Tasks         int     `json:"tasks"`
	PagesBytes    int64   `json:"pages_bytes"`
	ParentBytes   int64   `json:"parent_bytes"`
	FrozenSeconds float64 `json:"frozen_seconds"`
}

// preDump runs `ctcr pre-dump` of w into dir (on top of prev, relative
// to dir, unless "") and returns its report.
func preDump(t *testing.T, w *workload, dir, prev string) preDumpReport {
	t.Helper()
	args := []string{"pre-dump", "--json", "-t", strconv.Itoa(w.pid), "-D", dir}
	if prev != "" {
		args = append(args, "--prev-images-dir", prev)
	}
	r := runCtcr(t, 120*time.Second, args...)
	w.logs = append(w.logs, r.errP)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d, want 0; stderr: %s%s", r, r.code(), r.stderr(), w.report())
	}
	var rep preDumpReport
	if err := json.Unmarshal([]byte(r.stdout()), &rep); err != nil {
		t.Fatalf("%s printed %q: %v", r, r.stdout(), err)
	}
	t.Logf("pre-dump to %s: %d tasks, %d bytes copied, %d left in the parent, stopped %.4f s",
		filepath.Base(dir), rep.Tasks, rep.PagesBytes, rep.ParentBytes, rep.FrozenSeconds)
	if _, err := os.Stat(filepath.Join(dir, "pre-dump.json")); err != nil {
		t.Errorf("no pre-dump.json in %s: %v", dir, err)
	}
	if prev != "" {
		if target, err := os.Readlink(filepath.Join(dir, "parent")); err != nil || target != prev {
			t.Errorf("%s/parent links to %q (%v), want %s", dir, target, err, prev)
		}
	}
	return rep
}

// trackerSockets lists the write trackers' sockets of task pid.
func trackerSockets(pid int) []string {
	socks, _ := filepath.Glob(fmt.Sprintf("/run/ctcr/track/%d-*.sock", pid))
	return socks
}

// TestPreDump: CRIU's pre-dump workflow. A pre-dump copies the memory
// while the task runs, the next one (--prev-images-dir) what was written
// since, and the dump on top of them the rest; the restore takes each
// page from the image that holds it, down the chain of parents.
func TestPreDump(t *testing.T) {
	t.Run("two pre-dumps and a dump of a task that keeps writing, dropping and remapping pages restore it as it last was", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "dirtier", "32")
		base := t.TempDir()
		p1 := preDump(t, w, filepath.Join(base, "p1"), "")
		// dirtier drops a page in 16 (MADV_DONTNEED), and the pieces it
		// moves with mremap are no longer tracked (the dump copies
		// them): at least half the 32 MiB.
		if p1.PagesBytes < 16<<20 || p1.ParentBytes != 0 {
			t.Errorf("the first pre-dump copied %d bytes and left %d to a parent: want at least half dirtier's 32 MiB, nothing left", p1.PagesBytes, p1.ParentBytes)
		}
		if len(trackerSockets(w.pid)) != 1 {
			t.Errorf("after the pre-dump, write trackers of task %d: %v, want one", w.pid, trackerSockets(w.pid))
		}
		preDump(t, w, filepath.Join(base, "p2"), "../p1")
		img := filepath.Join(base, "img")
		r := runCtcr(t, 120*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img, "--prev-images-dir", "../p2")
		if r.code() != 0 {
			t.Fatalf("%s: exit status %d; stderr: %s%s", r, r.code(), r.stderr(), w.report())
		}
		if socks := trackerSockets(w.pid); len(socks) != 0 {
			t.Errorf("after the dump a write tracker is left: %v", socks)
		}
		if _, err := w.waitOriginal(10 * time.Second); err != nil {
			t.Fatalf("after the dump: %v", err)
		}
		restoreForeground(t, w, img, scenario{}, nil)
		if !t.Failed() {
			wantSwaps(t, w)
			for _, d := range []string{"p1", "p2", "img"} {
				decodeWithCrit(t, filepath.Join(base, d))
			}
		}
	})
	t.Run("memory nobody writes is copied once, by the first pre-dump", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "bigmem", "64")
		base := t.TempDir()
		preDump(t, w, filepath.Join(base, "p1"), "")
		p2 := preDump(t, w, filepath.Join(base, "p2"), "../p1")
		if p2.PagesBytes > 4<<20 || p2.ParentBytes < 64<<20 {
			t.Errorf("the second pre-dump copied %d bytes and left %d to its parent: want the 64 MiB left, little copied", p2.PagesBytes, p2.ParentBytes)
		}
		img := filepath.Join(base, "img")
		r := runCtcr(t, 120*time.Second, "dump", "--json", "-t", strconv.Itoa(w.pid), "-D", img, "--prev-images-dir", "../p2")
		var rep dumpReport
		if r.code() != 0 || json.Unmarshal([]byte(r.stdout()), &rep) != nil {
			t.Fatalf("%s: exit status %d, stdout %q; stderr: %s", r, r.code(), r.stdout(), r.stderr())
		}
		if rep.PagesBytes > 4<<20 {
			t.Errorf("the dump on top of the pre-dumps copied %d bytes, want little", rep.PagesBytes)
		}
		if _, err := w.waitOriginal(10 * time.Second); err != nil {
			t.Fatalf("after the dump: %v", err)
		}
		// Once more after a move of the three directories together: the
		// parent links are relative.
		moved := filepath.Join(t.TempDir(), "moved")
		if err := os.Rename(base, moved); err != nil {
			t.Fatal(err)
		}
		restoreForeground(t, w, filepath.Join(moved, "img"), scenario{}, nil)
	})
	t.Run("a dump whose tracker is gone copies everything, with a warning, and restores", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "bigmem", "16")
		base := t.TempDir()
		preDump(t, w, filepath.Join(base, "p1"), "")
		stopTrackers(t, w.pid)
		img := filepath.Join(base, "img")
		r := runCtcr(t, 120*time.Second, "dump", "--json", "-t", strconv.Itoa(w.pid), "-D", img, "--prev-images-dir", "../p1")
		var rep dumpReport
		if r.code() != 0 || json.Unmarshal([]byte(r.stdout()), &rep) != nil {
			t.Fatalf("%s: exit status %d, stdout %q; stderr: %s", r, r.code(), r.stdout(), r.stderr())
		}
		if !strings.Contains(r.stderr(), "not tracked") || rep.PagesBytes < 16<<20 {
			t.Errorf("%s without a tracker: stderr %q, %d bytes copied; want a warning and the 16 MiB copied", r, r.stderr(), rep.PagesBytes)
		}
		if _, err := w.waitOriginal(10 * time.Second); err != nil {
			t.Fatalf("after the dump: %v", err)
		}
		restoreForeground(t, w, img, scenario{}, nil)
	})
	t.Run("the tracker of a task that ends goes away", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "counter")
		preDump(t, w, filepath.Join(t.TempDir(), "p1"), "")
		w.checkPasses(30*time.Second, "counter after a pre-dump")
		for end := time.Now().Add(10 * time.Second); len(trackerSockets(w.pid)) > 0; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("10 s after task %d ended its write tracker is still there: %v", w.pid, trackerSockets(w.pid))
			}
		}
	})
	t.Run("a restore whose parent image is gone fails naming it and leaves nothing", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "bigmem", "8")
		base := t.TempDir()
		preDump(t, w, filepath.Join(base, "p1"), "")
		img := filepath.Join(base, "img")
		if r := runCtcr(t, 120*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img, "--prev-images-dir", "../p1"); r.code() != 0 {
			t.Fatalf("%s: exit status %d; stderr: %s", r, r.code(), r.stderr())
		}
		if _, err := w.waitOriginal(10 * time.Second); err != nil {
			t.Fatalf("after the dump: %v", err)
		}
		if err := os.RemoveAll(filepath.Join(base, "p1")); err != nil {
			t.Fatal(err)
		}
		r := runCtcr(t, 60*time.Second, "restore", "-D", img)
		if r.code() != 1 || !strings.Contains(r.stderr(), "parent") {
			t.Errorf("%s without its parent image: exit %d, want 1 naming it; stderr: %s", r, r.code(), r.stderr())
		}
		if exists(w.pid) {
			t.Errorf("task %d exists after the failed restore", w.pid)
		}
	})
}

// stopTrackers ends the write trackers of task pid, as a reboot of the
// host or a killed tracker would.
func stopTrackers(t *testing.T, pid int) {
	t.Helper()
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, path := range cmdlines {
		b, _ := os.ReadFile(path)
		args := strings.Split(string(b), "\x00")
		if len(args) > 3 && args[1] == "track-writes" && args[2] == "--root" && args[3] == strconv.Itoa(pid) {
			tracker, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
			unix.Kill(tracker, unix.SIGKILL)
		}
	}
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		// A killed tracker leaves its socket; nothing answers there.
		alive := false
		for _, sock := range trackerSockets(pid) {
			if c, err := net.Dial("unix", sock); err == nil {
				c.Close()
				alive = true
			}
		}
		if !alive {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("the write tracker of task %d does not end", pid)
		}
	}
}

// TestPreDumpTrees runs every scenario of TestDumpRestoreTrees on top of
// a pre-dump: 100 processes, threads, Go and Python.
func TestPreDumpTrees(t *testing.T) {
	for _, sc := range treeScenarios {
		t.Run(sc.name, func(t *testing.T) {
			runTreeScenario(t, sc, func(t *testing.T, w *workload, img string) []string {
				preDump(t, w, filepath.Join(filepath.Dir(img), "pre"), "")
				return []string{"--prev-images-dir", "../pre"}
			})
		})
	}
}

// TestContainerPreDump: two pre-dumps of a runc container whose dirtier
// keeps writing, then a checkpoint on top of them (--parent); after
// restore dirtier finds every page as it last was and the container
// counts on. A checkpoint naming a directory that holds no pre-dump
// fails with exit 16 and the container runs on.
func TestContainerPreDump(t *testing.T) {
	c := workloadContainer(t, "predump", "dirtier", "pid", "16")
	base := t.TempDir()
	for _, step := range [][]string{
		{"checkpoint", c.id, "--pre-dump", "-D", filepath.Join(base, "pre1")},
		{"checkpoint", c.id, "--pre-dump", "-D", filepath.Join(base, "pre2"), "--parent", filepath.Join(base, "pre1")},
	} {
		r := runCtcr(t, 60*time.Second, step...)
		if r.code() != 0 {
			t.Fatalf("%s: exit status %d\nstdout: %s\nstderr: %s", r, r.code(), r.stdout(), r.stderr())
		}
		t.Logf("%s: %s", r, strings.TrimSpace(r.stdout()))
		c.assertCounting(t, "after a pre-dump")
	}
	r := runCtcr(t, 60*time.Second, "checkpoint", c.id, "-D", filepath.Join(base, "ck"), "--parent", filepath.Join(base, "ck"))
	if r.code() != 16 || !strings.Contains(r.stderr(), "pre-dump") {
		t.Errorf("%s naming no pre-dump: exit %d, want 16 and a message; stderr: %s", r, r.code(), r.stderr())
	}
	c.assertCounting(t, "after a refused checkpoint")
	dir := filepath.Join(base, "ck")
	checkpointContainer(t, c, dir, "--parent", filepath.Join(base, "pre2"))
	if target, err := os.Readlink(filepath.Join(dir, "images", "parent")); err != nil || target != "../../pre2/images" {
		t.Errorf("the images' parent link is %q (%v), want ../../pre2/images", target, err)
	}
	restoreContainer(t, c, dir)
	c.assertCounting(t, "after restore")
	c.checkWorkload(t, "dirtier after restore")
}
