package ns

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/nsthread"
)

// A NETLINK_ROUTE socket acts on the network namespace it was made in,
// whichever thread later uses it: ctcr makes one per namespace (on a
// thread that entered it) and then reads and changes devices, addresses
// and routes of several namespaces from one goroutine.

// netlinkTimeout bounds every wait for the kernel's answer: the kernel
// answers at once, but a wait without a deadline is a hang if it does not.
const netlinkTimeout = 5 * time.Second

// rtnl is a NETLINK_ROUTE socket of one network namespace.
type rtnl struct {
	fd  int
	seq uint32
	buf []byte
}

// openRtnl makes a NETLINK_ROUTE socket in the calling thread's network
// namespace.
func openRtnl() (*rtnl, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	tv := unix.NsecToTimeval(netlinkTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink socket: receive timeout: %w", err)
	}
	// Dumps of a namespace with many routes come in large batches.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	return &rtnl{fd: fd, buf: make([]byte, 64<<10)}, nil
}

// rtnlOf makes a NETLINK_ROUTE socket in the network namespace of host
// task pid.
func rtnlOf(pid int) (*rtnl, error) {
	// nsthread.Join refuses ctcr's own namespace; a socket made here is
	// in it already (the host's end of a veth a dump refuses).
	if same, err := nsthread.Same(pid, "net"); err != nil {
		return nil, err
	} else if same {
		return openRtnl()
	}
	var s *rtnl
	err := inNamespace(pid, "net", unix.CLONE_NEWNET, func() error {
		var err error
		s, err = openRtnl()
		return err
	})
	return s, err
}

func (s *rtnl) close() { unix.Close(s.fd) }

// send sends one request of type typ with payload (the fixed header and
// its attributes) and returns its sequence number.
func (s *rtnl) send(typ, flags uint16, payload []byte) (uint32, error) {
	s.seq++
	h := syscall.NlMsghdr{Type: typ, Flags: flags | unix.NLM_F_REQUEST, Seq: s.seq}
	if err := unix.Sendto(s.fd, appendNlmsg(nil, h, payload), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, err
	}
	return s.seq, nil
}

// recv returns the next batch of messages that answer seq, skipping
// stale answers to earlier requests.
func (s *rtnl) recv(seq uint32) ([]syscall.NetlinkMessage, error) {
	for {
		n, _, err := unix.Recvfrom(s.fd, s.buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			return nil, fmt.Errorf("no answer from the kernel in %v: %w", netlinkTimeout, os.ErrDeadlineExceeded)
		}
		if err != nil {
			return nil, err
		}
		// A copy: the messages of a dump outlive the next read.
		msgs, err := syscall.ParseNetlinkMessage(bytes.Clone(s.buf[:n]))
		if err != nil {
			return nil, err
		}
		var out []syscall.NetlinkMessage
		for _, m := range msgs {
			if m.Header.Seq == seq {
				out = append(out, m)
			}
		}
		if len(out) > 0 {
			return out, nil
		}
	}
}

// errorOf returns the error an NLMSG_ERROR message carries (nil for an
// acknowledgement).
func errorOf(m syscall.NetlinkMessage) error {
	if len(m.Data) < 4 {
		return fmt.Errorf("truncated netlink error message")
	}
	if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
		return unix.Errno(-code)
	}
	return nil
}

// do sends a request that changes the namespace and waits for its
// acknowledgement.
func (s *rtnl) do(typ, flags uint16, payload []byte) error {
	seq, err := s.send(typ, flags|unix.NLM_F_ACK, payload)
	if err != nil {
		return err
	}
	for {
		msgs, err := s.recv(seq)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Type == unix.NLMSG_ERROR {
				return errorOf(m)
			}
		}
	}
}

// query sends a request that the kernel answers with one message of
// type want, and returns that message.
func (s *rtnl) query(typ uint16, payload []byte, want uint16) (syscall.NetlinkMessage, error) {
	seq, err := s.send(typ, 0, payload)
	if err != nil {
		return syscall.NetlinkMessage{}, err
	}
	for {
		msgs, err := s.recv(seq)
		if err != nil {
			return syscall.NetlinkMessage{}, err
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_ERROR:
				if err := errorOf(m); err != nil {
					return syscall.NetlinkMessage{}, err
				}
			case want:
				return m, nil
			}
		}
	}
}

// dump runs a NLM_F_DUMP request and returns every message of its
// answer but NLMSG_DONE.
func (s *rtnl) dump(typ uint16, payload []byte) ([]syscall.NetlinkMessage, error) {
	seq, err := s.send(typ, unix.NLM_F_DUMP, payload)
	if err != nil {
		return nil, err
	}
	var out []syscall.NetlinkMessage
	for {
		msgs, err := s.recv(seq)
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if err := errorOf(m); err != nil {
					return nil, err
				}
			default:
				out = append(out, m)
			}
		}
	}
}

// appendAttr appends one rtattr (length, type, value, padding).
func appendAttr(b []byte, typ uint16, val []byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(unix.SizeofRtAttr+len(val)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, val...)
	for len(b)%unix.RTA_ALIGNTO != 0 {
		b = append(b, 0)
	}
	return b
}

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// cstring is a NUL-terminated attribute value (IFLA_IFNAME, IFLA_INFO_KIND).
func cstring(s string) []byte { return append([]byte(s), 0) }

// parseAttrs splits a run of rtattrs, checking each length against b.
func parseAttrs(b []byte) (map[uint16][]byte, error) {
	out := map[uint16][]byte{}
	for len(b) >= unix.SizeofRtAttr {
		n := int(binary.NativeEndian.Uint16(b))
		if n < unix.SizeofRtAttr || n > len(b) {
			return nil, fmt.Errorf("netlink attribute of %d bytes in %d: %w", n, len(b), unix.EINVAL)
		}
		// NLA_F_NESTED and NLA_F_NET_BYTEORDER ride in the type's top bits.
		out[binary.NativeEndian.Uint16(b[2:])&0x3fff] = b[unix.SizeofRtAttr:n]
		a := (n + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1)
		if a > len(b) {
			break
		}
		b = b[a:]
	}
	return out, nil
}
