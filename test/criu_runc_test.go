package test

import (
	"errors"
	"fmt"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	gocriu "github.com/checkpoint-restore/go-criu/v7"
	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"github.com/checkpoint-restore/go-criu/v7/stats"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// ctcr as CRIU (issue 12): runtimes run `criu swrk FD` and speak CRIU's
// RPC; here the real runc 1.1.5 and go-criu's client talk to ctcr
// installed under the name criu.

// criuLink returns a `criu` symlink to the ctcr under test, in a
// directory of its own (to put first on PATH, or to give runc --criu).
func criuLink(t *testing.T) string {
	t.Helper()
	needCtcr(t)
	link := filepath.Join(t.TempDir(), "criu")
	if err := os.Symlink(ctcrBin, link); err != nil {
		t.Fatal(err)
	}
	return link
}

func TestCriuNameAnswersVersionCheckAndFeatures(t *testing.T) {
	link := criuLink(t)
	out, err := exec.Command(link, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Version: 4.2\n") {
		t.Fatalf("criu --version: %v: %q, want a line \"Version: 4.2\"", err, out)
	}
	out, err = exec.Command(ctcrBin, "criu", "check").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Looks good.") {
		t.Fatalf("ctcr criu check: %v: %q, want exit 0 and \"Looks good.\"", err, out)
	}

	c := gocriu.MakeCriu()
	c.SetCriuPath(link)
	v, err := c.GetCriuVersion()
	if err != nil {
		t.Fatalf("go-criu GetCriuVersion through ctcr: %v", err)
	}
	// podman needs 3.11 (3.16 for pods); runc 3.0 and more per feature.
	if v != 40200 {
		t.Errorf("VERSION: go-criu reads %d, want 40200 (CRIU 4.2)", v)
	}
	feats, err := c.FeatureCheck(&rpc.CriuFeatures{MemTrack: proto.Bool(true)})
	if err != nil {
		t.Fatalf("FEATURE_CHECK through ctcr: %v", err)
	}
	if feats.MemTrack == nil || !feats.GetMemTrack() {
		t.Errorf("FEATURE_CHECK mem_track = %v, want true: this kernel tracks writes with userfaultfd (see ctcr check)", feats.MemTrack)
	}
	if feats.LazyPages != nil {
		t.Errorf("FEATURE_CHECK answered lazy_pages (%v), which was not asked", feats.GetLazyPages())
	}
}

func TestCriuRefusesOptionsItDoesNotImplement(t *testing.T) {
	link := criuLink(t)
	dir := t.TempDir()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c := gocriu.MakeCriu()
	c.SetCriuPath(link)
	// A page server would send the pages elsewhere: a dump that
	// ignored it would leave the runtime without them.
	err = c.Dump(&rpc.CriuOpts{
		ImagesDirFd: proto.Int32(int32(d.Fd())), Pid: proto.Int32(int32(os.Getpid())), LogFile: proto.String("dump.log"),
		Ps: &rpc.CriuPageServerInfo{Address: proto.String("127.0.0.1"), Port: proto.Int32(27)},
	}, nil)
	if err == nil || !strings.Contains(err.Error(), "option ps is not supported") {
		t.Fatalf("DUMP with a page server: %v, want a refusal naming the option ps", err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "dump.log"))
	if !strings.Contains(string(b), "option ps is not supported") {
		t.Errorf("dump.log does not say why the dump was refused:\n%s", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "inventory.img")); err == nil {
		t.Error("a refused dump wrote images")
	}
}

// criuRunc runs `runc --criu LINK args...` in the container's bundle and
// returns how long it took.
func (c *runcContainer) criuRunc(t *testing.T, link string, args ...string) time.Duration {
	t.Helper()
	start := time.Now()
	out, err := runcCmd(60*time.Second, c.bundle, append([]string{"--criu", link}, args...)...)
	took := time.Since(start)
	if err != nil {
		var logs string
		for _, l := range []string{"dump.log", "restore.log", "pre-dump.log"} {
			if b, err := os.ReadFile(filepath.Join(c.bundle, "work", l)); err == nil {
				logs += "\n--- " + l + ":\n" + string(b)
			}
		}
		t.Fatalf("runc --criu %s %s: %v\n%s%s", link, strings.Join(args, " "), err, out, logs)
	}
	return took
}

