package test

import (
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

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
// listener's credentials, the parent's. A listener made by a child that
// exited before the dump, and a connection waiting in its backlog,
// still name that child (a stand-in with its PID listens again).
func TestUnixPeerCred(t *testing.T) {
	dumpRestoreWorkload(t, "peercred", "exited")
}

// TestContainerUnixPeerCred runs the peercred workload in a runc
// container (its own PID and network namespaces and root; CAP_SETUID
// and CAP_SETGID for the child to become uid 1000): the sockets are
// built on a thread in the container's view while the calls are made
// in the restored tasks, pids are the container's, and the listener's
// path is reached from inside its root.
func TestContainerUnixPeerCred(t *testing.T) {
	bin := workloadBin(t, "peercred")
	script := "mkdir -p /data/wl; " + bin + " /data/wl > /data/wl/out 2>&1 &\n" + containerScript
	c := newContainer(t, "peercred", func(s *specs.Spec) {
		s.Process.Args = []string{"sh", "-c", script}
		if caps := s.Process.Capabilities; caps != nil {
			caps.Bounding = append(caps.Bounding, "CAP_SETUID", "CAP_SETGID")
			caps.Effective = append(caps.Effective, "CAP_SETUID", "CAP_SETGID")
			caps.Permitted = append(caps.Permitted, "CAP_SETUID", "CAP_SETGID")
		}
	})
	if err := c.installHostBinary(bin); err != nil {
		t.Fatalf("copy peercred into the rootfs: %v", err)
	}
	c.start()
	c.waitFileHolds(t, "/data/wl/ready", "child")
	dir := filepath.Join(t.TempDir(), "ck")
	checkpointContainer(t, c, dir)
	restoreContainer(t, c, dir)
	c.checkWorkload(t, "peercred after restore")
}
