package test

import (
	"fmt"
	"hash/fnv"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// mutation is one way of damaging one file of a checkpoint.
type mutation struct {
	file, kind string
	apply      func(good []byte) []byte // nil: delete the file
}

// flipAt inverts the byte at off (modulo the length).
func flipAt(off int) func([]byte) []byte {
	return func(b []byte) []byte {
		out := append([]byte(nil), b...)
		if len(out) > 0 {
			out[off%len(out)] ^= 0xff
		}
		return out
	}
}

func truncateTo(n int) func([]byte) []byte {
	return func(b []byte) []byte { return b[:min(n, len(b))] }
}

// mutations returns, for each file, a byte flip at an offset drawn from
// its name, a truncation to half and a deletion; with CTCR_STRESS set,
// also 25 flips and 5 truncations at random offsets per file.
func mutations(t *testing.T, dir string) []mutation {
	t.Helper()
	var names []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			names = append(names, rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	var out []mutation
	stress := os.Getenv("CTCR_STRESS") != ""
	rng := rand.New(rand.NewSource(1))
	for _, n := range names {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		size := int(fi.Size())
		h := fnv.New32a()
		h.Write([]byte(n))
		off := int(h.Sum32())
		out = append(out,
			mutation{n, fmt.Sprintf("flip at %d", off%max(size, 1)), flipAt(off)},
			mutation{n, "truncate to half", truncateTo(size / 2)},
			mutation{n, "delete", nil})
		if !stress {
			continue
		}
		for range 25 {
			o := rng.Intn(max(size, 1))
			out = append(out, mutation{n, fmt.Sprintf("flip at %d", o), flipAt(o)})
		}
		for range 5 {
			l := rng.Intn(max(size, 1))
			out = append(out, mutation{n, fmt.Sprintf("truncate to %d", l), truncateTo(l)})
		}
	}
	return out
}

// TestImageMutations damages each file of a multi-process checkpoint
// (pipes, socket queues, a FIFO, a parent and a child) in turn: a byte
// flipped, the file truncated, the file deleted. Every restore must either
// succeed with the workload passing its own check, or fail at once with
// exit status 1, one line naming the file, and no process left; `ctcr
// show` must come to the same verdict. CTCR_STRESS=1 (make stress) adds
// 30 random mutations per file.
func TestImageMutations(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "ipc")
	kids := childrenOf(w.pid)
	img := filepath.Join(t.TempDir(), "img")
	dump(t, w, img, false, 0)
	for pid := range kids {
		if _, _, err := reap(pid, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	muts := mutations(t, img)
	codes := map[string]int{}
	defer func() { t.Logf("%d mutations: %v", len(muts), codes) }()
	for _, m := range muts {
		what := m.kind + " of " + m.file
		p := filepath.Join(img, m.file)
		good, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if m.apply == nil {
			err = os.Remove(p)
		} else {
			err = os.WriteFile(p, m.apply(good), 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
		show := runCtcr(t, 60*time.Second, "show", img)
		before := childrenOf(os.Getpid())
		os.Remove(w.path("result"))
		pidfile := filepath.Join(t.TempDir(), "pid")
		r := runCtcr(t, 60*time.Second, "restore", "-D", img, "-d", "--pidfile", pidfile)
		stderr := strings.TrimSpace(r.stderr())
		switch r.code() {
		case 0:
			codes["restored"]++
			// Whatever was damaged did not matter: the workload must
			// find itself whole.
			w.requestCheck()
			ws, _, err := reap(w.pid, 60*time.Second)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if !ws.Exited() || ws.ExitStatus() != 0 || !strings.HasPrefix(w.read("result"), "PASS") {
				t.Errorf("%s: restored, but the workload ended with %s: %s", what, exitText(ws), w.read("result"))
			}
			for pid := range childrenOf(os.Getpid()) {
				if _, ok := before[pid]; !ok {
					unix.Kill(pid, unix.SIGKILL)
					reap(pid, 10*time.Second)
				}
			}
			os.Remove(w.path("check"))
		case 1:
			codes["refused"]++
			if stderr == "" || strings.Contains(stderr, "\n") || strings.Contains(stderr, "panic") {
				t.Errorf("%s: stderr should be one line, got %q", what, stderr)
			}
			base := filepath.Base(m.file)
			if !strings.Contains(stderr, base) && !strings.HasSuffix(m.file, "manifest.json") {
				t.Errorf("%s: the message does not name %s: %q", what, base, stderr)
			}
			if exists(w.pid) {
				t.Errorf("%s: after the failed restore PID %d exists: %s", what, w.pid, describe(w.pid))
			}
		default:
			t.Errorf("%s: restore exit status %d, want 0 or 1; stderr: %q", what, r.code(), stderr)
		}
		assertNothingNew(t, before, r)
		if show.code() != r.code() {
			t.Errorf("%s: show exits %d (%q) but restore %d (%q)", what, show.code(), strings.TrimSpace(show.stderr()), r.code(), stderr)
		} else if r.code() == 1 {
			// The same check, so the same file named.
			_, sw, _ := strings.Cut(strings.TrimSpace(show.stderr()), img)
			_, rw, _ := strings.Cut(stderr, img)
			if sw == "" || !strings.Contains(rw, sw[strings.Index(sw, ":")+1:]) {
				t.Errorf("%s: show says %q, restore %q", what, show.stderr(), stderr)
			}
		}
		if err := os.WriteFile(p, good, 0o600); err != nil {
			t.Fatal(err)
		}
		if t.Failed() && os.Getenv("CTCR_STRESS") == "" {
			return
		}
	}
}

// TestDiskFull dumps a workload of 32 MiB into an 8 MiB tmpfs in every
// mode: each must fail at once saying "no space left on device" and
// naming the directory, leave no partial directory and no image behind,
// and leave the workload running unharmed.
func TestDiskFull(t *testing.T) {
	needCtcr(t)
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=8m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	w := startWorkload(t, "bigmem", "32")
	pid := strconv.Itoa(w.pid)
	for _, mode := range [][]string{
		{"dump"},
		{"dump", "--leave-running"},
		{"dump", "--pre-copy"},
		{"dump", "--pre-copy", "--leave-running"},
		{"pre-dump"},
	} {
		name := strings.Join(mode, " ")
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(mnt, strings.ReplaceAll(strings.Join(mode, ""), "-", ""))
			defer os.RemoveAll(dir)
			start := time.Now()
			r := runCtcr(t, 120*time.Second, append(mode, "-t", pid, "-D", dir)...)
			took := time.Since(start)
			assertFailed(t, r, "no space left on device")
			if !strings.Contains(r.stderr(), dir) {
				t.Errorf("%s: the message does not name %s: %q", name, dir, r.stderr())
			}
			if took > 20*time.Second {
				t.Errorf("%s took %v to fail on a full disk", name, took)
			}
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				t.Errorf("%s left %s behind", name, filepath.Join(dir, e.Name()))
			}
			if err := assertRunnable(w.pid); err != nil {
				t.Fatalf("after %s: %v", name, err)
			}
		})
	}
	w.checkPasses(60*time.Second, "bigmem after the failed dumps")

	t.Run("container checkpoint", func(t *testing.T) {
		small := filepath.Join(t.TempDir(), "small")
		os.Mkdir(small, 0o700)
		// A busybox container's images are some hundreds of KiB.
		if err := unix.Mount("tmpfs", small, "tmpfs", 0, "size=256k"); err != nil {
			t.Fatalf("mount tmpfs: %v", err)
		}
		t.Cleanup(func() { unix.Unmount(small, unix.MNT_DETACH) })
		c := newContainer(t, "full", nil)
		c.start()
		dir := filepath.Join(small, "ck")
		r := runCtcr(t, 60*time.Second, "checkpoint", c.id, "-D", dir)
		stderr := strings.TrimSpace(r.stderr())
		if r.code() == 0 || !strings.Contains(stderr, "no space left on device") || !strings.Contains(stderr, dir) || strings.Contains(stderr, "\n") {
			t.Errorf("%s: exit status %d, stderr %q: want a failure, one line naming %s and the errno", r, r.code(), stderr, dir)
		}
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			t.Errorf("the failed checkpoint left %s behind", filepath.Join(dir, e.Name()))
		}
		if st := c.status(); st != "running" {
			t.Fatalf("after the failed checkpoint runc says %q, want running", st)
		}
		c.assertCounting(t, "after the failed checkpoint")
	})
}

// TestStalePartialsRemoved: a dump removes the staging directories that
// a killed ctcr left in its directory (their maker's PID is gone), and
// leaves those of a ctcr still at work.
func TestStalePartialsRemoved(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "counter")
	img := filepath.Join(t.TempDir(), "img")
	dead := freePID(t)
	stale := []string{
		fmt.Sprintf(".ctcr-partial-pid%d-123", dead),
		fmt.Sprintf(".ctcr-partial-pre-copy-pid%d-456", dead),
	}
	live := fmt.Sprintf(".ctcr-partial-pid%d-789", os.Getpid())
	for _, d := range append(stale, live) {
		if err := os.MkdirAll(filepath.Join(img, d), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(img, d, "pages-1.img"), make([]byte, 4096), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := runCtcr(t, 60*time.Second, "dump", "--leave-running", "-t", strconv.Itoa(w.pid), "-D", img)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d: %s", r, r.code(), r.stderr())
	}
	for _, d := range stale {
		if _, err := os.Stat(filepath.Join(img, d)); err == nil {
			t.Errorf("%s, left by a dead PID, is still there", d)
		}
	}
	if _, err := os.Stat(filepath.Join(img, live)); err != nil {
		t.Errorf("%s, of a live PID, was removed: %v", live, err)
	}
	w.checkPasses(30*time.Second, "counter")
}

// maxRSSMiB is the peak RSS of a finished ctcr run. Linux keeps the
// larger high-water mark across exec, and os/exec's vfork child shares
// this process's memory until then: the figure is at least this test
// process's own peak, so it can only err high.
func (r *ctcrRun) maxRSSMiB() float64 {
	if ru, ok := r.status.SysUsage().(*syscall.Rusage); ok {
		return float64(ru.Maxrss) / 1024
	}
	return 0
}

// TestMemoryBounded: ctcr's own peak RSS stays far below the size of
// what it dumps and restores (it once mapped the whole pages image), and
// the pre-copy and a dump on top of it too.
func TestMemoryBounded(t *testing.T) {
	needCtcr(t)
	const mib = 256
	const limit = 128.0 // MiB
	w := startWorkload(t, "bigmem", strconv.Itoa(mib))
	pid := strconv.Itoa(w.pid)
	dir := t.TempDir()
	pc := runCtcr(t, 120*time.Second, "dump", "--pre-copy", "--leave-running", "-t", pid, "-D", filepath.Join(dir, "pc"))
	if pc.code() != 0 {
		t.Fatalf("%s: exit status %d: %s", pc, pc.code(), pc.stderr())
	}
	img := filepath.Join(dir, "img")
	d := runCtcr(t, 120*time.Second, "dump", "-t", pid, "-D", img)
	if d.code() != 0 {
		t.Fatalf("%s: exit status %d: %s", d, d.code(), d.stderr())
	}
	if _, err := w.waitOriginal(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	r := runCtcr(t, 120*time.Second, "restore", "-d", "-D", img)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d: %s", r, r.code(), r.stderr())
	}
	t.Logf("peak RSS for %d MiB: pre-copy dump %.1f MiB, dump %.1f MiB, restore %.1f MiB", mib, pc.maxRSSMiB(), d.maxRSSMiB(), r.maxRSSMiB())
	for _, x := range []*ctcrRun{pc, d, r} {
		if x.maxRSSMiB() > limit {
			t.Errorf("%s: peak RSS %.1f MiB, over %.0f MiB", x, x.maxRSSMiB(), limit)
		}
	}
	w.requestCheck()
	ws, _, err := reap(w.pid, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("the restored workload ended with %s", exitText(ws))
	}
	w.assertPassed()
}
