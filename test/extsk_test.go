package test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// extServer is the test's side of the extsk workload's sockets: a bound
// datagram socket and a listening stream socket, both outside the
// dumped tree.
type extServer struct {
	dgramPath, streamPath string
	dgram, listener       int
}

func newExtServer(t *testing.T) *extServer {
	t.Helper()
	dir := t.TempDir()
	s := &extServer{dgramPath: filepath.Join(dir, "srv.dgram"), streamPath: filepath.Join(dir, "srv.stream")}
	var err error
	if s.dgram, err = unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s.dgram) })
	if err := unix.Bind(s.dgram, &unix.SockaddrUnix{Name: s.dgramPath}); err != nil {
		t.Fatal(err)
	}
	if s.listener, err = unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s.listener) })
	if err := unix.Bind(s.listener, &unix.SockaddrUnix{Name: s.streamPath}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(s.listener, 8); err != nil {
		t.Fatal(err)
	}
	for _, fd := range []int{s.dgram, s.listener} {
		setRecvTimeout(t, fd, 10*time.Second)
	}
	return s
}

func setRecvTimeout(t *testing.T, fd int, d time.Duration) {
	t.Helper()
	tv := unix.NsecToTimeval(d.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
}

// recvDgram receives one datagram (10 s at most) and its sender's name.
func (s *extServer) recvDgram(t *testing.T) (string, string) {
	t.Helper()
	buf := make([]byte, 256)
	// A socket with a receive timeout is not restarted after a signal
	// (Go's preemption sends SIGURG): try again.
	n, from, err := unix.Recvfrom(s.dgram, buf, 0)
	for err == unix.EINTR {
		n, from, err = unix.Recvfrom(s.dgram, buf, 0)
	}
	if err != nil {
		t.Fatalf("receive on %s: %v", s.dgramPath, err)
	}
	name := ""
	if a, ok := from.(*unix.SockaddrUnix); ok {
		name = a.Name
	}
	return string(buf[:n]), name
}

// acceptRead accepts one connection and reads what arrives on it until
// EOF, 10 s of silence, or a whole message. With keep the connection
// stays open until the test ends.
func (s *extServer) acceptRead(t *testing.T, keep bool) string {
	t.Helper()
	fd, _, err := unix.Accept4(s.listener, unix.SOCK_CLOEXEC)
	for err == unix.EINTR {
		fd, _, err = unix.Accept4(s.listener, unix.SOCK_CLOEXEC)
	}
	if err != nil {
		t.Errorf("accept on %s: %v", s.streamPath, err)
		return ""
	}
	if keep {
		t.Cleanup(func() { unix.Close(fd) })
	} else {
		defer unix.Close(fd)
	}
	setRecvTimeout(t, fd, 10*time.Second)
	var got []byte
	buf := make([]byte, 256)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if n <= 0 || err != nil {
			return string(got)
		}
		got = append(got, buf[:n]...)
		if strings.HasSuffix(string(got), "-after") || string(got) == "stream-before" {
			return string(got)
		}
	}
}

func sockInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestExternalUnixSockets checkpoints a task whose unix sockets are
// connected to sockets of this test, outside the dumped tree: a datagram
// socket connected to the test's bound one (with a datagram from it still
// queued), a stream connection the test accepted, and one still waiting
// in the test's listener's backlog. Without --ext-unix-sk the dump must
// fail, naming the task, fd, inode and peer; with it the dump works, a
// restore without it fails, and a restore with it reconnects each socket
// to its peer's path: after restore the workload reads the queued
// datagram and sends on every socket, and the test receives each message
// from the restored task.
func TestExternalUnixSockets(t *testing.T) {
	needCtcr(t)
	srv := newExtServer(t)
	w := startWorkload(t, "extsk", srv.dgramPath, srv.streamPath)
	if msg, from := srv.recvDgram(t); msg != "dgram-before" || from != w.path("wl.sock") {
		t.Fatalf("before the dump: datagram %q from %q, want dgram-before from %s", msg, from, w.path("wl.sock"))
	}
	// The accepted connection stays open: the workload's socket is
	// connected to it when dumped.
	if got := srv.acceptRead(t, true); got != "stream-before" {
		t.Fatalf("before the dump: the first connection sent %q, want stream-before", got)
	}
	if err := unix.Sendto(srv.dgram, []byte("queued-before-dump"), 0, &unix.SockaddrUnix{Name: w.path("wl.sock")}); err != nil {
		t.Fatalf("queue a datagram for the workload: %v", err)
	}
	dgFd, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(strings.TrimPrefix(w.read("ready"), "dgram "), "\n", 2)[0]))
	if err != nil {
		t.Fatalf("ready %q: %v", w.read("ready"), err)
	}

	t.Run("a dump without --ext-unix-sk fails and names the task, fd, inode and peer", func(t *testing.T) {
		wlIno := sockInode(t, fmt.Sprintf("/proc/%d/fd/%d", w.pid, dgFd))
		var st unix.Stat_t
		if err := unix.Fstat(srv.dgram, &st); err != nil {
			t.Fatal(err)
		}
		img := filepath.Join(t.TempDir(), "img")
		r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img)
		if r.code() != 1 {
			t.Fatalf("%s: exit status %d, want 1; stderr: %s", r, r.code(), r.stderr())
		}
		msg := r.stderr()
		for _, want := range []string{
			fmt.Sprintf("task %d fd %d", w.pid, dgFd), fmt.Sprintf("unix socket %d", wlIno),
			fmt.Sprintf("socket %d", st.Ino), srv.dgramPath, "outside the dumped tree", "--ext-unix-sk",
		} {
			if !strings.Contains(msg, want) {
				t.Errorf("stderr %q does not say %q", msg, want)
			}
		}
		if !exists(w.pid) {
			t.Fatalf("the task did not survive the failed dump")
		}
		if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
			t.Errorf("a failed dump left a checkpoint in %s", img)
		}
	})
	if t.Failed() {
		return
	}

	img := filepath.Join(t.TempDir(), "img")
	logFile := filepath.Join(t.TempDir(), "dump.log")
	w.logs = append(w.logs, logFile)
	r := runCtcr(t, 120*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img, "--ext-unix-sk", "-v", "--log-file", logFile)
	w.logs = append(w.logs, r.errP)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d, want 0; stderr: %s%s", r, r.code(), r.stderr(), w.report())
	}
	if _, err := w.waitOriginal(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	decodeWithCrit(t, img)

	t.Run("a restore without --ext-unix-sk fails and leaves no process", func(t *testing.T) {
		r := runCtcr(t, 60*time.Second, "restore", "-D", img)
		if r.code() != 1 {
			t.Fatalf("%s: exit status %d, want 1; stderr: %s", r, r.code(), r.stderr())
		}
		if msg := r.stderr(); !strings.Contains(msg, "--ext-unix-sk") || !strings.Contains(msg, srv.dgramPath) {
			t.Errorf("stderr %q should name the external peer %s and --ext-unix-sk", msg, srv.dgramPath)
		}
		if exists(w.pid) {
			t.Errorf("a failed restore left PID %d behind: %s", w.pid, describe(w.pid))
		}
	})
	if t.Failed() {
		return
	}

	rr := startCtcr(t, "restore", "-D", img, "--ext-unix-sk")
	w.logs = append(w.logs, rr.errP)
	deadline := time.Now().Add(60 * time.Second)
	for !exists(w.pid) && !rr.exited() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	w.requestCheck()
	if msg, from := srv.recvDgram(t); msg != "dgram-after" || from != w.path("wl.sock") {
		t.Errorf("after restore: datagram %q from %q, want dgram-after from %s", msg, from, w.path("wl.sock"))
	}
	// The listener's backlog holds the connection the dumped task left
	// pending (its client is gone: it reads as EOF) and the two the
	// restored task made again.
	var got []string
	for i := 0; i < 3 && len(got) < 2; i++ {
		if m := srv.acceptRead(t, false); m != "" {
			got = append(got, m)
		}
	}
	sort.Strings(got)
	if strings.Join(got, " ") != "accepted-after pending-after" {
		t.Errorf("after restore the stream connections sent %q, want accepted-after and pending-after", got)
	}
	if err := rr.wait(60 * time.Second); err != nil {
		t.Fatalf("%v%s", err, w.report())
	}
	if rr.code() != 0 {
		t.Fatalf("%s: exit status %d, want 0 (the restored task's own status)%s", rr, rr.code(), w.report())
	}
	w.assertPassed()
}
