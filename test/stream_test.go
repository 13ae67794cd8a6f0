package test

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// streamPipeline runs producer | cat | consumer, the archive passing
// through a process of its own as it does through ssh, and returns once
// both ctcr commands ended (each waited for at most timeout);
// afterProducer, if set, runs once the producer ended (to reap a dumped
// and killed tree, whose PIDs the consumer waits for). The commands'
// stderr goes to files named in logs.
type streamPipeline struct {
	producer, consumer *exec.Cmd
	logs               []string
	// producerHWM is the largest VmHWM of the producer sampled while it
	// ran, in MiB: its own peak RSS. (ru_maxrss is no measure of it:
	// os/exec's vfork child shares this test process's memory until
	// exec, and Linux keeps the larger high-water mark across exec.)
	producerHWM float64
}

func runStreamPipeline(t *testing.T, producer, consumer *exec.Cmd, timeout time.Duration, afterProducer func()) *streamPipeline {
	t.Helper()
	logDir := t.TempDir()
	p := &streamPipeline{producer: producer, consumer: consumer}
	for i, c := range []*exec.Cmd{producer, consumer} {
		f, err := os.Create(filepath.Join(logDir, []string{"producer", "consumer"}[i]+".stderr"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		c.Stderr = f
		p.logs = append(p.logs, f.Name())
	}
	r1, w1, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r2, w2, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cat := exec.Command("cat")
	cat.Stdin, cat.Stdout = r1, w2
	producer.Stdout = w1
	consumer.Stdin = r2
	for _, c := range []*exec.Cmd{cat, producer, consumer} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []*os.File{r1, w1, r2, w2} {
		f.Close()
	}
	stopSampling := make(chan struct{})
	sampled := make(chan float64, 1)
	go func() {
		hwm := 0.0
		for {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", producer.Process.Pid)); err == nil {
				for _, l := range strings.Split(string(b), "\n") {
					if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
						if kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))); err == nil {
							hwm = max(hwm, float64(kb)/1024)
						}
					}
				}
			}
			select {
			case <-stopSampling:
				sampled <- hwm
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	var wg sync.WaitGroup
	for _, c := range []*exec.Cmd{producer, consumer, cat} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			waitWithTimeout(c, timeout)
			if c == producer {
				close(stopSampling)
			}
			if c == producer && afterProducer != nil {
				afterProducer()
			}
		}()
	}
	wg.Wait()
	p.producerHWM = <-sampled
	return p
}

func (p *streamPipeline) stderr() string {
	var b strings.Builder
	for _, l := range p.logs {
		data, _ := os.ReadFile(l)
		b.WriteString(filepath.Base(l) + ": " + strings.TrimSpace(string(data)) + "\n")
	}
	return b.String()
}

// stagingWatch samples a directory tree every few milliseconds and keeps
// the largest file and the largest total it saw.
type stagingWatch struct {
	stop        chan struct{}
	done        chan struct{}
	maxFile     int64
	maxFileName string
	maxTotal    int64
	pagesSeen   string // a pages image found there, if any
	samples     int
}

func watchStaging(dir string) *stagingWatch {
	w := &stagingWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			var total int64
			filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return nil
				}
				if fi, err := d.Info(); err == nil {
					total += fi.Size()
					if strings.HasPrefix(d.Name(), "pages-") && fi.Size() > 0 {
						w.pagesSeen = path
					}
					if fi.Size() > w.maxFile {
						w.maxFile, w.maxFileName = fi.Size(), path
					}
				}
				return nil
			})
			w.maxTotal = max(w.maxTotal, total)
			w.samples++
			select {
			case <-w.stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *stagingWatch) end() {
	close(w.stop)
	<-w.done
}