// assertStats checks that the work directory holds CRIU's stats image
// of the given name, readable by go-criu's stats package, the reader
// podman uses (--print-stats). That package registers the same proto as
// crit/images/stats: this test binary must not link both.
func assertStats(t *testing.T, workDir, name string) {
	t.Helper()
	d, err := os.Open(workDir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	switch name {
	case stats.StatsDump:
		st, err := stats.CriuGetDumpStats(d)
		if err != nil {
			t.Fatalf("%s in %s: %v", name, workDir, err)
		}
		if st.GetPagesWritten() == 0 || st.GetFrozenTime() == 0 {
			t.Errorf("%s: pages_written %d, frozen_time %d µs: a dump that copied nothing and froze nothing", name, st.GetPagesWritten(), st.GetFrozenTime())
		}
	case stats.StatsRestore:
		st, err := stats.CriuGetRestoreStats(d)
		if err != nil {
			t.Fatalf("%s in %s: %v", name, workDir, err)
		}
		if st.GetRestoreTime() == 0 {
			t.Errorf("%s: restore_time 0", name)
		}
	}
}

func TestCriuRuncCheckpointRestore(t *testing.T) {
	link := criuLink(t)
	c := newContainer(t, "criurpc", nil)
	c.start()
	countAt := c.countRetry(t, "count")
	subAt := c.countRetry(t, "sub")
	img, work := filepath.Join(c.bundle, "img"), filepath.Join(c.bundle, "work")
	dumpTime := c.criuRunc(t, link, "checkpoint", "--image-path", img, "--work-path", work, c.id)
	t.Logf("runc checkpoint through ctcr: %v", dumpTime)
	if st := c.status(); !strings.Contains(st, "does not exist") {
		t.Fatalf("after runc checkpoint the container is %q, want it gone (killed and deleted by runc)", st)
	}
	assertStats(t, work, stats.StatsDump)
	b, err := os.ReadFile(filepath.Join(work, "dump.log"))
	for _, n := range []string{"pre-dump", "network-lock", "query-ext-files", "post-dump"} {
		if err != nil || !strings.Contains(string(b), "notification "+n+" answered") {
			t.Errorf("dump.log (%v) does not show runc answering %s:\n%s", err, n, b)
		}
	}

	restoreTime := c.criuRunc(t, link, "restore", "-d", "--image-path", img, "--work-path", work, c.id)
	t.Logf("runc restore through ctcr: %v", restoreTime)
	c.notePid()
	c.waitStatus(t, "running", 5*time.Second)
	c.assertCountersContinue(t, countAt, subAt)
	assertStats(t, work, stats.StatsRestore)
	if got := strings.TrimSpace(c.mustExec(t, "hostname")); got != "h-criurpc" {
		t.Errorf("runc exec hostname in the restored container: %q, want h-criurpc", got)
	}
	if got := c.mustExec(t, "cat /data/hello"); !strings.Contains(got, "written before the checkpoint") {
		t.Errorf("the tmpfs lost its file: /data/hello holds %q", got)
	}
	if out, err := c.cmd(10*time.Second, "", "list"); err != nil || !strings.Contains(string(out), c.id) {
		t.Errorf("runc list: %v: %s, want the restored container listed", err, out)
	}
	if out, err := c.cmd(10*time.Second, "", "kill", c.id, "KILL"); err != nil {
		t.Fatalf("runc kill of the restored container: %v: %s", err, out)
	}
	c.waitStatus(t, "stopped", 10*time.Second)
	if out, err := c.cmd(10*time.Second, "", "delete", c.id); err != nil {
		t.Fatalf("runc delete of the restored container: %v: %s", err, out)
	}
}

func TestCriuRuncLeaveRunning(t *testing.T) {
	link := criuLink(t)
	c := newContainer(t, "criurpc-lr", nil)
	c.start()
	img, work := filepath.Join(c.bundle, "img"), filepath.Join(c.bundle, "work")
	c.criuRunc(t, link, "checkpoint", "--leave-running", "--image-path", img, "--work-path", work, c.id)
	if st := c.status(); st != "running" {
		t.Fatalf("after checkpoint --leave-running the container is %q", st)
	}
	c.assertCounting(t, "after checkpoint --leave-running")
	b, _ := os.ReadFile(filepath.Join(work, "dump.log"))
	if !strings.Contains(string(b), "notification network-unlock answered") {
		t.Errorf("dump.log does not show network-unlock after a leave-running dump:\n%s", b)
	}
	countAt := c.countRetry(t, "count")
	if out, err := c.cmd(10*time.Second, "", "delete", "-f", c.id); err != nil {
		t.Fatalf("runc delete -f: %v: %s", err, out)
	}
	c.criuRunc(t, link, "restore", "-d", "--image-path", img, "--work-path", work, c.id)
	c.notePid()
	// The checkpoint was taken before countAt: the restored loop goes
	// on from below it; that it counts is what matters.
	got := c.countRetry(t, "count")
	if got > countAt {
		t.Errorf("restored /data/count is %d, want the checkpoint's, at most %d", got, countAt)
	}
	c.assertCounting(t, "after restore")
}

func TestCriuRuncPreDumpThenDump(t *testing.T) {
	link := criuLink(t)
	c := newContainer(t, "criurpc-pd", nil)
	c.start()
	pre, img, work := filepath.Join(c.bundle, "pre"), filepath.Join(c.bundle, "img"), filepath.Join(c.bundle, "work")
	// runc asks FEATURE_CHECK mem_track first, and refuses a pre-dump
	// when it is not there (CRIU 4.2 here: no soft-dirty bit).
	c.criuRunc(t, link, "checkpoint", "--pre-dump", "--image-path", pre, "--work-path", work, c.id)
	if st := c.status(); st != "running" {
		t.Fatalf("after a pre-dump the container is %q, want running", st)
	}
	c.assertCounting(t, "after the pre-dump")
	countAt := c.countRetry(t, "count")
	c.criuRunc(t, link, "checkpoint", "--parent-path", "../pre", "--image-path", img, "--work-path", work, c.id)
	if l, err := os.Readlink(filepath.Join(img, "parent")); err != nil || l != "../pre" {
		t.Errorf("the dump's parent link is %q (%v), want ../pre", l, err)
	}
	d, err := os.Open(work)
	if err != nil {
		t.Fatal(err)
	}
	st, err := stats.CriuGetDumpStats(d)
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	if st.GetPagesSkippedParent() == 0 {
		t.Errorf("stats-dump: pages_skipped_parent 0: the dump on top of the pre-dump copied everything again (written %d)", st.GetPagesWritten())
	}
	c.criuRunc(t, link, "restore", "-d", "--image-path", img, "--work-path", work, c.id)
	c.notePid()
	c.waitStatus(t, "running", 5*time.Second)
	if got := c.countRetry(t, "count"); got < countAt {
		t.Errorf("/data/count is %d after restore, below %d read before the dump", got, countAt)
	}
	c.assertCounting(t, "after restore")
	if got := c.mustExec(t, "cat /data/hello"); !strings.Contains(got, "written before the checkpoint") {
		t.Errorf("/data/hello holds %q after restore", got)
	}
}

// consoleSocket listens where runc sends a container's console master
// (--console-socket) and returns its path and a channel with the master.
func consoleSocket(t *testing.T, name string) (string, <-chan *os.File) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan *os.File, 1)
	go func() {
		defer l.Close()
		l.SetDeadline(time.Now().Add(60 * time.Second))
		conn, err := l.AcceptUnix()
		if err != nil {
			close(ch)
			return
		}
		defer conn.Close()
		buf, oob := make([]byte, 4096), make([]byte, 4096)
		_, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
		if err != nil {
			close(ch)
			return
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) == 0 {
			close(ch)
			return
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) == 0 {
			close(ch)
			return
		}
		ch <- os.NewFile(uintptr(fds[0]), "console-master")
	}()
	return path, ch
}

