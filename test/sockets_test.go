package test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
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

// TestUDPShutdown: UDP sockets shut down for reading and both ways keep
// that state (sock_diag's INET_DIAG_SHUTDOWN at dump, shutdown(2) at
// restore); the workload sees it in poll.
func TestUDPShutdown(t *testing.T) {
	dumpRestoreWorkload(t, "udpshut")
}

// TestUDPLite: UDP-Lite sockets over IPv4 and IPv6 come back as UDP-Lite
// with their checksum coverages, and carry datagrams.
func TestUDPLite(t *testing.T) {
	dumpRestoreWorkload(t, "udplite")
}

// TestRawSockets: raw IPv4 and IPv6 sockets (ICMP with a type filter,
// IPPROTO_RAW, a connected one of another protocol, ICMPv6 with a
// filter) come back with their options, and the ICMP one gets the echo
// reply to what it sends.
func TestRawSockets(t *testing.T) {
	dumpRestoreWorkload(t, "rawsk")
}

// TestPingSockets: ICMP echo sockets (SOCK_DGRAM, IPPROTO_ICMP and
// IPPROTO_ICMPV6) keep their identifiers and connection, and get echo
// replies. net.ipv4.ping_group_range is widened to root's group for the
// test and put back after.
func TestPingSockets(t *testing.T) {
	const knob = "/proc/sys/net/ipv4/ping_group_range"
	old, err := os.ReadFile(knob)
	if err != nil {
		t.Skipf("no %s: %v", knob, err)
	}
	if err := os.WriteFile(knob, []byte("0 0"), 0); err != nil {
		t.Fatalf("widen %s: %v", knob, err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(knob, old, 0); err != nil {
			t.Errorf("put %s back to %q: %v", knob, strings.TrimSpace(string(old)), err)
		}
	})
	dumpRestoreWorkload(t, "ping")
}

// TestTCPHalfClosed: a connection shut down for writing on one end
// (FIN_WAIT2) and not yet read to its end on the other (CLOSE_WAIT)
// moves with repair mode: the receiving end reads what was queued, then
// the end of the stream; the other direction still carries bytes. The
// FIN each end counts is left out of the sequence numbers at restore and
// sent again (shutdown) once out of repair mode.
func TestTCPHalfClosed(t *testing.T) {
	dumpRestoreWorkload(t, "tcphalf")
}

// TestTCPReset: an accepted connection reset by its peer, with bytes it
// had not read, comes back ended: the bytes, then the end of the stream.
// Restored in repair mode, it binds beside its listener, which keeps
// accepting.
func TestTCPReset(t *testing.T) {
	dumpRestoreWorkload(t, "tcpreset")
}
