package criu

import (
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	sknetlink "github.com/checkpoint-restore/go-criu/v7/crit/images/sk-netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/kernel"
)

// netlinkSockets are AF_NETLINK sockets: their protocol, port id, the
// multicast groups they joined, the port or group they are connected
// to, and their options, in CRIU's netlink_sk_entry (criu/sk-netlink.c).
// Restore makes each in the restored tree's network namespace and binds
// it to the same port id. Messages queued on one at dump (replies, or
// events of its groups) cannot be queued again: they are dropped, with
// a warning.
var netlinkSockets = fileKind{
	name:   "netlink socket",
	fdType: fdinfo.FdTypes_NETLINKSK,
	dump:   dumpNetlinkSocket,
	open:   openNetlinkSocket,
}

func dumpNetlinkSocket(d *fdDump) (*fdinfo.FileEntry, error) {
	fd, _, err := socketOf(d, unix.AF_NETLINK)
	if fd < 0 || err != nil {
		return nil, err
	}
	protocol, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if err != nil {
		return nil, fmt.Errorf("%s: SO_PROTOCOL: %w", d.where, err)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("%s: SO_TYPE: %w", d.where, err)
	}
	what := fmt.Sprintf("%s (netlink protocol %d)", d.link, protocol)
	if typ != unix.SOCK_RAW && typ != unix.SOCK_DGRAM {
		return nil, d.unsupported(fmt.Sprintf("%s of type %d", what, typ))
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: getsockname: %w", d.where, what, err)
	}
	self, _ := sa.(*unix.SockaddrNetlink)
	e := &sknetlink.NetlinkSkEntry{
		Id: proto.Uint32(d.files.nextID()), Ino: proto.Uint32(uint32(d.st.Ino)), Protocol: proto.Uint32(uint32(protocol)),
		State: proto.Uint32(tcpClose), Flags: proto.Uint32(d.flags), Portid: proto.Uint32(0), Fown: noFown(),
		DstPortid: proto.Uint32(0), DstGroup: proto.Uint32(0),
	}
	if self != nil {
		e.Portid = proto.Uint32(self.Pid)
	}
	if groups, err := kernel.NetlinkMemberships(fd); err == nil {
		e.Groups = groups
	} else if self != nil && self.Groups != 0 {
		e.Groups = []uint32{self.Groups}
	}
	if peer, err := unix.Getpeername(fd); err == nil {
		if p, ok := peer.(*unix.SockaddrNetlink); ok && (p.Pid != 0 || p.Groups != 0) {
			e.State = proto.Uint32(tcpEstablished)
			e.DstPortid, e.DstGroup = proto.Uint32(p.Pid), proto.Uint32(p.Groups)
		}
	}
	if e.Opts, err = dumpSkOpts(fd); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", d.where, what, err)
	}
	if n, err := unix.IoctlGetInt(fd, unix.SIOCINQ); err == nil && n > 0 {
		d.files.warnf("%s: %s: the messages queued on it (%d bytes next) are dropped: they cannot be queued again", d.where, what, n)
	}
	return &fdinfo.FileEntry{Id: e.Id, Nlsk: e}, nil
}

func openNetlinkSocket(r *fileRestore, e *fdinfo.FileEntry) (*os.File, error) {
	nl := e.GetNlsk()
	if nl == nil {
		return nil, corruptf("files.img", "netlink socket id %d without its entry", e.GetId())
	}
	what := fmt.Sprintf("netlink socket id %d (protocol %d, port %d)", e.GetId(), nl.GetProtocol(), nl.GetPortid())
	fd := -1
	build := func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(nl.GetProtocol())); err != nil {
			return os.NewSyscallError("socket(AF_NETLINK)", err)
		}
		// The first 32 groups go with bind, the others one by one.
		var first uint32
		if g := nl.GetGroups(); len(g) > 0 {
			first = g[0]
		}
		if nl.GetPortid() != 0 || first != 0 {
			if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: nl.GetPortid(), Groups: first}); err != nil {
				return fmt.Errorf("bind: %w", err)
			}
		}
		for w, bits := range nl.GetGroups() {
			if w == 0 {
				continue
			}
			for b := 0; b < 32; b++ {
				if bits&(1<<b) != 0 {
					if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, w*32+b+1); err != nil {
						return fmt.Errorf("join group %d: %w", w*32+b+1, err)
					}
				}
			}
		}
		if nl.GetState() == tcpEstablished {
			if err := unix.Connect(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: nl.GetDstPortid(), Groups: nl.GetDstGroup()}); err != nil {
				return fmt.Errorf("connect: %w", err)
			}
		}
		return restoreSkOpts(fd, nl.GetOpts())
	}
	return socketInTreeNet(r, what, &fd, nl.GetFlags(), fmt.Sprintf("socket:[%d]", nl.GetIno()), build)
}
