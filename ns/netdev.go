package ns

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"syscall"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/netdev"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/nsthread"
)

// Network devices of a saved network namespace (the tree's own, or a
// nested one): the loopback device, and veth pairs whose two ends are
// both in namespaces the checkpoint saves (a nested container's eth0
// and its host end in the parent container, two services' private
// namespaces joined by a pair). As in CRIU (criu/net.c), each end is one
// NetDeviceEntry of its namespace's image, naming its peer by ifindex
// and, when the peer is in another namespace, by that namespace's image
// id (peer_nsid: 1 for the tree's own, the inode number of a nested
// one, as the images are named):
//
//	netdev-ID.img   NETDEV: one NetDeviceEntry per device: type
//	                (LOOPBACK, VETH), ifindex, MTU, IFF_* flags, name,
//	                MAC address, peer_ifindex and peer_nsid of a veth
//	ifaddr-ID.img   the addresses of those devices (net.go)
//	route-ID.img    the IPv4 routes of the main table through those
//	route6-ID.img   devices (or through none: blackhole, unreachable),
//	                raw as CRIU writes them with `ip route save`:
//	                iproute2's magic 0x45311224, then the RTM_NEWROUTE
//	                messages as the kernel dumped them
//
// Other devices (bridge, macvlan, tun, dummy, ...) and a veth whose peer
// is in a namespace the checkpoint does not save (the host's) are
// refused by name in a namespace the tree made (a nested one, a plain
// tree's own); in a container's own namespace they are the runtime's,
// left out as before.
const (
	routeMagic   = 0x45311224 // iproute2's route_dump_magic
	maxRouteFile = 4 << 20
)

func routeFile(id int) string  { return fmt.Sprintf("route-%d.img", id) }
func route6File(id int) string { return fmt.Sprintf("route6-%d.img", id) }

// link is one network device as an RTM_NEWLINK message describes it.
type link struct {
	index  int32
	arphrd uint16
	flags  uint32
	name   string
	mtu    uint32
	mac    []byte
	kind   string // IFLA_INFO_KIND: veth, bridge, ...; "" for lo and hardware
	peer   int32  // IFLA_LINK: a veth's peer's ifindex
	peerNs int32  // IFLA_LINK_NETNSID: the peer's namespace, -1 for the device's own
}

// parseLink reads an RTM_NEWLINK message.
func parseLink(m syscall.NetlinkMessage) (link, error) {
	if len(m.Data) < unix.SizeofIfInfomsg {
		return link{}, fmt.Errorf("netlink link message of %d bytes: %w", len(m.Data), images.ErrCorrupt)
	}
	l := link{
		arphrd: binary.NativeEndian.Uint16(m.Data[2:]), index: int32(binary.NativeEndian.Uint32(m.Data[4:])),
		flags: binary.NativeEndian.Uint32(m.Data[8:]), peerNs: -1,
	}
	attrs, err := parseAttrs(m.Data[unix.SizeofIfInfomsg:])
	if err != nil {
		return link{}, fmt.Errorf("device %d: %w", l.index, err)
	}
	if v := attrs[unix.IFLA_IFNAME]; len(v) > 0 {
		l.name = unix.ByteSliceToString(v)
	}
	if v := attrs[unix.IFLA_MTU]; len(v) == 4 {
		l.mtu = binary.NativeEndian.Uint32(v)
	}
	l.mac = attrs[unix.IFLA_ADDRESS]
	if v := attrs[unix.IFLA_LINK]; len(v) == 4 {
		l.peer = int32(binary.NativeEndian.Uint32(v))
	}
	if v := attrs[unix.IFLA_LINK_NETNSID]; len(v) == 4 {
		l.peerNs = int32(binary.NativeEndian.Uint32(v))
	}
	if v := attrs[unix.IFLA_LINKINFO]; len(v) > 0 {
		info, err := parseAttrs(v)
		if err != nil {
			return link{}, fmt.Errorf("device %s: link info: %w", l.name, err)
		}
		l.kind = unix.ByteSliceToString(info[unix.IFLA_INFO_KIND])
	}
	return l, nil
}

