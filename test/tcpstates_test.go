package test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// dumpWith dumps workload w into img with extra flags; the dump must
// succeed and kill the workload.
func dumpWith(t *testing.T, w *workload, img string, flags ...string) {
	t.Helper()
	logFile := filepath.Join(t.TempDir(), "dump.log")
	w.logs = append(w.logs, logFile)
	args := append([]string{"dump", "-t", strconv.Itoa(w.pid), "-D", img, "-v", "--log-file", logFile}, flags...)
	r := runCtcr(t, 120*time.Second, args...)
	w.logs = append(w.logs, r.errP)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d, want 0; stderr: %s%s", r, r.code(), r.stderr(), w.report())
	}
	if _, err := w.waitOriginal(10 * time.Second); err != nil {
		t.Fatalf("after a dump without --leave-running: %v", err)
	}
}

// TestTCPAcceptQueue: connections the kernel completed on a listener and
// the application has not accepted yet, their other ends in the tree
// (IPv4 and IPv6, one with its peer's FIN queued after the bytes), come
// back in the listener's accept queue, in order: accept() returns them
// with what they had received, and they carry bytes both ways. A dump
// with --leave-running refuses them (reading them takes them out of the
// queue) and leaves the workload as it was.
func TestTCPAcceptQueue(t *testing.T) {
	needCtcr(t)
	for _, flags := range [][]string{nil, {"--tcp-established"}} {
		t.Run(fmt.Sprintf("dump %s", strings.Join(flags, " ")), func(t *testing.T) {
			w := startWorkload(t, "tcpaccept")
			img := filepath.Join(t.TempDir(), "img")
			dumpWith(t, w, img, flags...)
			if _, err := os.Stat(filepath.Join(img, "tcp-accept-queue.json")); err != nil {
				t.Errorf("the checkpoint has no accept queue: %v", err)
			}
			restoreForeground(t, w, img, scenario{}, nil)
			if !t.Failed() {
				decodeWithCrit(t, img)
			}
		})
	}
	t.Run("--leave-running refuses the queue and changes nothing", func(t *testing.T) {
		w := startWorkload(t, "tcpaccept")
		img := filepath.Join(t.TempDir(), "img")
		r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img, "--leave-running")
		if r.code() != 1 || !strings.Contains(r.stderr(), "wait to be accepted") || !strings.Contains(r.stderr(), "--leave-running") {
			t.Fatalf("%s: exit status %d, stderr %q; want 1 and a message naming the listener and --leave-running", r, r.code(), r.stderr())
		}
		w.checkPasses(30*time.Second, "tcpaccept after the refused dump")
	})
	t.Run("the workload passes when it is never dumped", func(t *testing.T) {
		w := startWorkload(t, "tcpaccept")
		w.checkPasses(30*time.Second, "tcpaccept")
	})
}

// fullListener listens on 127.0.0.1 with a backlog of 0 and fills its
// accept queue with one connection: the kernel drops every further SYN
// (tcp_conn_request, sk_acceptq_is_full) until that one is accepted. It
// returns the listener's fd and port; accept frees the queue.
func fullListener(t *testing.T) (int, int, net.Conn) {
	t.Helper()
	l, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(l) })
	if err := unix.Bind(l, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(l, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(l)
	if err != nil {
		t.Fatal(err)
	}
	port := sa.(*unix.SockaddrInet4).Port
	filler, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { filler.Close() })
	return l, port, filler
}

// acceptWithin accepts one connection on listener l within d.
func acceptWithin(l int, d time.Duration) (int, error) {
	p := []unix.PollFd{{Fd: int32(l), Events: unix.POLLIN}}
	for end := time.Now().Add(d); ; {
		ms := int(time.Until(end) / time.Millisecond)
		if ms <= 0 {
			return -1, fmt.Errorf("no connection to accept in %v", d)
		}
		n, err := unix.Poll(p, ms)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return -1, err
		}
		if n == 1 {
			fd, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
			return fd, err
		}
	}
}

