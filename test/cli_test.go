package test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCheck: `ctcr check` passes on the machines the tests run on.
func TestCheck(t *testing.T) {
	t.Run("check reports that the kernel has what ctcr needs", func(t *testing.T) {
		r := runCtcr(t, 60*time.Second, "check")
		if r.code() != 0 {
			t.Errorf("%s: exit status %d, want 0\nstdout: %s\nstderr: %s", r, r.code(), r.stdout(), r.stderr())
		}
	})
	t.Run("check --json prints one JSON object", func(t *testing.T) {
		r := runCtcr(t, 60*time.Second, "check", "--json")
		var v map[string]any
		if err := json.Unmarshal([]byte(r.stdout()), &v); err != nil {
			t.Errorf("%s printed %q: %v", r, r.stdout(), err)
		}
		if r.code() != 0 {
			t.Errorf("%s: exit status %d, want 0; stderr: %s", r, r.code(), r.stderr())
		}
	})
}

// TestLogFileLinks: --log-file follows a symbolic link only to what is
// not a regular file (/dev/stderr is one), so a link planted where a log
// is written cannot make ctcr append to the file it names; a new log is
// created 0600.
func TestLogFileLinks(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "precious")
	if err := os.WriteFile(target, []byte("keep\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "log")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	// A dump of a task that does not exist: it opens its log first.
	dump := func(log string) *ctcrRun {
		return runCtcr(t, 60*time.Second, "dump", "-t", "4194303", "-D", filepath.Join(dir, "img"), "-v", "--log-file", log)
	}
	r := dump(link)
	if r.code() != 1 || !strings.Contains(r.stderr(), "symbolic link") {
		t.Errorf("%s: exit status %d, stderr %q; want 1 and the link named", r, r.code(), r.stderr())
	}
	if b, _ := os.ReadFile(target); string(b) != "keep\n" {
		t.Errorf("the link's target was written: %q", b)
	}
	r = dump("/dev/stderr")
	if strings.Contains(r.stderr(), "log-file") {
		t.Errorf("%s: stderr %q; want /dev/stderr accepted", r, r.stderr())
	}
	fresh := filepath.Join(dir, "fresh.log")
	r = dump(fresh)
	if fi, err := os.Stat(fresh); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: log %v %v; want a 0600 file", r, fi, err)
	}
}

// TestLeaveRunning: a task dumped with --leave-running goes on; a second
// dump kills it, and a restore from that second dump passes.
func TestLeaveRunning(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "counter")
	img1 := filepath.Join(t.TempDir(), "img")
	r := runCtcr(t, 120*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img1, "--leave-running")
	w.logs = append(w.logs, r.errP)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d, want 0; stderr: %s", r, r.code(), r.stderr())
	}
	if _, err := os.Stat(filepath.Join(img1, "inventory.img")); err != nil {
		t.Errorf("the --leave-running dump wrote no inventory.img: %v", err)
	}
	if err := assertRunnable(w.pid); err != nil {
		t.Fatalf("after dump --leave-running the task is %v", err)
	}
	// The counter prints a line every ~100 ms: its output must grow.
	size := len(w.read("out"))
	deadline := time.Now().Add(5 * time.Second)
	for len(w.read("out")) == size && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if len(w.read("out")) == size {
		t.Fatalf("the task printed nothing in 5 s after dump --leave-running: %s", describe(w.pid))
	}

	img2 := filepath.Join(t.TempDir(), "img")
	dump(t, w, img2, false, 0)
	restoreForeground(t, w, img2, scenario{workload: "counter"}, nil)
	if !t.Failed() {
		outputContinues(t, w)
	}
}

// TestImagesDecodeWithCrit: every image but the raw pages decodes with
// CRIU's crit (Debian package criu with python3-protobuf).
func TestImagesDecodeWithCrit(t *testing.T) {
	needCtcr(t)
	crit, err := exec.LookPath("crit")
	if err != nil {
		t.Skip("crit is not installed (apt-get install criu python3-protobuf)")
	}
	w := startWorkload(t, "counter")
	img := filepath.Join(t.TempDir(), "img")
	dump(t, w, img, false, 0)
	files, _ := filepath.Glob(filepath.Join(img, "*.img"))
	if len(files) == 0 {
		t.Fatalf("the dump wrote no *.img into %s", img)
	}
	for _, f := range files {
		name := filepath.Base(f)
		if strings.HasPrefix(name, "pages-") {
			continue
		}
		t.Run(name+" decodes with crit", func(t *testing.T) {
			out, err := exec.Command(crit, "decode", "-i", f).CombinedOutput()
			if strings.Contains(string(out), "No module named 'google'") {
				t.Skip("crit needs python3-protobuf")
			}
			if err != nil {
				t.Errorf("crit decode -i %s: %v\n%s", name, err, tail(string(out), 2000))
			}
		})
	}
}

// TestProgress: on a terminal, dump and restore keep one line of stderr
// up to date with the memory moved; without a terminal they print
// nothing of it (the other tests).
func TestProgress(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "bigmem", "64")
	img := filepath.Join(t.TempDir(), "img")
	m, s := openPty(t)
	cmd := exec.Command(ctcrBin, "dump", "-t", strconv.Itoa(w.pid), "-D", img)
	cmd.Stderr = s
	if err := runWithTimeout(cmd, 120*time.Second); err != nil {
		t.Fatalf("ctcr dump with stderr on a terminal: %v: %s", err, readUntil(m, "\n", time.Second))
	}
	if got := readUntil(m, "MiB of memory\r\n", 5*time.Second); !strings.Contains(got, "ctcr: dumped: ") || !strings.Contains(got, "MiB of memory") {
		t.Errorf("ctcr dump printed %q on its terminal, want a progress line", got)
	}
	w.waitOriginal(10 * time.Second)
}
