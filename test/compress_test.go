package test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctcr/ctcr/criu/images"
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

// TestCompressZstdDamaged: a pages-N.img.zst flipped or truncated is
// refused by the manifest check with one line naming it and nothing
// created; one damaged by its writer (the manifest agrees with it) fails
// the restore when zstd's frame checksum disagrees, naming it, and the
// restore leaves nothing behind; the undamaged checkpoint then restores.
func TestCompressZstdDamaged(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "bigmem", "16")
	img := filepath.Join(t.TempDir(), "img")
	d := runCtcr(t, 120*time.Second, "dump", "--compress", "zstd", "-t", strconv.Itoa(w.pid), "-D", img)
	if d.code() != 0 {
		t.Fatalf("%s: exit status %d: %s", d, d.code(), d.stderr())
	}
	if _, err := w.waitOriginal(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	zst, _ := filepath.Glob(filepath.Join(img, "pages-*.img.zst"))
	if len(zst) != 1 {
		t.Fatalf("%s holds %v, want one pages-N.img.zst", img, zst)
	}
	good, err := os.ReadFile(zst[0])
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Base(zst[0])
	for _, c := range []struct {
		what     string
		damage   func([]byte) []byte
		manifest bool // the manifest is rewritten to agree with the damage
	}{
		{"a byte flipped in the middle", flipAt(len(good) / 2), false},
		{"truncated to half", truncateTo(len(good) / 2), false},
		{"a byte flipped by its writer, the manifest agreeing", flipAt(len(good) / 2), true},
		{"truncated by its writer, the manifest agreeing", truncateTo(len(good) / 2), true},
	} {
		t.Run(c.what, func(t *testing.T) {
			if err := os.WriteFile(zst[0], c.damage(good), 0o600); err != nil {
				t.Fatal(err)
			}
			if c.manifest {
				if err := images.UpdateManifest(img, name); err != nil {
					t.Fatal(err)
				}
			}
			before := childrenOf(os.Getpid())
			r := runCtcr(t, 60*time.Second, "restore", "-d", "-D", img)
			assertFailed(t, r, name)
			if !c.manifest && !strings.Contains(r.stderr(), "corrupt") {
				t.Errorf("%s: %q does not say the image is corrupt", r, r.stderr())
			}
			if exists(w.pid) {
				t.Errorf("after the failed restore PID %d exists: %s", w.pid, describe(w.pid))
			}
			assertNothingNew(t, before, r)
		})
	}
	if err := os.WriteFile(zst[0], good, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := images.UpdateManifest(img, name); err != nil {
		t.Fatal(err)
	}
	r := runCtcr(t, 60*time.Second, "restore", "-d", "-D", img)
	if r.code() != 0 {
		t.Fatalf("%s, undamaged: exit status %d: %s", r, r.code(), r.stderr())
	}
	w.requestCheck()
	if ws, _, err := reap(w.pid, 60*time.Second); err != nil || !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("the restored workload ended with %s (%v)%s", exitText(ws), err, w.report())
	}
	w.assertPassed()
}

// streamCmd is ctcr with its staging directories under tmp.
func streamCmd(tmp string, args ...string) *exec.Cmd {
	c := exec.Command(ctcrBin, args...)
	c.Env = append(os.Environ(), "TMPDIR="+tmp)
	return c
}

// assertEmptyDir fails unless dir holds nothing: ctcr removed its
// staging directory and wrote nowhere else.
func assertEmptyDir(t *testing.T, dir, after string) {
	t.Helper()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("after %s, %s still holds %v", after, dir, names)
	}
}

