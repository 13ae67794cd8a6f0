package ns

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/netdev"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
)

// The network namespace: ctcr keeps its loopback device, the one
// interface a new namespace has, and the veth pairs that join it to
// the tree's other namespaces (netdev.go). Other interfaces of a
// container's are the runtime's business (CNI, runc's config).
//
//	netdev-1.img   CRIU's NETDEV image: one NetDeviceEntry per device
//	               (type LOOPBACK or VETH, ifindex, MTU, IFF_* flags,
//	               name, and a veth's MAC address and peer)
//	ifaddr-1.img   CRIU's IFADDR image, raw as CRIU writes it with
//	               `ip addr save`: iproute2's magic, then those devices'
//	               RTM_NEWADDR messages as the kernel dumped them
//
//	ifaddr-1.img:  +-----------+-----------------+-----------------+--
//	               | 0x47361222| nlmsghdr ifaddr | nlmsghdr ifaddr | ...
//	               | (host end)| msg + rtattrs   | msg + rtattrs   |
//	               +-----------+-----------------+-----------------+--
//
// The addresses stay netlink messages rather than a protobuf of ctcr's
// own: CRIU has no protobuf for them, this is the file CRIU writes and
// reads, `ip addr showdump` prints it and `ip addr restore` applies it,
// and every attribute the kernel reported (flags, lifetimes, label,
// broadcast) goes back as it was.
const (
	netNsID       = 1
	ifaddrImage   = "ifaddr-1.img"
	ifaddrMagic   = 0x47361222 // iproute2's ipadd_dump_magic
	maxIfaddrFile = 1 << 20
)

// DumpNet records the devices of pid's network namespace, the tree's
// own, their addresses and routes (netdev.go): lo, and the veth pairs
// whose other end is in the tree's nested namespaces. Other devices,
// which the runtime made (CNI's eth0), are left out.
func DumpNet(pid int, stage *images.Staging) error {
	spaces, err := netSpaces(pid, treePidList(pid), true)
	if err != nil {
		return err
	}
	return dumpNetNS(pid, stage, netNsID, spaces, false)
}

// ifaddrFile names the addresses image of network namespace id.
func ifaddrFile(id int) string { return fmt.Sprintf("ifaddr-%d.img", id) }

// loopbackDevice describes lo of the calling thread's namespace.
func loopbackDevice() (*netdev.NetDeviceEntry, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("loopback: %w", err)
	}
	defer unix.Close(fd)
	get := func(req uint, what string) (*unix.Ifreq, error) {
		ifr, err := unix.NewIfreq("lo")
		if err != nil {
			return nil, err
		}
		if err := unix.IoctlIfreq(fd, req, ifr); err != nil {
			return nil, fmt.Errorf("loopback %s: %w", what, err)
		}
		return ifr, nil
	}
	idx, err := get(unix.SIOCGIFINDEX, "index")
	if err != nil {
		return nil, err
	}
	flags, err := get(unix.SIOCGIFFLAGS, "flags")
	if err != nil {
		return nil, err
	}
	mtu, err := get(unix.SIOCGIFMTU, "MTU")
	if err != nil {
		return nil, err
	}
	return &netdev.NetDeviceEntry{
		Type: netdev.NdType_LOOPBACK.Enum(), Ifindex: proto.Uint32(idx.Uint32()), Mtu: proto.Uint32(mtu.Uint32()),
		Flags: proto.Uint32(uint32(flags.Uint16())), Name: proto.String("lo"),
	}, nil
}

func appendNlmsg(out []byte, h syscall.NlMsghdr, data []byte) []byte {
	h.Len = uint32(unix.SizeofNlMsghdr + len(data))
	out = binary.NativeEndian.AppendUint32(out, h.Len)
	out = binary.NativeEndian.AppendUint16(out, h.Type)
	out = binary.NativeEndian.AppendUint16(out, h.Flags)
	out = binary.NativeEndian.AppendUint32(out, h.Seq)
	out = binary.NativeEndian.AppendUint32(out, h.Pid)
	out = append(out, data...)
	for len(out)%unix.NLMSG_ALIGNTO != 0 {
		out = append(out, 0)
	}
	return out
}

