package test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// preCopyReport is what `ctcr dump --pre-copy --json` prints.
type preCopyReport struct {
	PagesBytes     int64   `json:"pages_bytes"`
	FrozenSeconds  float64 `json:"frozen_seconds"`
	PreCopyBytes   int64   `json:"pre_copy_bytes"`
	PreCopyRounds  int     `json:"pre_copy_rounds"`
	PreCopySeconds float64 `json:"pre_copy_seconds"`
}

// preCopyDump runs `ctcr dump --pre-copy --json` on w (with extra
// arguments) and returns its report.
func preCopyDump(t *testing.T, w *workload, img string, extra ...string) preCopyReport {
	t.Helper()
	logFile := filepath.Join(t.TempDir(), "dump.log")
	w.logs = append(w.logs, logFile)
	args := append([]string{"dump", "--pre-copy", "--json", "-t", strconv.Itoa(w.pid), "-D", img, "-v", "--log-file", logFile}, extra...)
	r := runCtcr(t, 120*time.Second, args...)
	w.logs = append(w.logs, r.errP)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d, want 0; stderr: %s%s", r, r.code(), r.stderr(), w.report())
	}
	var rep preCopyReport
	if err := json.Unmarshal([]byte(r.stdout()), &rep); err != nil {
		t.Fatalf("%s printed %q: %v", r, r.stdout(), err)
	}
	t.Logf("pre-copy: %d bytes in %d rounds (%.3f s); dump: %d bytes, frozen %.3f s",
		rep.PreCopyBytes, rep.PreCopyRounds, rep.PreCopySeconds, rep.PagesBytes, rep.FrozenSeconds)
	if rep.PreCopyRounds < 1 || rep.PreCopyBytes <= 0 {
		t.Errorf("the pre-copy copied %d bytes in %d rounds: want some", rep.PreCopyBytes, rep.PreCopyRounds)
	}
	if target, err := os.Readlink(filepath.Join(img, "parent")); err != nil || target != "pre-copy" {
		t.Errorf("%s/parent links to %q (%v), want pre-copy", img, target, err)
	}
	return rep
}

// wantSwaps checks that dirtier w swapped pieces of its memory with
// mremap: the moves its check followed must have happened.
func wantSwaps(t *testing.T, w *workload) {
	t.Helper()
	out := w.read("out")
	var changes, swaps, pages int
	for _, line := range strings.Split(out, "\n") {
		if n, _ := fmt.Sscanf(line, "%d changes, %d swaps, %d pages checked", &changes, &swaps, &pages); n == 3 {
			break
		}
	}
	if swaps == 0 {
		t.Errorf("dirtier swapped no pieces of its memory with mremap before its check: %q", out)
	}
	t.Logf("dirtier: %d changes, %d swaps of 1 MiB pieces, %d pages checked", changes, swaps, pages)
}

