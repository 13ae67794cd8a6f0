package test

import (
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestSeqpacketShutdown dumps a SOCK_SEQPACKET socketpair whose writer
// shut down, with messages (one of them empty) still queued. Past the
// last message a peek answers 0 for ever rather than EAGAIN: a dump that
// waited for EAGAIN never returned. The dump must end within 30 s, and
// the restored pair read every message, then end of file.
func TestSeqpacketShutdown(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "seqpacket")
	img := filepath.Join(t.TempDir(), "img")
	r := runCtcr(t, 30*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d, want 0; stderr: %s%s", r, r.code(), r.stderr(), w.report())
	}
	if _, err := w.waitOriginal(10 * time.Second); err != nil {
		t.Fatalf("after a dump without --leave-running: %v", err)
	}
	restoreForeground(t, w, img, scenario{}, nil)
	if !t.Failed() {
		decodeWithCrit(t, img)
	}
}

// TestSocketOptions dumps sockets whose options restore must set again:
// two TCP listeners and two UDP sockets sharing a port with SO_REUSEPORT
// (the second of each pair binds only if it has SO_REUSEPORT before
// bind), IP-level options of IPv4 and IPv6 sockets (IP_TOS, IP_TTL,
// IP_FREEBIND, IPV6_TCLASS, ...) and SO_PASSSEC. The workload checks
// every value after restore.
func TestSocketOptions(t *testing.T) {
	dumpRestoreWorkload(t, "sockopts")
}