// parseIfaddrImage checks the magic and splits the file into its
// netlink messages; name is for errors.
func parseIfaddrImage(b []byte, name string) ([]syscall.NetlinkMessage, error) {
	return parseNlmsgImage(b, name, ifaddrMagic, unix.RTM_NEWADDR, unix.SizeofIfAddrmsg)
}

// parseNlmsgImage checks the magic of an image iproute2's save commands
// write and splits it into its netlink messages, each of type typ with
// a payload of at least min bytes; name is for errors. Lengths are
// checked against the file, never trusted.
func parseNlmsgImage(b []byte, name string, magic uint32, typ uint16, min int) ([]syscall.NetlinkMessage, error) {
	if len(b) < 4 || binary.NativeEndian.Uint32(b) != magic {
		return nil, fmt.Errorf("%s: not an iproute2 save dump (magic): %w", name, images.ErrCorrupt)
	}
	var out []syscall.NetlinkMessage
	for off := 4; off < len(b); {
		if len(b)-off < unix.SizeofNlMsghdr {
			return nil, fmt.Errorf("%s: offset %d: truncated netlink header: %w", name, off, images.ErrCorrupt)
		}
		n := int(binary.NativeEndian.Uint32(b[off:]))
		if n < unix.SizeofNlMsghdr+min || n > len(b)-off {
			return nil, fmt.Errorf("%s: offset %d: netlink message of %d bytes: %w", name, off, n, images.ErrCorrupt)
		}
		h := syscall.NlMsghdr{Len: uint32(n), Type: binary.NativeEndian.Uint16(b[off+4:]), Flags: binary.NativeEndian.Uint16(b[off+6:]),
			Seq: binary.NativeEndian.Uint32(b[off+8:]), Pid: binary.NativeEndian.Uint32(b[off+12:])}
		if h.Type != typ {
			return nil, fmt.Errorf("%s: offset %d: netlink message of type %d, not %d: %w", name, off, h.Type, typ, images.ErrCorrupt)
		}
		out = append(out, syscall.NetlinkMessage{Header: h, Data: b[off+unix.SizeofNlMsghdr : off+n]})
		off += (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
	}
	return out, nil
}

// RestoreNet sets up the devices of the restored root's new network
// namespace (host PID pid) as they were: lo's MTU, up state and
// addresses, and the veth pairs into nested namespaces, made when those
// are. A checkpoint without netdev-1.img (written by an older ctcr)
// gets lo up, as a container had it.
func RestoreNet(pid int, imgDir string) error {
	return restoreNetAs(pid, imgDir, netNsID)
}

// restoreNetAs is RestoreNet from the images of namespace id: lo as
// it was, then the veth pairs whose other namespace is restored already
// (netdev_restore.go), then the routes through no device or lo.
func restoreNetAs(pid int, imgDir string, id int) error {
	devPath := filepath.Join(imgDir, images.Netdev.FileName(id))
	if _, err := os.Stat(devPath); errors.Is(err, os.ErrNotExist) {
		return LoopbackUp(pid)
	}
	n, err := readNetImages(imgDir, id)
	if err != nil {
		return err
	}
	var dev *netdev.NetDeviceEntry
	for _, d := range n.devs {
		if d.GetType() == netdev.NdType_LOOPBACK {
			dev = d
		}
	}
	if dev != nil {
		if err := restoreLoopback(pid, dev, n.addrsOf(dev.GetIfindex())); err != nil {
			return err
		}
	}
	if err := noteRestoredNet(imgDir, id, pid); err != nil {
		return err
	}
	if err := restoreVeths(pid, imgDir, n); err != nil {
		return err
	}
	if len(n.routes) == 0 {
		return nil
	}
	s, err := rtnlOf(pid)
	if err != nil {
		return err
	}
	defer s.close()
	if err := addRoutes(s, n, 0, 0); err != nil {
		return err
	}
	if dev != nil {
		index, err := s.indexOf("lo")
		if err != nil {
			return err
		}
		return addRoutes(s, n, dev.GetIfindex(), index)
	}
	return nil
}

// restoreLoopback gives lo of pid's new network namespace the MTU, up
// state and addresses (msgs) of dev.
func restoreLoopback(pid int, dev *netdev.NetDeviceEntry, msgs []syscall.NetlinkMessage) error {
	return inNamespace(pid, "net", unix.CLONE_NEWNET, func() error {
		cur, err := loopbackDevice()
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if dev.GetMtu() != cur.GetMtu() {
			ifr, _ := unix.NewIfreq("lo")
			ifr.SetUint32(dev.GetMtu())
			if err := unix.IoctlIfreq(fd, unix.SIOCSIFMTU, ifr); err != nil {
				return fmt.Errorf("set the MTU of lo to %d: %w", dev.GetMtu(), err)
			}
		}
		// Up first: the kernel then adds 127.0.0.1/8 and ::1, which are
		// in the image too and answer EEXIST.
		if dev.GetFlags()&unix.IFF_UP != 0 {
			ifr, _ := unix.NewIfreq("lo")
			ifr.SetUint16(uint16(cur.GetFlags() | unix.IFF_UP))
			if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
				return fmt.Errorf("bring loopback up: %w", err)
			}
		}
		return addAddrs(msgs, int32(cur.GetIfindex()))
	})
}

