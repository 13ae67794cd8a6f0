package test

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestInetSockets dumps the inet workload (TCP listeners over IPv4 and
// IPv6, a TCP socket with keepalive options, a pair of UDP sockets one
// connected to the other), restores it and expects every address, port
// and option back, listeners that accept and UDP sockets that carry
// datagrams. An established connection with both ends in the tree moves
// with TCP repair, its queues and all; --tcp-close restores it as ended
// instead.
func TestInetSockets(t *testing.T) {
	t.Run("listeners, unconnected TCP and UDP sockets keep their addresses and options", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "inet")
		img := filepath.Join(t.TempDir(), "img")
		dump(t, w, img, false, 0)
		restoreForeground(t, w, img, scenario{}, nil)
		if !t.Failed() {
			decodeWithCrit(t, img)
		}
	})
	t.Run("an established connection with both ends in the tree moves with its queues", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "inet", "conn")
		img := filepath.Join(t.TempDir(), "img")
		dump(t, w, img, false, 0)
		if streams, _ := filepath.Glob(filepath.Join(img, "tcp-stream-*.img")); len(streams) != 2 {
			t.Errorf("the checkpoint has %d tcp-stream images, want 2 (both ends)", len(streams))
		}
		restoreForeground(t, w, img, scenario{}, nil)
		if !t.Failed() {
			decodeWithCrit(t, img)
		}
	})
	t.Run("with --leave-running the connection goes on where it was", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "inet", "conn")
		img := filepath.Join(t.TempDir(), "img")
		r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img, "--leave-running")
		if r.code() != 0 {
			t.Fatalf("%s: exit status %d; stderr: %s%s", r, r.code(), r.stderr(), w.report())
		}
		w.checkPasses(30*time.Second, "inet conn after dump --leave-running")
	})
	t.Run("a connection from outside the tree, waiting to be accepted, is refused by name", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "inet")
		var port int
		for _, line := range strings.Split(w.read("ready"), "\n") {
			if v, ok := strings.CutPrefix(line, "p4 "); ok {
				port, _ = strconv.Atoi(v)
			}
		}
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("dial the workload's listener on port %d: %v", port, err)
		}
		defer conn.Close()
		img := filepath.Join(t.TempDir(), "img")
		r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img)
		if r.code() != 1 || !strings.Contains(r.stderr(), "wait to be accepted") || !strings.Contains(r.stderr(), fmt.Sprintf("127.0.0.1:%d", port)) {
			t.Fatalf("%s: exit status %d, stderr %q; want 1 and a message naming the listener and its waiting connection", r, r.code(), r.stderr())
		}
		if err := assertRunnable(w.pid); err != nil {
			t.Fatalf("after the refused dump: %v", err)
		}
	})
	t.Run("with --tcp-close a connection comes back ended", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "inet", "ended")
		img := filepath.Join(t.TempDir(), "img")
		r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img, "--tcp-close")
		if r.code() != 0 {
			t.Fatalf("%s: exit status %d; stderr: %s%s", r, r.code(), r.stderr(), w.report())
		}
		if !strings.Contains(r.stderr(), "warning:") || !strings.Contains(r.stderr(), "ended") {
			t.Errorf("%s: stderr %q, want a warning that the connection comes back ended", r, r.stderr())
		}
		if _, err := w.waitOriginal(10 * time.Second); err != nil {
			t.Fatalf("after a dump without --leave-running: %v", err)
		}
		restoreForeground(t, w, img, scenario{}, nil)
	})
	for _, mode := range []string{"plain", "conn"} {
		t.Run("the inet workload passes when it is never dumped: "+mode, func(t *testing.T) {
			w := startWorkload(t, "inet", mode)
			w.checkPasses(30*time.Second, fmt.Sprintf("inet %s", mode))
		})
	}
}