func receiveConsole(t *testing.T, ch <-chan *os.File, what string) *os.File {
	t.Helper()
	select {
	case f, ok := <-ch:
		if !ok || f == nil {
			t.Fatalf("%s: runc sent no console master to the console socket", what)
		}
		t.Cleanup(func() { f.Close() })
		return f
	case <-time.After(60 * time.Second):
		t.Fatalf("%s: no console master on the console socket after 60 s", what)
	}
	return nil
}

func TestCriuRuncConsoleSocket(t *testing.T) {
	link := criuLink(t)
	c := newContainer(t, "criurpc-tty", func(s *specs.Spec) {
		s.Process.Terminal = true
		s.Process.Args = []string{"sh", "-c", `(i=0; while :; do i=$((i+1)); echo $i > /data/count; sleep 0.2; done) &
while read l; do echo "got $l" > /data/tty; done`}
	})
	sock, ch := consoleSocket(t, "console1")
	if out, err := c.cmd(30*time.Second, c.bundle, "run", "-d", "--console-socket", sock, c.id); err != nil {
		t.Fatalf("runc run -d --console-socket: %v: %s", err, out)
	}
	c.notePid()
	master := receiveConsole(t, ch, "runc run")
	c.waitCount(t, 5, 10*time.Second)
	if _, err := master.Write([]byte("before\n")); err != nil {
		t.Fatal(err)
	}
	c.waitFileHolds(t, "/data/tty", "got before")
	img, work := filepath.Join(c.bundle, "img"), filepath.Join(c.bundle, "work")
	c.criuRunc(t, link, "checkpoint", "--image-path", img, "--work-path", work, c.id)

	sock2, ch2 := consoleSocket(t, "console2")
	c.criuRunc(t, link, "restore", "-d", "--console-socket", sock2, "--image-path", img, "--work-path", work, c.id)
	c.notePid()
	master2 := receiveConsole(t, ch2, "runc restore")
	if b, _ := os.ReadFile(filepath.Join(work, "restore.log")); !strings.Contains(string(b), "notification orphan-pts-master answered") {
		t.Errorf("restore.log does not show the orphan-pts-master notification:\n%s", b)
	}
	// The restored shell reads its new terminal, whose master runc
	// passed on to the console socket.
	if _, err := master2.Write([]byte("after\n")); err != nil {
		t.Fatal(err)
	}
	c.waitFileHolds(t, "/data/tty", "got after")
	c.assertCounting(t, "after restore")
}

