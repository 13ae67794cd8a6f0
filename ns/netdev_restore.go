package ns

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/netdev"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/kernel"
)

// Restoring veth pairs. A pair can be made only once both its
// namespaces exist, and the engine makes them one at a time: the tree's
// own before the root forks, each nested one when the first task that
// had it is created. So each namespace, once made, is noted here, and a
// pair is made when the second of its namespaces is restored: from it,
// with the peer end sent into the first one (IFLA_NET_NS_FD in the
// peer's VETH_INFO_PEER attributes), and both ends then get their MTU,
// MAC address (both set at creation), ifindex (asked for, as CRIU does,
// so addresses, routes and sockets bound to a device find the same
// index), addresses, up state and the routes through them.

// netKey names a restored network namespace: the checkpoint's image
// directory and the namespace's image id.
type netKey struct {
	dir string
	id  int
}

// netRef is a task in a restored network namespace, and that
// namespace's inode, which a lookup checks so that a task that died
// and whose PID was reused is never taken for it.
type netRef struct {
	pid int
	ino uint64
}

// restoredNets records the network namespaces restores of this process
// have made. Guarded by its mutex.
var restoredNets = struct {
	sync.Mutex
	m map[netKey]netRef
}{m: map[netKey]netRef{}}

func nsInode(pid int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// noteRestoredNet records that host task pid is in the restored network
// namespace of image id.
func noteRestoredNet(imgDir string, id, pid int) error {
	ino, err := nsInode(pid)
	if err != nil {
		return fmt.Errorf("task %d: network namespace: %w", pid, err)
	}
	restoredNets.Lock()
	defer restoredNets.Unlock()
	restoredNets.m[netKey{filepath.Clean(imgDir), id}] = netRef{pid, ino}
	return nil
}

// restoredNet returns a task in the restored network namespace of image
// id, or 0 if it is not made yet.
func restoredNet(imgDir string, id int) int {
	restoredNets.Lock()
	ref, ok := restoredNets.m[netKey{filepath.Clean(imgDir), id}]
	restoredNets.Unlock()
	if !ok {
		return 0
	}
	if ino, err := nsInode(ref.pid); err != nil || ino != ref.ino {
		return 0
	}
	return ref.pid
}

// NoteJoinedNet records that the restored root (host PID pid) joined a
// network namespace the runtime made (RestoreOptions.JoinNet) in place
// of the tree's own: the ends of veth pairs that were in the tree's own
// and whose peers are in nested namespaces are made there, when those
// are.
func NoteJoinedNet(pid int, imgDir string) error {
	return noteRestoredNet(imgDir, netNsID, pid)
}

// netImages are the images of one saved network namespace.
type netImages struct {
	id     int
	devs   []*netdev.NetDeviceEntry
	addrs  []syscall.NetlinkMessage
	routes []syscall.NetlinkMessage // IPv4, then IPv6
}

// device returns the entry of the device with image ifindex index.
func (n *netImages) device(index uint32) *netdev.NetDeviceEntry {
	for _, d := range n.devs {
		if d.GetIfindex() == index {
			return d
		}
	}
	return nil
}

// readNetImages reads the images of network namespace id, which has a
// netdev image. The addresses and routes images may be missing (an
// older ctcr wrote none of the routes).
func readNetImages(imgDir string, id int) (*netImages, error) {
	devPath := filepath.Join(imgDir, images.Netdev.FileName(id))
	devs, err := images.ReadAll(devPath, images.Netdev, func() *netdev.NetDeviceEntry { return &netdev.NetDeviceEntry{} })
	if err != nil {
		return nil, err
	}
	n := &netImages{id: id, devs: devs}
	names := map[string]bool{}
	for _, d := range devs {
		switch {
		case d.GetType() == netdev.NdType_LOOPBACK && d.GetName() == "lo":
		case d.GetType() == netdev.NdType_VETH:
			if d.GetName() == "" || len(d.GetName()) >= unix.IFNAMSIZ || d.PeerIfindex == nil {
				return nil, fmt.Errorf("%s: veth %q without a name or peer: %w", devPath, d.GetName(), images.ErrCorrupt)
			}
		default:
			return nil, fmt.Errorf("%s: device %q of type %v: only lo and veth pairs are restored: %w", devPath, d.GetName(), d.GetType(), ErrUnsupported)
		}
		if names[d.GetName()] {
			return nil, fmt.Errorf("%s: two devices named %q: %w", devPath, d.GetName(), images.ErrCorrupt)
		}
		names[d.GetName()] = true
	}
	for _, f := range []struct {
		name  string
		magic uint32
		typ   uint16
		min   int
		max   int64
		out   *[]syscall.NetlinkMessage
	}{
		{ifaddrFile(id), ifaddrMagic, unix.RTM_NEWADDR, unix.SizeofIfAddrmsg, maxIfaddrFile, &n.addrs},
		{routeFile(id), routeMagic, unix.RTM_NEWROUTE, unix.SizeofRtMsg, maxRouteFile, &n.routes},
		{route6File(id), routeMagic, unix.RTM_NEWROUTE, unix.SizeofRtMsg, maxRouteFile, &n.routes},
	} {
		p := filepath.Join(imgDir, f.name)
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if fi.Size() > f.max {
			return nil, fmt.Errorf("%s: %d bytes, more than %d: %w", p, fi.Size(), f.max, images.ErrCorrupt)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		msgs, err := parseNlmsgImage(b, p, f.magic, f.typ, f.min)
		if err != nil {
			return nil, err
		}
		*f.out = append(*f.out, msgs...)
	}
	return n, nil
}

// addrsOf returns the saved addresses of the device with image ifindex
// index.
func (n *netImages) addrsOf(index uint32) []syscall.NetlinkMessage {
	var out []syscall.NetlinkMessage
	for _, m := range n.addrs {
		if binary.NativeEndian.Uint32(m.Data[4:8]) == index {
			out = append(out, m)
		}
	}
	return out
}

// restoreVeths makes the veth pairs of restored namespace n (host task
// pid in it) whose other namespace is restored too, or is n; the others
// are made when their peer's namespace is.
func restoreVeths(pid int, imgDir string, n *netImages) error {
	var s *rtnl
	for _, d := range n.devs {
		if d.GetType() != netdev.NdType_VETH {
			continue
		}
		if s == nil {
			var err error
			if s, err = rtnlOf(pid); err != nil {
				return err
			}
			defer s.close()
		}
		peerID := n.id
		if d.PeerNsid != nil {
			peerID = int(d.GetPeerNsid())
		}
		if err := makeVeth(s, imgDir, n, d, peerID); err != nil {
			return fmt.Errorf("veth %s: %w", d.GetName(), err)
		}
	}
	return nil
}

// makeVeth makes veth d of namespace n, whose socket is s, with its peer
// in namespace peerID, if that is restored already (or is n), and
// configures both ends.
func makeVeth(s *rtnl, imgDir string, n *netImages, d *netdev.NetDeviceEntry, peerID int) error {
	peerImgs, ps, peerFd := n, s, -1
	if peerID == n.id {
		// Both ends here: the one with the lower index makes the pair.
		if d.GetPeerIfindex() < d.GetIfindex() {
			return nil
		}
	} else {
		ppid := restoredNet(imgDir, peerID)
		if ppid == 0 {
			return nil // made when namespace peerID is
		}
		var err error
		if peerImgs, err = readNetImages(imgDir, peerID); err != nil {
			return err
		}
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", ppid))
		if err != nil {
			return fmt.Errorf("network namespace %d: %w", peerID, err)
		}
		defer f.Close()
		peerFd = int(f.Fd())
		if ps, err = rtnlOf(ppid); err != nil {
			return err
		}
		defer ps.close()
	}
	p := peerImgs.device(d.GetPeerIfindex())
	if p == nil || p.GetType() != netdev.NdType_VETH || p.GetPeerIfindex() != d.GetIfindex() {
		return fmt.Errorf("its peer, ifindex %d, is no veth paired with it in %s: %w", d.GetPeerIfindex(), images.Netdev.FileName(peerID), images.ErrCorrupt)
	}
	if err := createVeth(s, d, p, peerFd); err != nil {
		return fmt.Errorf("make it with its peer %s: %w", p.GetName(), err)
	}
	if err := configureDevice(s, n, d); err != nil {
		return err
	}
	if err := configureDevice(ps, peerImgs, p); err != nil {
		return fmt.Errorf("its peer %s: %w", p.GetName(), err)
	}
	return nil
}

// linkAttrs are the IFLA_* attributes that make device d as it was.
func linkAttrs(d *netdev.NetDeviceEntry) []byte {
	b := appendAttr(nil, unix.IFLA_IFNAME, cstring(d.GetName()))
	if d.GetMtu() != 0 {
		b = appendAttr(b, unix.IFLA_MTU, u32(d.GetMtu()))
	}
	if len(d.GetAddress()) > 0 {
		b = appendAttr(b, unix.IFLA_ADDRESS, d.GetAddress())
	}
	return b
}

// ifinfomsg is a struct ifinfomsg asking for index, flags and change.
func ifinfomsg(index int32, flags, change uint32) []byte {
	b := make([]byte, 4, unix.SizeofIfInfomsg)
	b = binary.NativeEndian.AppendUint32(b, uint32(index))
	b = binary.NativeEndian.AppendUint32(b, flags)
	return binary.NativeEndian.AppendUint32(b, change)
}

// createVeth makes the pair d (in s's namespace) and p (in the namespace
// open at peerFd, or s's if it is -1), asking for their saved ifindexes
// first and for any if those are taken (a namespace the runtime made).
func createVeth(s *rtnl, d, p *netdev.NetDeviceEntry, peerFd int) error {
	req := func(index, peerIndex int32) []byte {
		peer := append(ifinfomsg(peerIndex, 0, 0), linkAttrs(p)...)
		if peerFd >= 0 {
			peer = appendAttr(peer, unix.IFLA_NET_NS_FD, u32(uint32(peerFd)))
		}
		info := appendAttr(nil, unix.IFLA_INFO_KIND, cstring("veth"))
		info = appendAttr(info, unix.IFLA_INFO_DATA, appendAttr(nil, kernel.VETH_INFO_PEER, peer))
		b := append(ifinfomsg(index, 0, 0), linkAttrs(d)...)
		return appendAttr(b, unix.IFLA_LINKINFO, info)
	}
	const create = unix.NLM_F_CREATE | unix.NLM_F_EXCL
	try := func() error {
		err := s.do(unix.RTM_NEWLINK, create, req(int32(d.GetIfindex()), int32(p.GetIfindex())))
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.EBUSY) {
			// NLM_F_EXCL: an index already taken answers EEXIST
			// (another device has it here) or EBUSY (the peer's
			// namespace).
			err = s.do(unix.RTM_NEWLINK, create, req(0, 0))
		}
		return err
	}
	err := try()
	// A namespace the runtime made and kept (JoinNet) may still hold
	// the end of the pair the dump's tasks had: the kernel destroys
	// their dead nested namespace, and the pair with it, in a work
	// queue, a moment after the last task is gone.
	for deadline := time.Now().Add(vethGoneTimeout); errors.Is(err, unix.EEXIST) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		err = try()
	}
	if errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("a device named %s or %s is there already (after %v): %w", d.GetName(), p.GetName(), vethGoneTimeout, err)
	}
	return err
}