// addAddrs sends each saved RTM_NEWADDR to the calling thread's
// namespace, for interface index, as `ip addr restore` does: an
// address that exists already is fine.
func addAddrs(msgs []syscall.NetlinkMessage, index int32) error {
	if len(msgs) == 0 {
		return nil
	}
	s, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(s)
	if err := unix.Bind(s, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink bind: %w", err)
	}
	buf := make([]byte, 64<<10)
	for i, m := range msgs {
		data := bytes.Clone(m.Data)
		binary.NativeEndian.PutUint32(data[4:8], uint32(index))
		h := m.Header
		h.Flags = unix.NLM_F_REQUEST | unix.NLM_F_ACK | unix.NLM_F_CREATE | unix.NLM_F_EXCL
		h.Seq, h.Pid = uint32(i+1), 0
		what := describeAddr(data)
		if err := unix.Sendto(s, appendNlmsg(nil, h, data), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return fmt.Errorf("add address %s to lo: %w", what, err)
		}
		if err := netlinkAck(s, buf, h.Seq); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add address %s to lo: %w", what, err)
		}
	}
	return nil
}

// netlinkAck waits for the NLMSG_ERROR that answers request seq.
func netlinkAck(s int, buf []byte, seq uint32) error {
	for {
		n, _, err := unix.Recvfrom(s, buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR || m.Header.Seq != seq || len(m.Data) < 4 {
				continue
			}
			if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
				return unix.Errno(-code)
			}
			return nil
		}
	}
}

// describeAddr names the address of an ifaddrmsg payload for errors.
func describeAddr(data []byte) string {
	family, plen := data[0], data[1]
	attrs, err := syscall.ParseNetlinkRouteAttr(&syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: unix.RTM_NEWADDR}, Data: data})
	if err != nil {
		return "?"
	}
	var addr []byte
	for _, a := range attrs {
		if a.Attr.Type == unix.IFA_LOCAL || (addr == nil && a.Attr.Type == unix.IFA_ADDRESS) {
			addr = a.Value
		}
	}
	if len(addr) == 4 || len(addr) == 16 {
		if ip, ok := netip.AddrFromSlice(addr); ok {
			return fmt.Sprintf("%v/%d", ip, plen)
		}
	}
	return fmt.Sprintf("of family %d", family)
}

// LoopbackUp brings up the loopback device of pid's (new) network
// namespace; the kernel then gives it 127.0.0.1 and ::1 again.
func LoopbackUp(pid int) error {
	return inNamespace(pid, "net", unix.CLONE_NEWNET, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("loopback: %w", err)
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq("lo")
		if err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
			return fmt.Errorf("loopback flags: %w", err)
		}
		ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
		if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
			return fmt.Errorf("bring loopback up: %w", err)
		}
		return nil
	})
}