// links lists the devices of s's namespace.
func (s *rtnl) links() ([]link, error) {
	msgs, err := s.dump(unix.RTM_GETLINK, make([]byte, unix.SizeofIfInfomsg))
	if err != nil {
		return nil, fmt.Errorf("netlink dump of the devices: %w", err)
	}
	var out []link
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWLINK {
			continue
		}
		l, err := parseLink(m)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// nsidOf returns the id that s's namespace gives the network namespace
// open at fd (RTM_GETNSID), or -1 if it gives it none.
func (s *rtnl) nsidOf(fd int) (int32, error) {
	req := appendAttr(make([]byte, 4), unix.NETNSA_FD, u32(uint32(fd)))
	m, err := s.query(unix.RTM_GETNSID, req, unix.RTM_NEWNSID)
	if err != nil {
		return -1, fmt.Errorf("netlink RTM_GETNSID: %w", err)
	}
	if len(m.Data) < 4 {
		return -1, fmt.Errorf("netlink RTM_NEWNSID of %d bytes", len(m.Data))
	}
	attrs, err := parseAttrs(m.Data[4:])
	if err != nil {
		return -1, err
	}
	if v := attrs[unix.NETNSA_NSID]; len(v) == 4 {
		return int32(binary.NativeEndian.Uint32(v)), nil
	}
	return -1, nil
}

// netNS is a network namespace in which a dump may find a veth's peer.
type netNS struct {
	ino  uint64
	id   int    // its image id: 1 the tree's own, the inode of a nested one; 0 if not saved
	pid  int    // a task in it
	what string // for messages
}

// netSpaces lists the network namespaces of the tasks pids of the tree
// at root, each with the id it is saved under (rootSaved says the
// root's is saved, as id 1), and ctcr's own, which is not saved unless
// it is the root's.
func netSpaces(root int, pids []int, rootSaved bool) ([]netNS, error) {
	rootIno, err := NestedID(root, "net")
	if err != nil {
		return nil, err
	}
	var out []netNS
	seen := map[uint64]bool{}
	add := func(pid int) {
		ino, err := NestedID(pid, "net")
		if err != nil || seen[uint64(ino)] {
			return // a zombie has no namespaces
		}
		seen[uint64(ino)] = true
		n := netNS{ino: uint64(ino), id: ino, pid: pid, what: fmt.Sprintf("the nested network namespace %d", ino)}
		if ino == rootIno {
			n.id, n.what = netNsID, "the tree's own network namespace"
			if !rootSaved {
				n.id, n.what = 0, "the host's network namespace (ctcr's, which the tree's root shares)"
			}
		}
		out = append(out, n)
	}
	add(root)
	for _, p := range pids {
		add(p)
	}
	if self, err := NestedID(os.Getpid(), "net"); err == nil && !seen[uint64(self)] {
		out = append(out, netNS{ino: uint64(self), pid: os.Getpid(), what: "the host's network namespace (ctcr's)"})
	}
	return out, nil
}

// treePidList lists the tree at root (treePids), stopped while it is
// dumped, in PID order.
func treePidList(root int) []int {
	var out []int
	for p := range treePids(root) {
		out = append(out, p)
	}
	sort.Ints(out)
	return out
}

// vethPeer finds the namespace of veth l's peer among spaces (l is in
// s's namespace, with image id self) and returns its image id, or why
// the device is not kept: its peer is in a namespace not saved.
func (s *rtnl) vethPeer(l link, self int, spaces []netNS) (int, string, error) {
	if l.peerNs < 0 {
		return self, "", nil
	}
	for _, sp := range spaces {
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", sp.pid))
		if err != nil {
			continue // the task went away: it cannot be the peer's
		}
		nsid, err := s.nsidOf(int(f.Fd()))
		f.Close()
		if err != nil {
			return 0, "", fmt.Errorf("veth %s: %w", l.name, err)
		}
		if nsid != l.peerNs {
			continue
		}
		if sp.id == 0 {
			return 0, fmt.Sprintf("%s (veth): its peer %s is in %s, which the checkpoint does not save", l.name, peerName(sp.pid, l.peer), sp.what), nil
		}
		return sp.id, "", nil
	}
	return 0, fmt.Sprintf("%s (veth): its peer (ifindex %d) is in a network namespace no task of the tree is in", l.name, l.peer), nil
}

// peerName names device index of the network namespace of task pid.
func peerName(pid int, index int32) string {
	s, err := rtnlOf(pid)
	if err != nil {
		return fmt.Sprintf("(ifindex %d)", index)
	}
	defer s.close()
	ls, _ := s.links()
	for _, l := range ls {
		if l.index == index {
			return l.name
		}
	}
	return fmt.Sprintf("(ifindex %d)", index)
}

// dumpNetNS saves the devices of pid's network namespace that are kept,
// their addresses and the routes through them, as namespace id. spaces
// are the namespaces a veth's peer may be in (netSpaces). strict refuses
// a device that is not kept, naming it; otherwise it is left out.
func dumpNetNS(pid int, stage *images.Staging, id int, spaces []netNS, strict bool) error {
	s, err := rtnlOf(pid)
	if err != nil {
		return fmt.Errorf("network namespace of task %d: %w", pid, err)
	}
	defer s.close()
	links, err := s.links()
	if err != nil {
		return fmt.Errorf("network namespace of task %d: %w", pid, err)
	}
	var devs []proto.Message
	keep := map[int32]bool{}
	var refused []string
	for _, l := range links {
		d := &netdev.NetDeviceEntry{
			Ifindex: proto.Uint32(uint32(l.index)), Mtu: proto.Uint32(l.mtu), Flags: proto.Uint32(l.flags), Name: proto.String(l.name),
		}
		switch {
		case l.arphrd == unix.ARPHRD_LOOPBACK && l.kind == "":
			d.Type = netdev.NdType_LOOPBACK.Enum()
		case l.kind == "veth":
			peerID, why, err := s.vethPeer(l, id, spaces)
			if err != nil {
				return err
			}
			if why != "" {
				refused = append(refused, why)
				continue
			}
			d.Type = netdev.NdType_VETH.Enum()
			d.Address = l.mac
			d.PeerIfindex = proto.Uint32(uint32(l.peer))
			if peerID != id {
				d.PeerNsid = proto.Uint32(uint32(peerID))
			}
		default:
			kind := l.kind
			if kind == "" {
				kind = "a hardware or physical device"
			}
			refused = append(refused, fmt.Sprintf("%s (%s): only lo and veth pairs are restored", l.name, kind))
			continue
		}
		keep[l.index] = true
		devs = append(devs, d)
	}
	if strict && len(refused) > 0 {
		return fmt.Errorf("network device %s: %w", strings.Join(refused, "; "), ErrUnsupported)
	}
	addrs, err := s.addrs(keep)
	if err != nil {
		return err
	}
	var routes [2][]byte
	for i, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if routes[i], err = s.routes(family, keep, strict); err != nil {
			return err
		}
	}
	if err := images.WriteFile(stage.Path(images.Netdev.FileName(id)), images.Netdev, devs...); err != nil {
		return err
	}
	out := binary.NativeEndian.AppendUint32(nil, ifaddrMagic)
	if err := stage.WriteFile(ifaddrFile(id), append(out, addrs...)); err != nil {
		return err
	}
	for i, name := range []string{routeFile(id), route6File(id)} {
		out := binary.NativeEndian.AppendUint32(nil, routeMagic)
		if err := stage.WriteFile(name, append(out, routes[i]...)); err != nil {
			return err
		}
	}
	return nil
}

