package criu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/kernel"
	"github.com/ctcr/ctcr/criu/nsthread"
)

// A connection whose other end, outside the tree, had sent its FIN
// (CLOSE_WAIT, LAST_ACK, CLOSING) cannot have it sent again by that end:
// the peer had it acknowledged. As CRIU's soccr does, restore makes the
// FIN itself: a segment from the peer's address and port, FIN and ACK,
// with the sequence number the FIN had (one before the receive sequence
// dumped) and acknowledging what the socket has sent, written with a raw
// socket of the tree's network namespace to the socket's own address.
// It goes once the lock table is gone (the lock would drop it) and the
// socket is out of repair mode: the socket takes it as the FIN it had,
// and answers it with an ACK the peer takes as a duplicate. An end that
// had sent its own FIN after (LAST_ACK) shuts down only then, so that
// its state comes back through the same transitions.

// tcpPeerInImages reports whether the checkpoint holds the other end of
// the connection src -> dst: an inet socket with these addresses swapped.
func tcpPeerInImages(r *fileRestore, src, dst unix.Sockaddr) bool {
	ends, ok := r.state["tcp ends"].(map[string]bool)
	if !ok {
		ends = map[string]bool{}
		for _, e := range r.cp.files {
			isk := e.GetIsk()
			if isk == nil || isk.GetType() != unix.SOCK_STREAM || isk.GetDstPort() == 0 {
				continue
			}
			s, err1 := inetSockaddr(isk.GetFamily(), isk.GetSrcAddr(), isk.GetSrcPort())
			d, err2 := inetSockaddr(isk.GetFamily(), isk.GetDstAddr(), isk.GetDstPort())
			if err1 == nil && err2 == nil {
				ends[tcpEnd(s, d)] = true
			}
		}
		r.state["tcp ends"] = ends
	}
	return ends[tcpEnd(dst, src)]
}

// sendPeerFIN makes the FIN the peer dst had sent to fd (bound to src):
// seq is the FIN's sequence number, ack what it acknowledges. It waits
// (bounded) until fd has taken it.
func sendPeerFIN(r *fileRestore, fd int, src, dst unix.Sockaddr, seq, ack, win uint32) error {
	src, dst = unmap(src), unmap(dst)
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], uint16(sockPort(dst)))
	binary.BigEndian.PutUint16(tcp[2:], uint16(sockPort(src)))
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = 5 << 4      // data offset: no options
	tcp[13] = 0x01 | 0x10 // FIN, ACK
	if win > 0xffff || win == 0 {
		win = 0xffff
	}
	binary.BigEndian.PutUint16(tcp[14:], uint16(win))
	var pkt []byte
	var to unix.Sockaddr
	family := unix.AF_INET
	switch s := src.(type) {
	case *unix.SockaddrInet4:
		d, ok := dst.(*unix.SockaddrInet4)
		if !ok {
			return fmt.Errorf("peer %s of another family", sockaddrString(dst))
		}
		pseudo := append(append(append([]byte{}, d.Addr[:]...), s.Addr[:]...), 0, unix.IPPROTO_TCP, 0, 20)
		binary.BigEndian.PutUint16(tcp[16:], inetChecksum(append(pseudo, tcp...)))
		ip := make([]byte, 20)
		ip[0] = 4<<4 | 5
		binary.BigEndian.PutUint16(ip[2:], 40)
		ip[8], ip[9] = 64, unix.IPPROTO_TCP
		copy(ip[12:], d.Addr[:])
		copy(ip[16:], s.Addr[:])
		binary.BigEndian.PutUint16(ip[10:], inetChecksum(ip))
		pkt = append(ip, tcp...)
		to = &unix.SockaddrInet4{Addr: s.Addr}
	case *unix.SockaddrInet6:
		d, ok := dst.(*unix.SockaddrInet6)
		if !ok {
			return fmt.Errorf("peer %s of another family", sockaddrString(dst))
		}
		family = unix.AF_INET6
		pseudo := append(append(append([]byte{}, d.Addr[:]...), s.Addr[:]...), 0, 0, 0, 20, 0, 0, 0, unix.IPPROTO_TCP)
		binary.BigEndian.PutUint16(tcp[16:], inetChecksum(append(pseudo, tcp...)))
		ip := make([]byte, 40)
		ip[0] = 6 << 4
		binary.BigEndian.PutUint16(ip[4:], 20)
		ip[6], ip[7] = unix.IPPROTO_TCP, 64
		copy(ip[8:], d.Addr[:])
		copy(ip[24:], s.Addr[:])
		pkt = append(ip, tcp...)
		to = &unix.SockaddrInet6{Addr: s.Addr}
	default:
		return fmt.Errorf("address %s", sockaddrString(src))
	}
	raw := -1
	mk := func() error {
		var err error
		raw, err = unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		if family == unix.AF_INET6 {
			if err := unix.SetsockoptInt(raw, unix.IPPROTO_IPV6, unix.IPV6_HDRINCL, 1); err != nil {
				return fmt.Errorf("IPV6_HDRINCL: %w", err)
			}
		}
		return nil
	}
	same, err := nsthread.Same(r.rootPid, "net")
	if err == nil {
		if same {
			err = mk()
		} else {
			err = nsthread.Run(func() error { return nsthread.Join(r.rootPid, "net", unix.CLONE_NEWNET) }, mk)
		}
	}
	if raw >= 0 {
		defer unix.Close(raw)
	}
	if err != nil {
		return err
	}
	if err := unix.Sendto(raw, pkt, 0, to); err != nil {
		return fmt.Errorf("send the FIN: %w", err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return fmt.Errorf("TCP_INFO: %w", err)
		}
		if info.State != tcpEstablished && info.State != kernel.TCP_FIN_WAIT1 && info.State != kernel.TCP_FIN_WAIT2 {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the FIN made was not taken in 5 s")
		}
	}
}

// inetChecksum is the Internet checksum (RFC 1071) of b.
func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