// TestTCPSynSent: a TCP socket connecting to a peer outside the tree
// that drops its SYNs (a listener with a full accept queue) is in
// SYN_SENT. A dump without --tcp-established refuses it by name; with
// it, the socket comes back connecting from the same port, sends its SYN
// again, and once the peer makes room the connection completes and
// carries bytes both ways.
func TestTCPSynSent(t *testing.T) {
	needCtcr(t)
	l, port, _ := fullListener(t)
	w := startWorkload(t, "tcpsynsent", strconv.Itoa(port))
	img := filepath.Join(t.TempDir(), "img")
	r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img)
	if r.code() != 1 || !strings.Contains(r.stderr(), "SYN_SENT") || !strings.Contains(r.stderr(), "--tcp-established") {
		t.Fatalf("%s: exit status %d, stderr %q; want 1 and a message naming the socket in SYN_SENT and --tcp-established", r, r.code(), r.stderr())
	}
	if err := assertRunnable(w.pid); err != nil {
		t.Fatalf("after the refused dump: %v", err)
	}
	dumpWith(t, w, img, "--tcp-established")
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			// The filler first: then the workload's SYN finds room.
			time.Sleep(500 * time.Millisecond)
			f, err := acceptWithin(l, 10*time.Second)
			if err != nil {
				return fmt.Errorf("accept the filler: %w", err)
			}
			unix.Close(f)
			c, err := acceptWithin(l, 20*time.Second)
			if err != nil {
				return fmt.Errorf("accept the restored workload's connection: %w", err)
			}
			defer unix.Close(c)
			sa, err := unix.Getpeername(c)
			if err != nil {
				return err
			}
			if want := w.read("ready"); !strings.Contains(want, fmt.Sprintf("local %d\n", sa.(*unix.SockaddrInet4).Port)) {
				return fmt.Errorf("the connection came from port %d; the workload's ready says %q", sa.(*unix.SockaddrInet4).Port, want)
			}
			tv := unix.Timeval{Sec: 10}
			unix.SetsockoptTimeval(c, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
			buf := make([]byte, 5)
			if n, err := unix.Read(c, buf); err != nil || string(buf[:n]) != "hello" {
				return fmt.Errorf("read %q (%v), want \"hello\"", buf[:max(n, 0)], err)
			}
			if _, err := unix.Write(c, []byte("world")); err != nil {
				return err
			}
			return nil
		}()
	}()
	restoreForeground(t, w, img, scenario{}, nil)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("the peer: %v", err)
		}
	case <-time.After(40 * time.Second):
		t.Errorf("the peer's side did not finish in 40 s")
	}
	if !t.Failed() {
		decodeWithCrit(t, img)
	}
}

// TestTCPStates: connections whose FIN waits behind bytes the peer has no
// room for, both ends in the tree, move with repair mode in each state
// such a FIN makes: FIN_WAIT1 (against ESTABLISHED), CLOSING (against
// FIN_WAIT2) and LAST_ACK (against FIN_WAIT2). The reader reads every
// byte, then the end of the stream; the states move on after restore.
func TestTCPStates(t *testing.T) {
	for _, mode := range []string{"fin1", "closing", "lastack"} {
		t.Run(mode, func(t *testing.T) {
			dumpRestoreWorkload(t, "tcpstates", mode)
		})
	}
}

// TestTCPPeerFIN: a connection whose peer outside the tree sent bytes and
// its FIN (the tree's end in CLOSE_WAIT) moves with --tcp-established:
// restore makes that FIN again from the peer's address (the peer will
// not send it again), so the restored end reads the bytes, then the end
// of the stream, and what it writes then reaches the peer, followed by
// its own FIN. Without --tcp-established the dump refuses it by name.
// Over IPv4 and IPv6 (the FIN is made with the IP header of each).
func TestTCPPeerFIN(t *testing.T) {
	needCtcr(t)
	for _, fam := range []struct{ name, arg, host string }{{"IPv4", "4", "127.0.0.1"}, {"IPv6", "6", "::1"}} {
		t.Run(fam.name, func(t *testing.T) { peerFIN(t, fam.arg, fam.host) })
	}
}

func peerFIN(t *testing.T, arg, host string) {
	w := launchWorkload(t, "tcpextfin", arg)
	var port int
	for end := time.Now().Add(30 * time.Second); port == 0; time.Sleep(10 * time.Millisecond) {
		port, _ = strconv.Atoi(strings.TrimSpace(w.read("port")))
		if time.Now().After(end) {
			t.Fatalf("the workload wrote no port in 30 s%s", w.report())
		}
	}
	conn, err := net.Dial("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	w.waitReady()
	img := filepath.Join(t.TempDir(), "img")
	r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img)
	if r.code() != 1 || !strings.Contains(r.stderr(), "outside the dumped tree") || !strings.Contains(r.stderr(), "--tcp-established") {
		t.Fatalf("%s: exit status %d, stderr %q; want 1 and a message naming the connection and --tcp-established", r, r.code(), r.stderr())
	}
	if err := assertRunnable(w.pid); err != nil {
		t.Fatalf("after the refused dump: %v", err)
	}
	dumpWith(t, w, img, "--tcp-established")
	restoreForeground(t, w, img, scenario{}, nil)
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != "bye" {
		t.Errorf("the peer read %q (%v), want \"bye\" then the end of the stream", got, err)
	}
	if !t.Failed() {
		decodeWithCrit(t, img)
	}
}