// TestCriuRuncTCPEstablishedRuntimeNetns: a runc container in a network
// namespace made beforehand (as CNI makes one) keeps a TCP connection
// from a client on the host across `runc checkpoint --tcp-established`
// and `runc restore` through ctcr: runc names the namespace external
// (net[INODE]:extRootNetNS) at the dump and hands it back as an
// inherit_fd at the restore.
func TestCriuRuncTCPEstablishedRuntimeNetns(t *testing.T) {
	link := criuLink(t)
	e := netnsEchoContainer(t, "criurpc-net", 202)
	c, conn, rd, peer, ctIP := e.c, e.conn, e.rd, e.peer, e.ctIP
	ask := func(line string) { t.Helper(); e.ask(t, line) }
	ask("before")
	img, work := filepath.Join(c.bundle, "img"), filepath.Join(c.bundle, "work")
	c.criuRunc(t, link, "checkpoint", "--tcp-established", "--image-path", img, "--work-path", work, c.id)
	// Sent while the container is away: held by the lock, retransmitted
	// to the restored server.
	if _, err := fmt.Fprintf(conn, "during\n"); err != nil {
		t.Fatalf("send while the container is away: %v", err)
	}
	c.criuRunc(t, link, "restore", "-d", "--tcp-established", "--image-path", img, "--work-path", work, c.id)
	c.notePid()
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	if got, err := rd.ReadString('\n'); err != nil || got != "echo:during\n" {
		t.Fatalf("the restored server answered %q (%v) to what was sent while it was away, want echo:during", got, err)
	}
	ask("after")
	if out := c.mustExec(t, "ip addr show "+peer); !strings.Contains(out, ctIP+"/24") {
		t.Errorf("after restore the container's %s is not the runtime's (no %s):\n%s", peer, ctIP, out)
	}
	if b, _ := os.ReadFile(filepath.Join(work, "restore.log")); !strings.Contains(string(b), "join the runtime's network namespace") {
		t.Errorf("restore.log does not show the runtime's namespace handed back (inherit_fd extRootNetNS):\n%s", b)
	}
}