// TestStreamPipe: `ctcr dump -D - | ctcr restore -D -` moves a real
// process through a pipe, compressed or not: the restored process finds
// its memory intact, and neither side leaves its staging directory.
func TestStreamPipe(t *testing.T) {
	for _, compress := range []bool{false, true} {
		name := "raw pages"
		if compress {
			name = "pages compressed with zstd"
		}
		t.Run(name, func(t *testing.T) {
			needCtcr(t)
			w := startWorkload(t, "bigmem", "32")
			tmp := t.TempDir()
			logs := t.TempDir()
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			dargs := []string{"dump", "-t", strconv.Itoa(w.pid), "-D", "-"}
			if compress {
				dargs = append(dargs, "--compress", "zstd")
			}
			d := streamCmd(tmp, dargs...)
			d.Stdout = pw
			dErr, _ := os.Create(filepath.Join(logs, "dump.stderr"))
			defer dErr.Close()
			d.Stderr = dErr
			pidfile := filepath.Join(logs, "pid")
			r := streamCmd(tmp, "restore", "-D", "-", "-d", "--pidfile", pidfile)
			r.Stdin = pr
			rErr, _ := os.Create(filepath.Join(logs, "restore.stderr"))
			defer rErr.Close()
			r.Stderr = rErr
			w.logs = append(w.logs, dErr.Name(), rErr.Name())
			if err := d.Start(); err != nil {
				t.Fatal(err)
			}
			if err := r.Start(); err != nil {
				t.Fatal(err)
			}
			rdone := make(chan error, 1)
			go func() { rdone <- waitWithTimeout(r, 120*time.Second) }()
			pw.Close()
			pr.Close()
			derr := make(chan error, 1)
			go func() { derr <- d.Wait() }()
			select {
			case err := <-derr:
				if err != nil {
					t.Errorf("ctcr dump -D -: %v%s", err, w.report())
				}
			case <-time.After(120 * time.Second):
				d.Process.Kill()
				t.Fatalf("ctcr dump -D - did not end in 120 s%s", w.report())
			}
			// The dumped original, killed, is this test's to reap.
			if _, err := w.waitOriginal(10 * time.Second); err != nil {
				t.Fatal(err)
			}
			if err := <-rdone; err != nil {
				t.Fatalf("ctcr restore -D -: %v%s", err, w.report())
			}
			if b, err := os.ReadFile(pidfile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(w.pid) {
				t.Errorf("restore's pidfile holds %q (%v), want %d", b, err, w.pid)
			}
			assertEmptyDir(t, tmp, "the streamed dump and restore")
			w.requestCheck()
			if ws, _, err := reap(w.pid, 60*time.Second); err != nil || !ws.Exited() || ws.ExitStatus() != 0 {
				t.Errorf("the restored workload ended with %s (%v)%s", exitText(ws), err, w.report())
			}
			w.assertPassed()
		})
	}
}

// TestStreamRefusals: restore -D - refuses, with one line naming the
// entry and nothing left behind, archives that would write outside its
// directory or that are not a whole checkpoint; dump -D - and restore
// -D - refuse a terminal (exit status 2).
func TestStreamRefusals(t *testing.T) {
	needCtcr(t)
	type entry struct {
		name, link string
		typ        byte
		body       string
	}
	archive := func(es ...entry) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, e := range es {
			h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: 0o600, Size: int64(len(e.body))}
			if e.typ != tar.TypeReg {
				h.Size = 0
			}
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			tw.Write([]byte(e.body))
		}
		tw.Close()
		return b.Bytes()
	}
	// Every escape in these archives aims at victim, which must stay
	// empty: even a broken ctcr writes nowhere else.
	victim := t.TempDir()
	if err := os.WriteFile(filepath.Join(victim, "file"), []byte("victim"), 0o600); err != nil {
		t.Fatal(err)
	}
	whole := archive(entry{name: "inventory.img", typ: tar.TypeReg, body: strings.Repeat("x", 5000)})
	for _, c := range []struct {
		what string
		data []byte
		want string // in the message
	}{
		{"a name with ..", archive(entry{name: "../x", typ: tar.TypeReg, body: "escaped"}), "../x"},
		{"a name inside a directory with ..", archive(entry{name: "a/", typ: tar.TypeDir}, entry{name: "a/../../x", typ: tar.TypeReg, body: "escaped"}), "a/../../x"},
		{"an absolute name", archive(entry{name: victim + "/x", typ: tar.TypeReg, body: "escaped"}), victim + "/x"},
		{"a symbolic link", archive(entry{name: "parent", typ: tar.TypeSymlink, link: victim}, entry{name: "parent/x", typ: tar.TypeReg, body: "escaped"}), "parent"},
		{"a hard link", archive(entry{name: "a", typ: tar.TypeReg, body: "a"}, entry{name: "b", typ: tar.TypeLink, link: victim + "/file"}), `"b"`},
		{"a device", archive(entry{name: "dev", typ: tar.TypeChar}), `"dev"`},
		{"a file in a directory it did not hold", archive(entry{name: "sub/x", typ: tar.TypeReg, body: "x"}), "sub/x"},
		{"an archive cut short", whole[:1024], "truncated"},
		{"data after the archive", append(append([]byte(nil), whole...), "more"...), "after the end"},
		{"files without a manifest", whole, "no manifest"},
		{"not an archive", []byte(strings.Repeat("not a tar file\n", 100)), "stdin"},
		{"a part of a streamed file before its part 0", archive(entry{name: "pages-1.img.part00000001", typ: tar.TypeReg, body: "x"}), "before its part 0"},
		{"a part repeated", archive(entry{name: "pages-1.img.part00000000", typ: tar.TypeReg, body: "x"}, entry{name: "pages-1.img.part00000000", typ: tar.TypeReg, body: "x"}), "where part 1 was due"},
		{"parts over a file", archive(entry{name: "pages-1.img", typ: tar.TypeReg, body: "x"}, entry{name: "pages-1.img.part00000000", typ: tar.TypeReg, body: "x"}), "pages-1.img.part00000000"},
	} {
		t.Run(c.what, func(t *testing.T) {
			tmp := t.TempDir()
			in := filepath.Join(t.TempDir(), "in.tar")
			if err := os.WriteFile(in, c.data, 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(in)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			cmd := streamCmd(tmp, "restore", "-D", "-")
			cmd.Stdin = f
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err = runWithTimeout(cmd, 60*time.Second)
			msg := strings.TrimSpace(stderr.String())
			if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 1 {
				t.Errorf("restore -D - of %s: %v, want exit status 1; stderr %q", c.what, err, msg)
			}
			if msg == "" || strings.Contains(msg, "\n") || !strings.Contains(msg, c.want) {
				t.Errorf("restore -D - of %s said %q, want one line naming %q", c.what, msg, c.want)
			}
			assertEmptyDir(t, tmp, "the refused restore")
			if ents, _ := os.ReadDir(victim); len(ents) != 1 {
				t.Errorf("restore -D - of %s wrote into %s, outside its directory", c.what, victim)
			}
		})
	}
	t.Run("a terminal is refused as the archive's destination or source", func(t *testing.T) {
		w := startWorkload(t, "counter")
		tmp := t.TempDir()
		_, s := openPty(t)
		d := streamCmd(tmp, "dump", "-t", strconv.Itoa(w.pid), "-D", "-")
		d.Stdout = s
		if err := runWithTimeout(d, 30*time.Second); d.ProcessState == nil || d.ProcessState.ExitCode() != 2 {
			t.Errorf("dump -D - to a terminal: %v, want exit status 2", err)
		}
		r := streamCmd(tmp, "restore", "-D", "-")
		r.Stdin = s
		if err := runWithTimeout(r, 30*time.Second); r.ProcessState == nil || r.ProcessState.ExitCode() != 2 {
			t.Errorf("restore -D - from a terminal: %v, want exit status 2", err)
		}
		assertEmptyDir(t, tmp, "the refusals")
		if st, err := readStat(w.pid); err != nil || st.state == 'Z' || st.state == 't' || st.state == 'T' {
			t.Errorf("the workload is not running on after the refused dump: %v %v", st, err)
		}
	})
}

