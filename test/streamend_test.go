package test

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestStreamReaderLeaves: a dump -D - whose reader goes away before it
// took the whole archive fails (exit status 1, one line naming stdout)
// and leaves the tree running whole, whether the reader leaves early
// (`| head -c 1000`) or only once the archive's end already sits in the
// pipe's buffer: a write into a pipe returns before the reader has the
// bytes, so the dump must see them read before it kills the tree.
func TestStreamReaderLeaves(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reader func(t *testing.T, pr *os.File)
	}{
		{"head -c 1000 takes the first 1000 bytes and exits", func(t *testing.T, pr *os.File) {
			head := exec.Command("head", "-c", "1000")
			head.Stdin = pr
			var out bytes.Buffer
			head.Stdout = &out
			if err := head.Run(); err != nil {
				t.Errorf("head -c 1000: %v", err)
			}
			if out.Len() != 1000 {
				t.Errorf("head -c 1000 got %d bytes", out.Len())
			}
		}},
		{"a reader leaves as soon as the manifest's header arrives", func(t *testing.T, pr *os.File) {
			// Block by block (tar's 512 bytes) up to the manifest's
			// header, which goes last: its contents and the archive's
			// end stay unread in the pipe's buffer.
			block := make([]byte, 512)
			for {
				if _, err := io.ReadFull(pr, block); err != nil {
					t.Errorf("the archive ended (%v) without a manifest", err)
					return
				}
				if bytes.HasPrefix(block, []byte("manifest.json\x00")) {
					return
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			needCtcr(t)
			w := startWorkload(t, "bigmem", "16")
			tmp := t.TempDir()
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			d := streamCmd(tmp, "dump", "-t", strconv.Itoa(w.pid), "-D", "-")
			d.Stdout = pw
			var stderr bytes.Buffer
			d.Stderr = &stderr
			if err := d.Start(); err != nil {
				t.Fatal(err)
			}
			pw.Close()
			tc.reader(t, pr)
			pr.Close()
			err = waitWithTimeout(d, 120*time.Second)
			msg := strings.TrimSpace(stderr.String())
			if d.ProcessState == nil || d.ProcessState.ExitCode() != 1 || strings.Contains(msg, "\n") || !strings.Contains(msg, "stdout") {
				t.Fatalf("dump -D - to a reader that left: %v, stderr %q; want exit status 1 and one line naming stdout", err, msg)
			}
			assertEmptyDir(t, tmp, "the failed streamed dump")
			w.checkPasses(60*time.Second, "bigmem after a streamed dump whose reader left")
		})
	}
}

// TestStreamKilledStaging: a dump -D - killed with SIGKILL mid-stream
// cannot remove its staging directory; the next streamed command (here a
// restore -D - of an empty stdin, which fails) removes it, as no process
// holds its lock any more, and the tree runs on.
func TestStreamKilledStaging(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "bigmem", "64")
	tmp := t.TempDir()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	d := streamCmd(tmp, "dump", "-t", strconv.Itoa(w.pid), "-D", "-")
	d.Stdout = pw
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	// 4 MiB: the dump is inside the pages, its staging made.
	if _, err := io.ReadFull(pr, make([]byte, 4<<20)); err != nil {
		t.Fatalf("read the start of the archive: %v", err)
	}
	d.Process.Kill()
	waitWithTimeout(d, 30*time.Second)
	left, _ := filepath.Glob(filepath.Join(tmp, "ctcr-dump-*"))
	if len(left) != 1 {
		t.Fatalf("after SIGKILL mid-stream, %s holds %v, want the dump's staging directory", tmp, left)
	}
	// Another ctcr, running meanwhile, keeps its own.
	other := filepath.Join(tmp, "ctcr-other-1")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	r := streamCmd(tmp, "restore", "-D", "-")
	r.Stdin = nil // /dev/null: an empty archive
	if out, err := r.CombinedOutput(); err == nil {
		t.Errorf("restore -D - of an empty stdin succeeded: %s", out)
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "ctcr-*")); len(left) != 1 || left[0] != other {
		t.Errorf("after the next streamed command %s holds %v, want only %s (no lock file: not a dead ctcr's)", tmp, left, other)
	}
	w.checkPasses(60*time.Second, "bigmem after a streamed dump killed mid-stream")
}