// TestCriuRuncRestoreForeground: `runc restore` without -d waits for the
// restored init as its child and exits with its status. CRIU makes the
// init runc's child with CLONE_PARENT (rst_sibling); ctcr's init is its
// own child and passes to runc, a child subreaper, when ctcr exits.
func TestCriuRuncRestoreForeground(t *testing.T) {
	link := criuLink(t)
	c := newContainer(t, "criurpc-fg", nil)
	c.start()
	img, work := filepath.Join(c.bundle, "img"), filepath.Join(c.bundle, "work")
	c.criuRunc(t, link, "checkpoint", "--image-path", img, "--work-path", work, c.id)
	cmd := exec.Command("runc", "--criu", link, "restore", "--image-path", img, "--work-path", work, c.id)
	cmd.Dir = c.bundle
	// A file, not a pipe: the restored init gets runc's stdio, and
	// Wait would wait for it to close a pipe.
	outf, err := os.Create(filepath.Join(c.bundle, "restore.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer outf.Close()
	cmd.Stdout, cmd.Stderr = outf, outf
	output := func() string { b, _ := os.ReadFile(outf.Name()); return string(b) }
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	waited := false
	defer func() {
		if !waited {
			cmd.Process.Kill()
			<-done
		}
	}()
	c.waitStatus(t, "running", 20*time.Second)
	c.notePid()
	st, _ := c.state()
	// runc says running as soon as the init exists, while ctcr (its
	// parent until then) may still be on its way out.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ps, err := readStat(st.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if ps.ppid == cmd.Process.Pid {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the restored init %d has parent %d 10 s after runc said running, want runc restore (%d)", st.Pid, ps.ppid, cmd.Process.Pid)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.assertCounting(t, "under a foreground runc restore")
	if o, err := c.cmd(10*time.Second, "", "kill", c.id, "KILL"); err != nil {
		t.Fatalf("runc kill: %v: %s", err, o)
	}
	select {
	case err := <-done:
		waited = true
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 137 {
			t.Errorf("runc restore ended with %v after its container was killed, want exit status 137 (128+SIGKILL)\n%s", err, output())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("runc restore did not end 20 s after its container was killed:\n%s", output())
	}
}

// countRetry reads a counter of the container, again if the read fell
// between the script's truncation of the file and its write.
func (c *runcContainer) countRetry(t *testing.T, name string) int {
	t.Helper()
	var err error
	for try := 0; try < 10; try++ {
		var n int
		if n, err = c.count(name); err == nil {
			return n
		}
		time.Sleep(30 * time.Millisecond)
	}
	t.Fatalf("container %s: /data/%s: %v", c.id, name, err)
	return 0
}

// TestKillRuncDuringCriuCheckpoint: runc is killed with SIGKILL at
// moments spread over its `checkpoint` through ctcr, which runs as its
// `criu swrk` child and talks to it over a socketpair. ctcr must see its
// peer gone (a notification nobody answers, a reply nobody reads), roll
// back and exit: the container runs on, its tasks neither traced nor
// stopped, unless runc had answered the post-dump notification before it
// died (then the checkpoint is complete and the container is gone, as
// it would be had runc lived). No ctcr is left behind either way.
func TestKillRuncDuringCriuCheckpoint(t *testing.T) {
	link := criuLink(t)
	trials := killPoints()
	c := newContainer(t, "criurpc-kill", nil)
	c.start()
	// One whole checkpoint that leaves the container running sets the
	// span the kills are spread over.
	img, work := filepath.Join(c.bundle, "img"), filepath.Join(c.bundle, "work")
	span := c.criuRunc(t, link, "checkpoint", "--leave-running", "--image-path", img, "--work-path", work, c.id)
	t.Logf("a whole runc checkpoint --leave-running through ctcr: %v", span)
	interrupted, finished := 0, 0
	for i := range trials {
		img, work := filepath.Join(c.bundle, fmt.Sprintf("img%d", i)), filepath.Join(c.bundle, fmt.Sprintf("work%d", i))
		// The kill lands while ctcr runs: delay after it started,
		// spread over 0.8 of the span (which has runc's own part too,
		// so the last trials may find the checkpoint done).
		delay := time.Duration((float64(i) + rand.Float64()) * 0.8 * float64(span) / float64(trials))
		c.killRuncInCriu(t, link, delay, fmt.Sprintf("trial %d", i), "checkpoint", "--image-path", img, "--work-path", work, c.id)
		if st := c.status(); st != "running" {
			// runc answers post-dump by creating a "checkpoint" file
			// in its state directory, which it removes with the rest
			// when it deletes the checkpointed container. Neither
			// there: runc died before it answered, and the tree had
			// to run on.
			_, answered := os.Stat(filepath.Join("/run/runc", c.id, "checkpoint"))
			if answered != nil && !strings.Contains(st, "does not exist") {
				log, _ := os.ReadFile(filepath.Join(work, "dump.log"))
				t.Fatalf("trial %d (runc killed after %v): the container is %q, but runc never answered post-dump; dump.log:\n%s", i, delay, st, log)
			}
			finished++
			t.Logf("trial %d (runc killed after %v): the checkpoint finished first", i, delay)
			runcCmd(10*time.Second, "", "delete", "-f", c.id)
			c.start()
			continue
		}
		interrupted++
		c.assertUntraced(t, fmt.Sprintf("trial %d (runc killed after %v)", i, delay))
		c.assertCounting(t, fmt.Sprintf("trial %d (runc killed after %v)", i, delay))
	}
	t.Logf("%d trials: %d interrupted, %d finished before the kill", trials, interrupted, finished)
	if interrupted == 0 {
		t.Errorf("no kill landed inside a checkpoint")
	}
}

// killRuncInCriu runs `runc --criu link ARGS...`, kills runc with
// SIGKILL delay after its ctcr (criu swrk) started, and waits until that
// ctcr has gone too (its orphan: a zombie the init has not reaped yet
// counts as gone), failing the test after 60 s. The bind mount of the
// rootfs the killed runc made for criu, runc's own residue and not
// ctcr's, is taken away. what names the trial in failures.
func (c *runcContainer) killRuncInCriu(t *testing.T, link string, delay time.Duration, what string, args ...string) {
	t.Helper()
	cmd := exec.Command("runc", append([]string{"--criu", link}, args...)...)
	cmd.Dir = c.bundle
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// ctcr is runc's child: its threads' children are a few files to
	// read, where a scan of /proc on a busy machine may miss the whole
	// of a 70 ms ctcr.
	for started := time.Now(); len(swrkBelow(cmd.Process.Pid, link)) == 0; time.Sleep(time.Millisecond) {
		if time.Since(started) > 10*time.Second {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("%s: runc %s ran no ctcr within 10 s", what, args[0])
		}
	}
	time.Sleep(delay)
	cmd.Process.Kill()
	cmd.Wait()
	deadline := time.Now().Add(60 * time.Second)
	for len(swrkOf(link)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s (runc killed %v into ctcr's %s): ctcr %v still runs 60 s on", what, delay, args[0], swrkOf(link))
		}
		time.Sleep(20 * time.Millisecond)
	}
	unix.Unmount(filepath.Join("/run/runc", c.id, "criu-root"), unix.MNT_DETACH)
}

// swrkBelow lists the children of process pid that run link.
func swrkBelow(pid int, link string) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, w := range strings.Fields(string(b)) {
			kid, err := strconv.Atoi(w)
			if err != nil {
				continue
			}
			if cl, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", kid)); err == nil && strings.HasPrefix(string(cl), link+"\x00") {
				out = append(out, kid)
			}
		}
	}
	return out
}