// waitWithTimeout waits for the started cmd, killing it after timeout.
func waitWithTimeout(cmd *exec.Cmd, timeout time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s timed out after %v", cmd, timeout)
	}
}

// TestStreamBrokenPipe: when the reader of dump -D - goes away, the dump
// fails (exit status 1, naming stdout) before the tree is killed: the
// tree runs on, whole, and no staging directory is left.
func TestStreamBrokenPipe(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "bigmem", "32")
	tmp := t.TempDir()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	d := streamCmd(tmp, "dump", "-t", strconv.Itoa(w.pid), "-D", "-", "--compress", "zstd")
	d.Stdout = pw
	var stderr bytes.Buffer
	d.Stderr = &stderr
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	// A reader that takes a little and leaves.
	buf := make([]byte, 4096)
	if _, err := io.ReadFull(pr, buf); err != nil {
		t.Fatalf("read the start of the archive: %v", err)
	}
	pr.Close()
	err = waitWithTimeout(d, 120*time.Second)
	msg := strings.TrimSpace(stderr.String())
	if d.ProcessState == nil || d.ProcessState.ExitCode() != 1 || strings.Contains(msg, "\n") || !strings.Contains(msg, "stdout") {
		t.Errorf("dump -D - into a closed pipe: %v, stderr %q; want exit status 1 and one line naming stdout", err, msg)
	}
	assertEmptyDir(t, tmp, "the failed streamed dump")
	w.checkPasses(60*time.Second, "bigmem after a streamed dump whose reader went away")
}

