package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCompressZstd: dump --compress zstd writes the pages as
// pages-N.img.zst (no raw pages image), show names the compression, and
// restore decompresses them into a task that finds every byte of its
// memory as it was, with ctcr's RSS far below the task's size.
func TestCompressZstd(t *testing.T) {
	needCtcr(t)
	const mib = 256
	w := startWorkload(t, "bigmem", strconv.Itoa(mib))
	img := filepath.Join(t.TempDir(), "img")
	d := runCtcr(t, 120*time.Second, "dump", "--compress", "zstd", "-t", strconv.Itoa(w.pid), "-D", img, "--json")
	w.logs = append(w.logs, d.errP)
	if d.code() != 0 {
		t.Fatalf("%s: exit status %d: %s", d, d.code(), d.stderr())
	}
	if _, err := w.waitOriginal(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	zst, _ := filepath.Glob(filepath.Join(img, "pages-*.img.zst"))
	raw, _ := filepath.Glob(filepath.Join(img, "pages-*.img"))
	if len(zst) != 1 || len(raw) != 0 {
		t.Fatalf("%s wrote %v and %v, want one pages-N.img.zst and no raw pages image", d, zst, raw)
	}
	// bigmem's random data does not compress: the frames hold it as it is.
	if fi, err := os.Stat(zst[0]); err != nil || fi.Size() < mib<<20 || fi.Size() > mib<<20+mib<<20/64 {
		t.Errorf("%s: %v bytes (%v), want about %d", zst[0], fi.Size(), err, mib<<20)
	}

	s := runCtcr(t, 60*time.Second, "show", "--json", img)
	if s.code() != 0 {
		t.Fatalf("%s: exit status %d: %s", s, s.code(), s.stderr())
	}
	var shown struct {
		Checkpoint struct {
			Compression string `json:"compression"`
			PagesBytes  int64  `json:"pages_bytes"`
		} `json:"checkpoint"`
	}
	if err := json.Unmarshal([]byte(s.stdout()), &shown); err != nil {
		t.Fatalf("%s printed %q: %v", s, s.stdout(), err)
	}
	if shown.Checkpoint.Compression != "zstd" || shown.Checkpoint.PagesBytes < mib<<20 {
		t.Errorf("%s says compression %q and %d bytes of pages, want zstd and at least %d", s, shown.Checkpoint.Compression, shown.Checkpoint.PagesBytes, mib<<20)
	}
	if s := runCtcr(t, 60*time.Second, "show", img); !strings.Contains(s.stdout(), "compressed with zstd") {
		t.Errorf("%s does not say the pages are compressed:\n%s", s, s.stdout())
	}

	r := runCtcr(t, 120*time.Second, "restore", "-d", "-D", img)
	w.logs = append(w.logs, r.errP)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d: %s", r, r.code(), r.stderr())
	}
	t.Logf("peak RSS for %d MiB: dump %.1f MiB, restore %.1f MiB", mib, d.maxRSSMiB(), r.maxRSSMiB())
	for _, x := range []*ctcrRun{d, r} {
		if x.maxRSSMiB() > 128 {
			t.Errorf("%s: peak RSS %.1f MiB, over 128 MiB", x, x.maxRSSMiB())
		}
	}
	w.requestCheck()
	ws, _, err := reap(w.pid, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("the restored workload ended with %s%s", exitText(ws), w.report())
	}
	w.assertPassed()
}

// TestCompressZstdTree: a tree of 100 processes, zombies and orphans
// among them, dumped with compressed pages, comes back whole.
func TestCompressZstdTree(t *testing.T) {
	runTreeScenario(t, treeScenarios[0], func(t *testing.T, w *workload, img string) []string {
		return []string{"--compress", "zstd"}
	})
}