// swrkOf returns the PIDs of live processes running link (ctcr as
// criu) as their first argument.
func swrkOf(link string) []int {
	return liveProcs(func(pid int) bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		return err == nil && strings.HasPrefix(string(b), link+"\x00")
	})
}

// liveProcs lists the processes that match and are not zombies.
func liveProcs(match func(pid int) bool) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !match(pid) {
			continue
		}
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err != nil || strings.Contains(string(st), ") Z ") {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// assertUntraced checks that every task of the container (its init
// and all below it, every thread) is neither traced nor stopped, and
// none runs ctcr's code.
func (c *runcContainer) assertUntraced(t *testing.T, what string) {
	t.Helper()
	st, err := c.state()
	if err != nil || st.Pid <= 0 {
		t.Fatalf("%s: container %s: %v (init %d)", what, c.id, err, st.Pid)
	}
	for _, pid := range append([]int{st.Pid}, descendantsOf(st.Pid)...) {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && exe == ctcrBin {
			t.Errorf("%s: task %d of the container runs ctcr's code", what, pid)
		}
		tids, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, e := range tids {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, e.Name()))
			if err != nil {
				continue // gone meanwhile
			}
			s := string(b)
			if !strings.Contains(s, "\nTracerPid:\t0\n") || strings.Contains(s, "\nState:\tT") || strings.Contains(s, "\nState:\tt") {
				t.Errorf("%s: task %d thread %s is left traced or stopped:\n%s", what, pid, e.Name(), s)
			}
		}
	}
}