// TestContainerCompressZstd: checkpoint --compress zstd of a runc
// container stores its pages as .zst in the bundle's images, show names
// the compression, and the restored container counts on.
func TestContainerCompressZstd(t *testing.T) {
	c := newContainer(t, "zstd", nil)
	c.start()
	c.waitCount(t, 3, 10*time.Second)
	dir := filepath.Join(t.TempDir(), "ck")
	checkpointContainer(t, c, dir, "--compress", "zstd")
	zst, _ := filepath.Glob(filepath.Join(dir, "images", "pages-*.img.zst"))
	raw, _ := filepath.Glob(filepath.Join(dir, "images", "pages-*.img"))
	if len(zst) == 0 || len(raw) != 0 {
		t.Errorf("the checkpoint holds %v and %v, want pages-N.img.zst only", zst, raw)
	}
	s := runCtcr(t, 60*time.Second, "show", "--json", dir)
	if s.code() != 0 || !strings.Contains(s.stdout(), `"compression":"zstd"`) {
		t.Errorf("%s: exit status %d, does not name zstd:\n%s%s", s, s.code(), s.stdout(), s.stderr())
	}
	restoreContainer(t, c, dir)
	c.assertCounting(t, "after restore")
}

// TestCompressZstdPreCopy: a dump --pre-copy --compress zstd keeps the
// pages copied while the task ran raw in its parent image and only those
// written since compressed; restore takes each page from where it is.
func TestCompressZstdPreCopy(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "bigmem", "32")
	img := filepath.Join(t.TempDir(), "img")
	d := runCtcr(t, 120*time.Second, "dump", "--pre-copy", "--compress", "zstd", "-t", strconv.Itoa(w.pid), "-D", img)
	w.logs = append(w.logs, d.errP)
	if d.code() != 0 {
		t.Fatalf("%s: exit status %d: %s", d, d.code(), d.stderr())
	}
	if _, err := w.waitOriginal(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	parent, _ := filepath.Glob(filepath.Join(img, "pre-copy", "pages-*.img"))
	zst, _ := filepath.Glob(filepath.Join(img, "pages-*.img.zst"))
	if len(parent) != 1 || len(zst) != 1 {
		t.Fatalf("%s wrote %v and %v, want a raw pages image in pre-copy/ and a .zst beside it", d, parent, zst)
	}
	r := runCtcr(t, 120*time.Second, "restore", "-d", "-D", img)
	w.logs = append(w.logs, r.errP)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d: %s", r, r.code(), r.stderr())
	}
	w.requestCheck()
	if ws, _, err := reap(w.pid, 60*time.Second); err != nil || !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("the restored workload ended with %s (%v)%s", exitText(ws), err, w.report())
	}
	w.assertPassed()
}