// TestPreCopy dumps with --pre-copy: the memory is copied while the task
// runs, and the dump copies only what was written since.
func TestPreCopy(t *testing.T) {
	t.Run("a task that keeps writing, dropping and remapping pages comes back with every page as it last was", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "dirtier", "64")
		img := filepath.Join(t.TempDir(), "img")
		// dirtier drops a page in 16 (MADV_DONTNEED), and the pieces it
		// moves with mremap are no longer tracked (the dump copies
		// them): at least half the 64 MiB.
		if rep := preCopyDump(t, w, img); rep.PreCopyBytes < 32<<20 {
			t.Errorf("the pre-copy copied %d bytes, want at least half the 64 MiB dirtier holds: a mapping changed meanwhile must not leave the rest out", rep.PreCopyBytes)
		}
		if _, err := w.waitOriginal(10 * time.Second); err != nil {
			t.Fatalf("after the dump: %v", err)
		}
		restoreForeground(t, w, img, scenario{}, nil)
		if !t.Failed() {
			wantSwaps(t, w)
			decodeWithCrit(t, img)
			decodeWithCrit(t, filepath.Join(img, "pre-copy"))
		}
	})
	t.Run("a task left running after a pre-copied dump has all its memory, untracked", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "dirtier", "16")
		img := filepath.Join(t.TempDir(), "img")
		preCopyDump(t, w, img, "--leave-running")
		w.checkPasses(30*time.Second, "dirtier after dump --pre-copy --leave-running")
	})
	t.Run("memory nobody writes is copied while the task runs, not while it is stopped", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "bigmem", "128")
		img := filepath.Join(t.TempDir(), "img")
		rep := preCopyDump(t, w, img)
		if rep.PreCopyBytes < 128<<20 {
			t.Errorf("the pre-copy copied %d bytes, want the 128 MiB the task filled", rep.PreCopyBytes)
		}
		if rep.PagesBytes > 16<<20 {
			t.Errorf("the dump copied %d bytes with the task stopped, want only what changed (well under 16 MiB)", rep.PagesBytes)
		}
		if _, err := w.waitOriginal(10 * time.Second); err != nil {
			t.Fatalf("after the dump: %v", err)
		}
		restoreForeground(t, w, img, scenario{}, nil)
	})
}

// TestPreCopyRestoreNeedsParent: a checkpoint whose parent image is gone
// or damaged fails to restore with exit 1, naming it, and leaves no task.
func TestPreCopyRestoreNeedsParent(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "bigmem", "8")
	img := filepath.Join(t.TempDir(), "img")
	preCopyDump(t, w, img)
	if _, err := w.waitOriginal(10 * time.Second); err != nil {
		t.Fatalf("after the dump: %v", err)
	}
	pages, _ := filepath.Glob(filepath.Join(img, "pre-copy", "pages-*.img"))
	if len(pages) != 1 {
		t.Fatalf("pre-copy pages images: %v, want one", pages)
	}
	if err := os.Truncate(pages[0], 4096); err != nil {
		t.Fatal(err)
	}
	r := runCtcr(t, 60*time.Second, "restore", "-D", img)
	if r.code() != 1 || !strings.Contains(r.stderr(), "pages-1.img") || !strings.Contains(r.stderr(), "corrupt") {
		t.Errorf("%s with a truncated parent image: exit %d, want 1 naming it; stderr: %s", r, r.code(), r.stderr())
	}
	if exists(w.pid) {
		t.Errorf("task %d exists after the failed restore", w.pid)
	}
	if err := os.Remove(filepath.Join(img, "parent")); err != nil {
		t.Fatal(err)
	}
	r = runCtcr(t, 60*time.Second, "restore", "-D", img)
	if r.code() != 1 || !strings.Contains(r.stderr(), "parent") {
		t.Errorf("%s without its parent image: exit %d, want 1 naming it; stderr: %s", r, r.code(), r.stderr())
	}
	if exists(w.pid) {
		t.Errorf("task %d exists after the failed restore", w.pid)
	}
}

// TestContainerPreCopy: `ctcr checkpoint --pre-copy` of a runc container
// whose dirtier keeps writing, dropping and remapping its pages; after
// restore dirtier finds every page as it last was, the container counts
// on, and stats.json and `ctcr show` tell the pre-copy.
func TestContainerPreCopy(t *testing.T) {
	c := workloadContainer(t, "precopy", "dirtier", "pid", "24")
	dir := filepath.Join(t.TempDir(), "ck")
	logFile := filepath.Join(t.TempDir(), "checkpoint.log")
	checkpointContainer(t, c, dir, "--pre-copy", "-v", "--log-file", logFile)
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("checkpoint log:\n%s", b)
		}
	}()
	b, err := os.ReadFile(filepath.Join(dir, "stats.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st preCopyReport
	if err := json.Unmarshal(b, &st); err != nil || st.PreCopyBytes < 12<<20 || st.PreCopyRounds < 1 {
		t.Errorf("stats.json %s (%v): want pre_copy_bytes of at least half dirtier's 24 MiB and pre_copy_rounds", b, err)
	}
	t.Logf("stats.json: %s", b)
	if out := runCtcr(t, 30*time.Second, "show", dir).stdout(); !strings.Contains(out, "pre-copy") {
		t.Errorf("ctcr show %s does not tell the pre-copy:\n%s", dir, out)
	}
	restoreContainer(t, c, dir)
	c.assertCounting(t, "after restore")
	c.checkWorkload(t, "dirtier after restore")
}

// TestPreCopyScenarios runs every scenario of TestDumpRestore with
// --pre-copy: a task stopped for a moment while it blocks in a syscall
// (to make its userfaultfd) goes on as before, and every kind of memory
// is taken from the pre-copy or the dump as it should.
func TestPreCopyScenarios(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			runScenario(t, sc, func(w *workload, img string) *dumpReport {
				preCopyDump(t, w, img)
				if _, err := w.waitOriginal(10 * time.Second); err != nil {
					t.Fatalf("after the dump: %v", err)
				}
				return nil
			})
		})
	}
}

