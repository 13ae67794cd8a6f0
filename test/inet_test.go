package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
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
		dumpRestoreWorkload(t, "inet")
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
		if r.code() != 1 || !strings.Contains(r.stderr(), "to be accepted") || !strings.Contains(r.stderr(), "outside the dumped tree") || !strings.Contains(r.stderr(), fmt.Sprintf("127.0.0.1:%d", port)) {
			t.Fatalf("%s: exit status %d, stderr %q; want 1 and a message naming the listener and its waiting connection", r, r.code(), r.stderr())
		}
		if err := assertRunnable(w.pid); err != nil {
			t.Fatalf("after the refused dump: %v", err)
		}
	})
	t.Run("a connection from a client outside the tree moves with --tcp-established", func(t *testing.T) {
		needCtcr(t)
		w := launchWorkload(t, "inet", "ext")
		var port int
		for end := time.Now().Add(30 * time.Second); port == 0; time.Sleep(10 * time.Millisecond) {
			port, _ = strconv.Atoi(strings.TrimSpace(w.read("port")))
			if time.Now().After(end) {
				t.Fatalf("the workload wrote no port in 30 s%s", w.report())
			}
		}
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write([]byte("hello")); err != nil {
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
		r = runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img, "--tcp-established")
		if r.code() != 0 {
			t.Fatalf("%s: exit status %d; stderr: %s%s", r, r.code(), r.stderr(), w.report())
		}
		if _, err := w.waitOriginal(10 * time.Second); err != nil {
			t.Fatalf("after a dump without --leave-running: %v", err)
		}
		table := lockTable(t, img)
		if !nftTableExists(t, table) {
			t.Errorf("after the dump there is no nftables table %s holding the connection", table)
		}
		// Sent while the server is away: held by the lock, then
		// retransmitted to the restored end.
		if _, err := conn.Write([]byte("during")); err != nil {
			t.Fatalf("write to the dumped server: %v (a reset would mean the lock failed)", err)
		}
		time.Sleep(300 * time.Millisecond)
		restoreForeground(t, w, img, scenario{}, nil)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 16)
		n, err := io.ReadAtLeast(conn, buf, 10)
		if err != nil || string(buf[:n]) != "got during" {
			t.Errorf("the client read %q (%v), want \"got during\" from the restored server", buf[:n], err)
		}
		if nftTableExists(t, table) {
			t.Errorf("after the restore the nftables table %s is still there", table)
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

// lockTable returns the nftables table a checkpoint's netlock.json names.
func lockTable(t *testing.T, img string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(img, "netlock.json"))
	if err != nil {
		t.Fatalf("the checkpoint names no lock table: %v", err)
	}
	var v struct {
		Table string `json:"table"`
	}
	if err := json.Unmarshal(b, &v); err != nil || v.Table == "" {
		t.Fatalf("netlock.json %q: %v", b, err)
	}
	return v.Table
}

// nftTableExists reports whether ctcr's own network namespace has an
// inet nftables table of that name.
func nftTableExists(t *testing.T, name string) bool {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatalf("list nftables tables: %v", err)
	}
	for _, tb := range tables {
		if tb.Name == name {
			return true
		}
	}
	return false
}