// TestCompressZstdText: memory that compresses (log text and sparse
// pages, textmem) goes through zstd's compressed blocks, not the stored
// ones random data gets: the image is a small fraction of the memory and
// every page comes back.
func TestCompressZstdText(t *testing.T) {
	needCtcr(t)
	const mib = 64
	w := startWorkload(t, "textmem", strconv.Itoa(mib))
	img := filepath.Join(t.TempDir(), "img")
	d := runCtcr(t, 120*time.Second, "dump", "--compress", "zstd", "-t", strconv.Itoa(w.pid), "-D", img)
	w.logs = append(w.logs, d.errP)
	if d.code() != 0 {
		t.Fatalf("%s: exit status %d: %s", d, d.code(), d.stderr())
	}
	if _, err := w.waitOriginal(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	zst, _ := filepath.Glob(filepath.Join(img, "pages-*.img.zst"))
	if len(zst) != 1 {
		t.Fatalf("%s wrote %v, want one pages-N.img.zst", d, zst)
	}
	fi, err := os.Stat(zst[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d MiB of text and sparse pages: %s is %d bytes", mib, filepath.Base(zst[0]), fi.Size())
	if fi.Size() > mib<<20/8 {
		t.Errorf("%s: %d bytes for %d MiB of compressible memory, want under an eighth", zst[0], fi.Size(), mib)
	}
	r := runCtcr(t, 120*time.Second, "restore", "-d", "-D", img)
	w.logs = append(w.logs, r.errP)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d: %s", r, r.code(), r.stderr())
	}
	w.requestCheck()
	if ws, _, err := reap(w.pid, 60*time.Second); err != nil || !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("the restored workload ended with %s (%v)%s", exitText(ws), err, w.report())
	}
	w.assertPassed()
}

// TestPreDumpCompress: pre-dump --compress zstd stores its pages as
// pages-N.img.zst, and a chain that mixes compressed and raw images
// (a compressed pre-dump, a raw one on top, a compressed dump on top of
// that; or a raw dump straight on a compressed pre-dump) restores with
// every page as it last was, each page read from the image that holds
// it; crit decodes every other image of each.
func TestPreDumpCompress(t *testing.T) {
	preDumpZ := func(t *testing.T, w *workload, dir, prev string, compress bool) {
		t.Helper()
		args := []string{"pre-dump", "-t", strconv.Itoa(w.pid), "-D", dir}
		if prev != "" {
			args = append(args, "--prev-images-dir", prev)
		}
		if compress {
			args = append(args, "--compress", "zstd")
		}
		r := runCtcr(t, 120*time.Second, args...)
		w.logs = append(w.logs, r.errP)
		if r.code() != 0 {
			t.Fatalf("%s: exit status %d; stderr: %s%s", r, r.code(), r.stderr(), w.report())
		}
		zst, _ := filepath.Glob(filepath.Join(dir, "pages-*.img.zst"))
		raw, _ := filepath.Glob(filepath.Join(dir, "pages-*.img"))
		if compress && (len(zst) == 0 || len(raw) != 0) || !compress && len(zst) != 0 {
			t.Errorf("%s wrote %v and %v", r, zst, raw)
		}
	}
	dump := func(t *testing.T, w *workload, img, prev string, compress bool) {
		t.Helper()
		args := []string{"dump", "-t", strconv.Itoa(w.pid), "-D", img, "--prev-images-dir", prev}
		if compress {
			args = append(args, "--compress", "zstd")
		}
		r := runCtcr(t, 120*time.Second, args...)
		w.logs = append(w.logs, r.errP)
		if r.code() != 0 {
			t.Fatalf("%s: exit status %d; stderr: %s%s", r, r.code(), r.stderr(), w.report())
		}
		if _, err := w.waitOriginal(10 * time.Second); err != nil {
			t.Fatalf("after the dump: %v", err)
		}
	}
	t.Run("compressed pre-dump, raw pre-dump, compressed dump", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "dirtier", "32")
		base := t.TempDir()
		preDumpZ(t, w, filepath.Join(base, "p1"), "", true)
		preDumpZ(t, w, filepath.Join(base, "p2"), "../p1", false)
		img := filepath.Join(base, "img")
		dump(t, w, img, "../p2", true)
		restoreForeground(t, w, img, scenario{}, nil)
		if !t.Failed() {
			wantSwaps(t, w)
			for _, d := range []string{"p1", "p2", "img"} {
				decodeWithCrit(t, filepath.Join(base, d))
			}
		}
	})
	t.Run("raw dump on a compressed pre-dump", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "bigmem", "16")
		base := t.TempDir()
		preDumpZ(t, w, filepath.Join(base, "p1"), "", true)
		img := filepath.Join(base, "img")
		dump(t, w, img, "../p1", false)
		restoreForeground(t, w, img, scenario{}, nil)
		if !t.Failed() {
			decodeWithCrit(t, filepath.Join(base, "p1"))
		}
	})
}
