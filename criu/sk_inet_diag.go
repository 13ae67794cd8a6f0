package criu

import (
	"encoding/binary"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/kernel"
)

// inetShutdown returns the shutdown state (sk_shutdown: RCV_SHUTDOWN 1,
// SEND_SHUTDOWN 2) of the UDP or UDP-Lite socket with inode ino in task
// pid's network namespace, which no socket option reports: sock_diag's
// INET_DIAG_SHUTDOWN does. found is false if sock_diag does not list the
// socket: it lists only sockets in the protocol's hash table, so not a
// UDP socket that was never bound nor connected.
func inetShutdown(pid, family, protocol int, ino uint32) (how uint8, found bool, err error) {
	req := make([]byte, kernel.SizeofInetDiagReqV2)
	req[0], req[1] = byte(family), byte(protocol)
	binary.LittleEndian.PutUint32(req[4:], 0xffffffff) // every state
	// No cookie: sockid.cookie is INET_DIAG_NOCOOKIE.
	binary.LittleEndian.PutUint32(req[48:], 0xffffffff)
	binary.LittleEndian.PutUint32(req[52:], 0xffffffff)
	err = sockDiag(pid, req, func(b []byte) error {
		if found || len(b) < kernel.SizeofInetDiagMsg || binary.LittleEndian.Uint32(b[kernel.InetDiagMsgInodeOffset:]) != ino {
			return nil
		}
		found = true
		for a := b[kernel.SizeofInetDiagMsg:]; len(a) >= unix.SizeofRtAttr; {
			l := int(binary.LittleEndian.Uint16(a))
			if l < unix.SizeofRtAttr || l > len(a) {
				break
			}
			if binary.LittleEndian.Uint16(a[2:]) == kernel.INET_DIAG_SHUTDOWN && l > unix.SizeofRtAttr {
				how = a[unix.SizeofRtAttr]
			}
			l = (l + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1)
			if l > len(a) {
				break
			}
			a = a[l:]
		}
		return nil
	})
	return how, found, err
}