// addrs returns the RTM_NEWADDR messages of s's namespace that belong
// to the devices keep holds, each as the kernel sent it.
func (s *rtnl) addrs(keep map[int32]bool) ([]byte, error) {
	msgs, err := s.dump(unix.RTM_GETADDR, make([]byte, unix.SizeofIfAddrmsg))
	if err != nil {
		return nil, fmt.Errorf("netlink dump of the addresses: %w", err)
	}
	var out []byte
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWADDR || len(m.Data) < unix.SizeofIfAddrmsg {
			continue
		}
		if keep[int32(binary.NativeEndian.Uint32(m.Data[4:8]))] {
			out = appendNlmsg(out, m.Header, m.Data)
		}
	}
	return out, nil
}

// routeMsg is the part of an RTM_NEWROUTE message a dump and a restore
// look at.
type routeMsg struct {
	family, dstLen, protocol uint8
	table                    uint32
	flags                    uint32
	oif                      int32 // 0: none
	dst                      []byte
	multipath                bool
}

func parseRoute(data []byte) (routeMsg, error) {
	if len(data) < unix.SizeofRtMsg {
		return routeMsg{}, fmt.Errorf("route message of %d bytes: %w", len(data), images.ErrCorrupt)
	}
	r := routeMsg{family: data[0], dstLen: data[1], table: uint32(data[4]), protocol: data[5], flags: binary.NativeEndian.Uint32(data[8:])}
	attrs, err := parseAttrs(data[unix.SizeofRtMsg:])
	if err != nil {
		return routeMsg{}, err
	}
	if v := attrs[unix.RTA_TABLE]; len(v) == 4 {
		r.table = binary.NativeEndian.Uint32(v)
	}
	if v := attrs[unix.RTA_OIF]; len(v) == 4 {
		r.oif = int32(binary.NativeEndian.Uint32(v))
	}
	r.dst = attrs[unix.RTA_DST]
	_, r.multipath = attrs[unix.RTA_MULTIPATH]
	return r, nil
}