// TestKillRuncDuringCriuRestore: runc is killed with SIGKILL at spread
// moments of its `restore -d` through ctcr (criu swrk). ctcr must see its
// peer gone and leave nothing: no task of the container is left, unless
// runc had taken the restored container over before it died (it answers
// post-restore by saving the container's state, so `runc state` knows
// it), and then every task runs its own code, untraced and not stopped,
// and counts on. No ctcr is left behind either way. killPoints trials
// (6, 30 under CTCR_STRESS).
func TestKillRuncDuringCriuRestore(t *testing.T) {
	link := criuLink(t)
	trials := killPoints()
	c := newContainer(t, "criurpc-rkill", nil)
	c.start()
	img := filepath.Join(c.bundle, "img")
	c.criuRunc(t, link, "checkpoint", "--image-path", img, "--work-path", filepath.Join(c.bundle, "work"), c.id)
	// One whole restore sets the span the kills are spread over.
	span := c.criuRunc(t, link, "restore", "-d", "--image-path", img, "--work-path", filepath.Join(c.bundle, "work-r"), c.id)
	c.notePid()
	t.Logf("a whole runc restore -d through ctcr: %v", span)
	if st, err := c.state(); err != nil || !slices.Contains(tasksOf(c.id), st.Pid) {
		t.Fatalf("the restored container's init (%v) is not among the tasks of its cgroup, %v", err, tasksOf(c.id))
	}
	c.assertCounting(t, "after the timed restore")
	if out, err := c.cmd(10*time.Second, "", "delete", "-f", c.id); err != nil {
		t.Fatalf("runc delete -f: %v: %s", err, out)
	}
	waitNoTasksOf(t, c.id, 10*time.Second)
	interrupted, finished := 0, 0
	for i := range trials {
		work := filepath.Join(c.bundle, fmt.Sprintf("work%d", i))
		delay := time.Duration((float64(i) + rand.Float64()) * float64(span) / float64(trials))
		what := fmt.Sprintf("trial %d (runc killed %v into ctcr's restore)", i, delay)
		c.killRuncInCriu(t, link, delay, what, "restore", "-d", "--image-path", img, "--work-path", work, c.id)
		if len(tasksOf(c.id)) == 0 {
			interrupted++
		} else {
			// Left running: runc must have taken it over.
			if st := c.status(); st != "running" {
				log, _ := os.ReadFile(filepath.Join(work, "restore.log"))
				t.Fatalf("%s: tasks %v of the container are left, which runc does not know (%q); restore.log:\n%s", what, tasksOf(c.id), st, log)
			}
			finished++
			c.notePid()
			c.assertUntraced(t, what)
			c.assertCounting(t, what)
			t.Logf("%s: the restore finished first", what)
		}
		// Whatever runc knows of the container goes, and the state
		// directory the killed runc left.
		c.cmd(10*time.Second, "", "delete", "-f", c.id)
		waitNoTasksOf(t, c.id, 10*time.Second)
		os.RemoveAll(filepath.Join("/run/runc", c.id))
	}
	t.Logf("%d trials: %d interrupted, %d finished before the kill", trials, interrupted, finished)
	if interrupted == 0 {
		t.Errorf("no kill landed inside a restore")
	}
}

// tasksOf lists the live (not zombie) processes of container id: in its
// cgroup (runc's default, /ID in every hierarchy), or running ctcr's
// code (a restore's puppet, not yet turned into a task of the tree).
func tasksOf(id string) []int {
	return liveProcs(func(pid int) bool {
		cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		return err == nil && (strings.Contains(string(cg), "/"+id+"\n") || exe == ctcrBin)
	})
}

// waitNoTasksOf waits until container id has no live task (tasksOf),
// killing what is left after a second; it fails the test at timeout.
func waitNoTasksOf(t *testing.T, id string, timeout time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		left := tasksOf(id)
		if len(left) == 0 {
			return
		}
		if time.Since(start) > timeout {
			t.Fatalf("tasks %v of container %s still live %v on", left, id, timeout)
		}
		if time.Since(start) > time.Second {
			for _, p := range left {
				unix.Kill(p, unix.SIGKILL)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}