// vethGoneTimeout bounds the wait for the old end of a pair to go (a
// variable for tests).
var vethGoneTimeout = 5 * time.Second

// indexOf returns the ifindex of device name in s's namespace.
func (s *rtnl) indexOf(name string) (int32, error) {
	m, err := s.query(unix.RTM_GETLINK, appendAttr(ifinfomsg(0, 0, 0), unix.IFLA_IFNAME, cstring(name)), unix.RTM_NEWLINK)
	if err != nil {
		return 0, fmt.Errorf("device %s: %w", name, err)
	}
	l, err := parseLink(m)
	if err != nil {
		return 0, err
	}
	return l.index, nil
}

// settableFlags are the IFF_* flags a restore gives a device back; the
// others the kernel derives (RUNNING, LOWER_UP, ...).
const settableFlags = unix.IFF_UP | unix.IFF_NOARP | unix.IFF_PROMISC | unix.IFF_ALLMULTI | unix.IFF_MULTICAST

// configureDevice gives device d of namespace n (socket s), just made
// with its name, MTU and MAC address, its flags (up), its addresses and
// the routes through it.
func configureDevice(s *rtnl, n *netImages, d *netdev.NetDeviceEntry) error {
	index, err := s.indexOf(d.GetName())
	if err != nil {
		return err
	}
	if err := s.do(unix.RTM_NEWLINK, 0, ifinfomsg(index, d.GetFlags()&settableFlags, settableFlags)); err != nil {
		return fmt.Errorf("set the flags %#x of %s: %w", d.GetFlags()&settableFlags, d.GetName(), err)
	}
	for _, m := range n.addrsOf(d.GetIfindex()) {
		data := bytes.Clone(m.Data)
		binary.NativeEndian.PutUint32(data[4:8], uint32(index))
		// An address the kernel added itself (IPv6 link-local) is there.
		if err := s.do(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL, data); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add address %s to %s: %w", describeAddr(data), d.GetName(), err)
		}
	}
	return addRoutes(s, n, d.GetIfindex(), index)
}