// String names a route for messages: its destination.
func (r routeMsg) String() string {
	if ip, ok := netip.AddrFromSlice(r.dst); ok {
		return netip.PrefixFrom(ip, int(r.dstLen)).String()
	}
	if r.family == unix.AF_INET6 {
		return "::/0"
	}
	return "0.0.0.0/0"
}

// routes returns the RTM_NEWROUTE messages of the main table of s's
// namespace for family (what `ip route save` writes) through the devices
// keep holds or through none. A multipath route is refused if strict,
// else left out, as a route through a device not kept is.
func (s *rtnl) routes(family uint8, keep map[int32]bool, strict bool) ([]byte, error) {
	req := make([]byte, unix.SizeofRtMsg)
	req[0] = family
	msgs, err := s.dump(unix.RTM_GETROUTE, req)
	if err != nil {
		return nil, fmt.Errorf("netlink dump of the routes: %w", err)
	}
	var out []byte
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWROUTE {
			continue
		}
		r, err := parseRoute(m.Data)
		if err != nil {
			return nil, fmt.Errorf("netlink dump of the routes: %w", err)
		}
		if r.table != unix.RT_TABLE_MAIN || r.flags&unix.RTM_F_CLONED != 0 {
			continue
		}
		if r.multipath {
			if strict {
				return nil, fmt.Errorf("route to %v: a multipath route is not restored: %w", r, ErrUnsupported)
			}
			continue
		}
		if r.oif != 0 && !keep[r.oif] {
			continue
		}
		out = appendNlmsg(out, m.Header, m.Data)
	}
	return out, nil
}

// netRootSaved says whether the network namespace of the tree's root is
// saved: it is when it is not ctcr's.
func netRootSaved(root int) bool {
	same, err := nsthread.Same(root, "net")
	return err == nil && !same
}