// TestStreamBounded: `ctcr dump -D - | cat | ctcr restore -D -` of a
// 256 MiB process sends the pages as it copies them: the dump's staging
// directory never holds a pages image (nor more than a few MiB), the
// dump's peak RSS stays below 128 MiB, and the restored process finds
// every byte of its memory as it was, raw and compressed.
func TestStreamBounded(t *testing.T) {
	for _, compress := range []string{"", "zstd"} {
		name := "raw"
		if compress != "" {
			name = compress
		}
		t.Run(name, func(t *testing.T) {
			needCtcr(t)
			const mib = 256
			w := startWorkload(t, "bigmem", strconv.Itoa(mib))
			dumpTmp, restoreTmp := t.TempDir(), t.TempDir()
			dargs := []string{"dump", "-t", strconv.Itoa(w.pid), "-D", "-"}
			if compress != "" {
				dargs = append(dargs, "--compress", compress)
			}
			pidfile := filepath.Join(t.TempDir(), "pid")
			watch := watchStaging(dumpTmp)
			start := time.Now()
			p := runStreamPipeline(t, streamCmd(dumpTmp, dargs...), streamCmd(restoreTmp, "restore", "-D", "-", "-d", "--pidfile", pidfile), 180*time.Second, func() {
				if _, err := w.waitOriginal(10 * time.Second); err != nil {
					t.Error(err)
				}
			})
			elapsed := time.Since(start)
			watch.end()
			w.logs = append(w.logs, p.logs...)
			if !p.producer.ProcessState.Success() || !p.consumer.ProcessState.Success() {
				t.Fatalf("dump -D - | cat | restore -D -: %v, %v\n%s%s", p.producer.ProcessState, p.consumer.ProcessState, p.stderr(), w.report())
			}
			rss := p.producerHWM
			t.Logf("%d MiB streamed and restored in %v; dump peak RSS %.0f MiB; staging held at most %d bytes (largest file %d, %s) in %d samples",
				mib, elapsed.Round(time.Millisecond), rss, watch.maxTotal, watch.maxFile, watch.maxFileName, watch.samples)
			if rss > 128 || rss == 0 {
				t.Errorf("the streamed dump's peak RSS was %.0f MiB, want at most 128", rss)
			}
			// The pages are 256 MiB; the other images of bigmem some KiB.
			if watch.maxFile > 4<<20 || watch.maxTotal > 8<<20 || watch.pagesSeen != "" {
				t.Errorf("the streamed dump's staging directory held %d bytes, the largest file %s of %d bytes, pages image %q: the pages were staged on disk", watch.maxTotal, watch.maxFileName, watch.maxFile, watch.pagesSeen)
			}
			if b, err := os.ReadFile(pidfile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(w.pid) {
				t.Errorf("restore's pidfile holds %q (%v), want %d", b, err, w.pid)
			}
			assertEmptyDir(t, dumpTmp, "the streamed dump")
			assertEmptyDir(t, restoreTmp, "the streamed restore")
			w.requestCheck()
			if ws, _, err := reap(w.pid, 60*time.Second); err != nil || !ws.Exited() || ws.ExitStatus() != 0 {
				t.Errorf("the restored workload ended with %s (%v)%s", exitText(ws), err, w.report())
			}
			w.assertPassed()
		})
	}
}

// TestContainerStream: `ctcr checkpoint CT -D - --compress zstd | cat |
// ctcr restore CT -D -` moves a runc container through a pipe: its pages
// are never staged on disk, it counts on after the restore, runc sees
// it running, and neither side leaves a directory.
func TestContainerStream(t *testing.T) {
	c := newContainer(t, "stream", nil)
	c.start()
	c.waitCount(t, 3, 10*time.Second)
	dumpTmp, restoreTmp := t.TempDir(), t.TempDir()
	watch := watchStaging(dumpTmp)
	p := runStreamPipeline(t, streamCmd(dumpTmp, "checkpoint", c.id, "-D", "-", "--compress", "zstd"), streamCmd(restoreTmp, "restore", c.id, "-D", "-"), 120*time.Second, nil)
	if !p.producer.ProcessState.Success() || !p.consumer.ProcessState.Success() {
		t.Fatalf("checkpoint -D - | cat | restore -D -: %v, %v\n%s", p.producer.ProcessState, p.consumer.ProcessState, p.stderr())
	}
	watch.end()
	if watch.pagesSeen != "" {
		t.Errorf("the streamed checkpoint staged %s on disk", watch.pagesSeen)
	}
	c.notePid()
	c.waitStatus(t, "running", 5*time.Second)
	c.assertCounting(t, "after a streamed checkpoint and restore")
	assertEmptyDir(t, dumpTmp, "the streamed checkpoint")
	assertEmptyDir(t, restoreTmp, "the streamed restore")
}

// TestStreamKilled: a dump -D - killed (SIGKILL) while it sends the
// pages, its reader still there, leaves the tree running whole: the
// workload finds every byte of its memory as it was.
func TestStreamKilled(t *testing.T) {
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
	// 4 MiB of the archive: the dump is inside the pages, and blocks on
	// the full pipe once this reader stops.
	buf := make([]byte, 4<<20)
	if _, err := io.ReadFull(pr, buf); err != nil {
		t.Fatalf("read the start of the archive: %v", err)
	}
	if !strings.Contains(string(buf[:512]), "pages-1.img.part00000000") {
		t.Errorf("the archive does not start with the first part of pages-1.img: %q", buf[:100])
	}
	d.Process.Kill()
	waitWithTimeout(d, 30*time.Second)
	w.checkPasses(60*time.Second, "bigmem after a streamed dump killed while it sent the pages")
}

// TestStreamStalled: a dump -D - whose reader stops reading without
// going away fails once it took nothing for the stall time (shortened
// here with CTCR_STREAM_STALL), naming stdout, instead of holding the
// tree stopped for ever; the tree runs on whole.
func TestStreamStalled(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "bigmem", "64")
	tmp := t.TempDir()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	d := streamCmd(tmp, "dump", "-t", strconv.Itoa(w.pid), "-D", "-")
	d.Env = append(d.Env, "CTCR_STREAM_STALL=2s")
	d.Stdout = pw
	var stderr strings.Builder
	d.Stderr = &stderr
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	buf := make([]byte, 4<<20)
	if _, err := io.ReadFull(pr, buf); err != nil {
		t.Fatalf("read the start of the archive: %v", err)
	}
	start := time.Now()
	err = waitWithTimeout(d, 60*time.Second)
	msg := strings.TrimSpace(stderr.String())
	if d.ProcessState == nil || d.ProcessState.ExitCode() != 1 || strings.Contains(msg, "\n") || !strings.Contains(msg, "stdout") || !strings.Contains(msg, "took nothing") {
		t.Errorf("dump -D - to a reader that stopped: %v after %v, stderr %q; want exit status 1 and one line naming stdout", err, time.Since(start).Round(time.Millisecond), msg)
	}
	assertEmptyDir(t, tmp, "the stalled streamed dump")
	w.checkPasses(60*time.Second, "bigmem after a streamed dump whose reader stalled")
}