// addRoutes adds the saved routes of n through the device of image
// ifindex old, now index (0, 0: the routes through no device). Those
// the kernel makes itself from addresses (proto kernel) it has made.
func addRoutes(s *rtnl, n *netImages, old uint32, index int32) error {
	for _, m := range n.routes {
		r, err := parseRoute(m.Data)
		if err != nil {
			return err
		}
		if uint32(r.oif) != old || r.protocol == unix.RTPROT_KERNEL {
			continue
		}
		data := bytes.Clone(m.Data)
		if index != 0 {
			setRouteOif(data, index)
		}
		if err := s.do(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_EXCL, data); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add the route to %v: %w", r, err)
		}
	}
	return nil
}

// setRouteOif rewrites the RTA_OIF attribute of an rtmsg payload.
func setRouteOif(data []byte, index int32) {
	for off := unix.SizeofRtMsg; off+unix.SizeofRtAttr <= len(data); {
		n := int(binary.NativeEndian.Uint16(data[off:]))
		if n < unix.SizeofRtAttr || off+n > len(data) {
			return
		}
		if binary.NativeEndian.Uint16(data[off+2:]) == unix.RTA_OIF && n == unix.SizeofRtAttr+4 {
			binary.NativeEndian.PutUint32(data[off+unix.SizeofRtAttr:], uint32(index))
		}
		off += (n + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1)
	}
}