// TestPreCopySharing: a child's memory shared copy-on-write with its
// parent, and memory shared through CLONE_VM, come back shared after a
// pre-copied dump (the pre-copy reads without breaking the sharing).
func TestPreCopySharing(t *testing.T) {
	for _, name := range []string{"sharedfork", "sharevm"} {
		t.Run(name, func(t *testing.T) {
			needCtcr(t)
			w := startWorkload(t, name)
			kids := childrenOf(w.pid)
			img := filepath.Join(t.TempDir(), "img")
			preCopyDump(t, w, img)
			if _, err := w.waitOriginal(10 * time.Second); err != nil {
				t.Fatalf("after the dump: %v", err)
			}
			for pid := range kids {
				if _, _, err := reap(pid, 10*time.Second); err != nil {
					t.Fatal(err)
				}
			}
			restoreForeground(t, w, img, scenario{}, nil)
		})
	}
}

// TestPreCopyFailedDump: a dump that fails after its pre-copy (a held
// lock without --file-locks) leaves the task running untracked (no
// userfaultfd among its fds, no mapping registered with one: smaps
// shows no "uw") with all its memory, and nothing in DIR.
func TestPreCopyFailedDump(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "dirtier", "16", "locked")
	img := filepath.Join(t.TempDir(), "img")
	r := runCtcr(t, 60*time.Second, "dump", "--pre-copy", "-t", strconv.Itoa(w.pid), "-D", img)
	if r.code() != 1 || !strings.Contains(r.stderr(), "lock") {
		t.Fatalf("%s of a task holding a flock: exit %d, want 1 naming the lock; stderr: %s", r, r.code(), r.stderr())
	}
	smaps, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", w.pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(smaps), "\n") {
		if f, ok := strings.CutPrefix(line, "VmFlags:"); ok && slices.Contains(strings.Fields(f), "uw") {
			t.Errorf("after the failed dump a mapping is still registered for write tracking: %s", line)
			break
		}
	}
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", w.pid))
	for _, fd := range fds {
		if target, _ := os.Readlink(fd); strings.Contains(target, "userfaultfd") {
			t.Errorf("after the failed dump the task holds a userfaultfd: %s -> %s", fd, target)
		}
	}
	if ents, err := os.ReadDir(img); err != nil || len(ents) != 0 {
		t.Errorf("after the failed dump %s holds %v (%v), want nothing", img, ents, err)
	}
	w.checkPasses(30*time.Second, "dirtier after a failed dump --pre-copy")
}

// TestPreCopyTrees runs every scenario of TestDumpRestoreTrees with
// --pre-copy: 100 processes forking, zombies and orphans among them, 64
// threads counting, a Go and a Python program.
func TestPreCopyTrees(t *testing.T) {
	for _, sc := range treeScenarios {
		t.Run(sc.name, func(t *testing.T) {
			runTreeScenario(t, sc, func(*testing.T, *workload, string) []string { return []string{"--pre-copy"} })
		})
	}
}
