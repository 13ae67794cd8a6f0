package test

import "testing"

// TestUnixPeerCred: the peer credentials (SO_PEERCRED) of unix sockets
// the restore connects come back as the kernel had recorded them, not
// ctcr's: a stream and a datagram socketpair, a stream listener on a
// path and a seqpacket one on an abstract name, connections accepted
// from them and connections still in their backlog, made by a child
// whose effective uid and gid were 1000 when it connected, and a
// socketpair that child made and passed to its parent. Unpaired
// datagram sockets keep reporting no peer (pid 0). The workload
// compares each socket with what it read before the dump and with the
// pids of its processes; a client connecting after restore copies the
// listener's credentials, the parent's.
func TestUnixPeerCred(t *testing.T) {
	dumpRestoreWorkload(t, "peercred")
}
