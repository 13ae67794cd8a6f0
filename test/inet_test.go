package test

import (
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
// datagrams. With an established connection the dump is refused by
// name, and --tcp-close restores the connection as ended.
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
	t.Run("an established connection is refused, and with --tcp-close comes back ended", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "inet", "conn")
		img := filepath.Join(t.TempDir(), "img")
		r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img)
		if r.code() != 1 || !strings.Contains(r.stderr(), "ESTABLISHED") || !strings.Contains(r.stderr(), "--tcp-close") {
			t.Fatalf("%s: exit status %d, stderr %q; want 1 and a message naming the connection and --tcp-close", r, r.code(), r.stderr())
		}
		if err := assertRunnable(w.pid); err != nil {
			t.Fatalf("after the refused dump: %v", err)
		}
		r = runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img, "--tcp-close")
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
	t.Run("the inet workload passes when it is never dumped", func(t *testing.T) {
		w := startWorkload(t, "inet")
		w.requestCheck()
		ps, err := w.waitOriginal(30 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if ps.ExitCode() != 0 {
			t.Errorf("inet: %v, want exit status 0%s", ps, w.report())
		}
		w.assertPassed()
	})
}