// TestStreamWriterStalled: a restore -D - whose writer stops sending
// without going away (here after the first 100 bytes of a tar header)
// fails once nothing came for the stall time (shortened with
// CTCR_STREAM_STALL), with one line naming stdin, instead of waiting for
// ever; it made nothing and leaves nothing.
func TestStreamWriterStalled(t *testing.T) {
	needCtcr(t)
	tmp := t.TempDir()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	r := streamCmd(tmp, "restore", "-D", "-")
	r.Env = append(r.Env, "CTCR_STREAM_STALL=2s")
	r.Stdin = pr
	var stderr strings.Builder
	r.Stderr = &stderr
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	pr.Close()
	if _, err := pw.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = waitWithTimeout(r, 60*time.Second)
	msg := strings.TrimSpace(stderr.String())
	if r.ProcessState == nil || r.ProcessState.ExitCode() == 0 || strings.Contains(msg, "\n") || !strings.Contains(msg, "stdin") || !strings.Contains(msg, "sent nothing for 2s") {
		t.Errorf("restore -D - from a writer that stopped: %v after %v, stderr %q; want a failure and one line naming stdin and the stall", err, time.Since(start).Round(time.Millisecond), msg)
	}
	assertEmptyDir(t, tmp, "the restore whose writer stalled")
}

// TestStreamLeavesStdioBlocking: dump -D - and restore -D - wait for a
// slow peer with a deadline, but never by making the file description
// of their stdout or stdin non-blocking: that description is shared
// with the shell or program that gave it, and a ctcr killed mid-stream
// would leave it so for them. The flags are checked while ctcr waits
// on a stalled peer and after it is killed there with SIGKILL.
func TestStreamLeavesStdioBlocking(t *testing.T) {
	needCtcr(t)
	// The pipes come from os.Pipe, which Go's poller serves: their
	// Fd method would make them blocking again, so the flags are read
	// through the raw fd.
	nonblocking := func(t *testing.T, f *os.File) bool {
		rc, err := f.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		fl, ferr := 0, error(nil)
		if err := rc.Control(func(fd uintptr) { fl, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0) }); err != nil || ferr != nil {
			t.Fatal(err, ferr)
		}
		return fl&unix.O_NONBLOCK != 0
	}
	check := func(t *testing.T, c *exec.Cmd, shared *os.File, what string) {
		time.Sleep(500 * time.Millisecond) // ctcr is waiting on its peer by now
		if nonblocking(t, shared) {
			t.Errorf("%s: the shared file description is O_NONBLOCK while ctcr waits", what)
		}
		c.Process.Kill()
		waitWithTimeout(c, 30*time.Second)
		if nonblocking(t, shared) {
			t.Errorf("%s: the shared file description is O_NONBLOCK after ctcr was killed", what)
		}
	}
	t.Run("dump -D - to a reader that stopped", func(t *testing.T) {
		w := startWorkload(t, "bigmem", "64")
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer pr.Close()
		defer pw.Close()
		setBlocking(t, pw)
		d := streamCmd(t.TempDir(), "dump", "-t", strconv.Itoa(w.pid), "-D", "-")
		d.Stdout = pw
		if err := d.Start(); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(pr, make([]byte, 1<<20)); err != nil {
			t.Fatalf("read the start of the archive: %v", err)
		}
		check(t, d, pw, "dump -D -")
		w.checkPasses(60*time.Second, "bigmem after a streamed dump killed while its reader stalled")
	})
	t.Run("restore -D - from a writer that stopped", func(t *testing.T) {
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer pr.Close()
		defer pw.Close()
		setBlocking(t, pr)
		r := streamCmd(t.TempDir(), "restore", "-D", "-")
		r.Stdin = pr
		if err := r.Start(); err != nil {
			t.Fatal(err)
		}
		if _, err := pw.Write(make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
		check(t, r, pr, "restore -D -")
	})
}

// setBlocking clears O_NONBLOCK on f's description, which os.Pipe sets.
func setBlocking(t *testing.T, f *os.File) {
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetNonblock(int(fd), false) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
}
