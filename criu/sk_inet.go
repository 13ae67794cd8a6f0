package criu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	skinet "github.com/checkpoint-restore/go-criu/v7/crit/images/sk-inet"
	skopts "github.com/checkpoint-restore/go-criu/v7/crit/images/sk-opts"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/kernel"
	"github.com/ctcr/ctcr/criu/nsthread"
	"github.com/ctcr/ctcr/criu/proc"
)

// inetSockets are the sockets of IPv4 and IPv6: TCP listeners (address,
// backlog), TCP sockets not connected (bound or not) and connections;
// UDP and UDP-Lite sockets bound and connected, with their shutdown
// state; ICMP echo ("ping") sockets; raw sockets of any protocol. Their
// entries in files.img are CRIU's inet_sk_entry
// (criu/sk-inet.c): addresses as 32-bit words in network order, the TCP
// state as the kernel numbers it, the listen backlog, socket options.
//
// Established and half-closed TCP connections move with TCP repair
// (sk_tcp.go), and so, with --tcp-established, do TCP sockets in
// SYN_SENT; --tcp-close restores them as connections that have ended
// (the peer is told nothing; what the socket had received can still be
// read, then the stream ends; writes fail), as it does a connection that
// was reset. Connections waiting in a listener's accept queue move when
// their other end is in the tree (sk_inet_acceptq.go), are refused by name
// otherwise, and dropped with --tcp-close. Datagrams queued on UDP,
// UDP-Lite, ping and raw sockets cannot be sent again from their
// senders' addresses: they are dropped with a warning.
//
// Restore makes each socket in the restored root's network namespace,
// binds it with SO_REUSEADDR and IP_FREEBIND for the moment (the old
// socket may linger, the address may not be configured yet), then
// listens or connects.
var inetSockets = fileKind{
	name:   "inet socket",
	fdType: fdinfo.FdTypes_INETSK,
	dump:   dumpInetSocket,
	open:   openInetSocket,
	finish: finishTCP,
}

// TCP states (include/net/tcp_states.h) beyond those sk_unix.go names.
var tcpStateNames = map[uint8]string{
	1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
	7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
}

// inetAddr returns the address and port of sa as inet_sk_entry has them.
func inetAddr(sa unix.Sockaddr) (words []uint32, port uint32, ok bool) {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return []uint32{binary.LittleEndian.Uint32(a.Addr[:])}, uint32(a.Port), true
	case *unix.SockaddrInet6:
		w := make([]uint32, 4)
		for i := range w {
			w[i] = binary.LittleEndian.Uint32(a.Addr[i*4:])
		}
		return w, uint32(a.Port), true
	}
	return nil, 0, false
}

// closedPeer returns the peer a closed TCP socket fd had, nil if it
// never had one. SO_PEERNAME answers with a struct sockaddr of the
// socket's family.
func closedPeer(fd, family int) unix.Sockaddr {
	size := unix.SizeofSockaddrInet4
	if family == unix.AF_INET6 {
		size = unix.SizeofSockaddrInet6
	}
	b, err := kernel.GetsockoptBytes(fd, unix.SOL_SOCKET, unix.SO_PEERNAME, size)
	if err != nil {
		return nil
	}
	switch {
	case family == unix.AF_INET && len(b) >= unix.SizeofSockaddrInet4:
		a := &unix.SockaddrInet4{Port: int(b[2])<<8 | int(b[3])}
		copy(a.Addr[:], b[4:8])
		if a.Port == 0 {
			return nil
		}
		return a
	case family == unix.AF_INET6 && len(b) >= unix.SizeofSockaddrInet6:
		a := &unix.SockaddrInet6{Port: int(b[2])<<8 | int(b[3])}
		copy(a.Addr[:], b[8:24])
		if a.Port == 0 {
			return nil
		}
		return a
	}
	return nil
}

// portlessTable names the /proc/net table of ping and raw sockets, whose
// peer has no port: "" for other sockets.
func portlessTable(family, typ, protocol int) string {
	table := ""
	switch {
	case typ == unix.SOCK_RAW:
		table = "raw"
	case typ == unix.SOCK_DGRAM && (protocol == unix.IPPROTO_ICMP || protocol == unix.IPPROTO_ICMPV6):
		table = "icmp"
	default:
		return ""
	}
	if family == unix.AF_INET6 {
		table += "6"
	}
	return table
}

// portlessPeer returns the destination of the connected ping or raw
// socket ino of task pid's network namespace from /proc/PID/net/TABLE,
// nil if it is not connected.
func portlessPeer(pid, family int, table string, ino uint32) (unix.Sockaddr, error) {
	socks, err := proc.NetSockets(pid, table)
	if err != nil {
		return nil, fmt.Errorf("the socket's destination: %w", err)
	}
	s, ok := socks[ino]
	if !ok || s.State != tcpEstablished {
		return nil, nil
	}
	return inetSockaddr(uint32(family), s.Remote, s.RemotePort)
}

// inetSockaddr is the inverse of inetAddr.
func inetSockaddr(family uint32, words []uint32, port uint32) (unix.Sockaddr, error) {
	switch {
	case family == unix.AF_INET && len(words) == 1:
		a := &unix.SockaddrInet4{Port: int(port)}
		binary.LittleEndian.PutUint32(a.Addr[:], words[0])
		return a, nil
	case family == unix.AF_INET6 && len(words) == 4:
		a := &unix.SockaddrInet6{Port: int(port)}
		for i, w := range words {
			binary.LittleEndian.PutUint32(a.Addr[i*4:], w)
		}
		return a, nil
	}
	return nil, fmt.Errorf("family %d with a %d-word address", family, len(words))
}

// inetKind names the kinds of inet socket ctcr keeps ("" for others):
// TCP, UDP and UDP-Lite, ICMP echo ("ping") sockets, raw sockets of any
// protocol.
func inetKind(family, typ, protocol uint32) string {
	switch {
	case typ == unix.SOCK_STREAM && protocol == unix.IPPROTO_TCP:
		return "tcp"
	case typ == unix.SOCK_DGRAM && protocol == unix.IPPROTO_UDP:
		return "udp"
	case typ == unix.SOCK_DGRAM && protocol == unix.IPPROTO_UDPLITE:
		return "udplite"
	case typ == unix.SOCK_DGRAM && (family == unix.AF_INET && protocol == unix.IPPROTO_ICMP || family == unix.AF_INET6 && protocol == unix.IPPROTO_ICMPV6):
		return "ping"
	case typ == unix.SOCK_RAW:
		return fmt.Sprintf("raw(%d)", protocol)
	}
	return ""
}

func inetDesc(typ, family, protocol uint32, src, dst unix.Sockaddr) string {
	name := inetKind(family, typ, protocol)
	if family == unix.AF_INET6 {
		name += "6"
	}
	s := name + " " + sockaddrString(src)
	if dst != nil {
		s += " -> " + sockaddrString(dst)
	}
	return s
}

func sockaddrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return fmt.Sprintf("%d.%d.%d.%d:%d", a.Addr[0], a.Addr[1], a.Addr[2], a.Addr[3], a.Port)
	case *unix.SockaddrInet6:
		s := "["
		for i := 0; i < 16; i += 2 {
			if i > 0 {
				s += ":"
			}
			s += fmt.Sprintf("%x", uint16(a.Addr[i])<<8|uint16(a.Addr[i+1]))
		}
		return s + fmt.Sprintf("]:%d", a.Port)
	}
	return "?"
}

func dumpInetSocket(d *fdDump) (*fdinfo.FileEntry, error) {
	fd, family, err := socketOf(d, unix.AF_INET, unix.AF_INET6)
	if fd < 0 || err != nil {
		return nil, err
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("%s: SO_TYPE: %w", d.where, err)
	}
	protocol, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if err != nil {
		return nil, fmt.Errorf("%s: SO_PROTOCOL: %w", d.where, err)
	}
	src, err := unix.Getsockname(fd)
	if err != nil {
		return nil, fmt.Errorf("%s: getsockname: %w", d.where, err)
	}
	dst, err := unix.Getpeername(fd)
	if err != nil {
		dst = nil // not connected
	}
	if table := portlessTable(family, typ, protocol); dst == nil && table != "" {
		// Ping and raw sockets connect with no port, and getpeername
		// answers ENOTCONN for a socket without a destination port: the
		// namespace's table of such sockets has the destination.
		if dst, err = portlessPeer(d.pid, family, table, uint32(d.st.Ino)); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", d.where, d.link, err)
		}
	}
	what := fmt.Sprintf("%s (%s)", d.link, inetDesc(uint32(typ), uint32(family), uint32(protocol), src, dst))
	if inetKind(uint32(family), uint32(typ), uint32(protocol)) == "" {
		return nil, d.unsupported(fmt.Sprintf("socket %s of family %d, type %d, protocol %d (TCP, UDP, UDP-Lite, ping and raw sockets are)", d.link, family, typ, protocol))
	}
	srcWords, srcPort, _ := inetAddr(src)
	e := &skinet.InetSkEntry{
		Id: proto.Uint32(d.files.nextID()), Ino: proto.Uint32(uint32(d.st.Ino)), Family: proto.Uint32(uint32(family)),
		Type: proto.Uint32(uint32(typ)), Proto: proto.Uint32(uint32(protocol)), State: proto.Uint32(tcpClose),
		SrcPort: proto.Uint32(srcPort), DstPort: proto.Uint32(0), Flags: proto.Uint32(d.flags), Backlog: proto.Uint32(0),
		SrcAddr: srcWords, Fown: noFown(),
	}
	if dst != nil {
		words, port, _ := inetAddr(dst)
		e.DstAddr, e.DstPort = words, proto.Uint32(port)
	}
	if typ == unix.SOCK_STREAM {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: TCP_INFO: %w", d.where, what, err)
		}
		e.State = proto.Uint32(uint32(info.State))
		switch info.State {
		case tcpListen:
			// For a listener the kernel reports the backlog limit in
			// tcpi_sacked and the connections waiting in tcpi_unacked.
			e.Backlog = proto.Uint32(info.Sacked)
			if info.Unacked > 0 {
				if d.files.tcpClose {
					d.files.warnf("%s: %s: %d connections waiting to be accepted are dropped (--tcp-close)", d.where, what, info.Unacked)
					break
				}
				if err := noteAcceptQueue(d, fd, e, src, int(info.Unacked), what); err != nil {
					return nil, err
				}
			}
		case tcpClose:
			// A connection that ended (reset, or both ends closed):
			// getpeername refuses to name the peer of a closed socket,
			// SO_PEERNAME does not (inet_getname with peer 2). It comes
			// back ended, with what it had received and not read.
			if peer := closedPeer(fd, family); peer != nil {
				dst = peer
				words, port, _ := inetAddr(dst)
				e.DstAddr, e.DstPort = words, proto.Uint32(port)
				what = fmt.Sprintf("%s (%s)", d.link, inetDesc(uint32(typ), uint32(family), uint32(protocol), src, dst))
				if err := dumpTCPEnded(d, fd, e, what); err != nil {
					return nil, err
				}
			}
		default:
			if d.files.tcpClose {
				d.files.warnf("%s: %s in state %s comes back as a connection that has ended, with the bytes it had received still to be read (--tcp-close)", d.where, what, tcpStateNames[info.State])
				if err := dumpTCPEnded(d, fd, e, what); err != nil {
					return nil, err
				}
				break
			}
			if info.State == kernel.TCP_SYN_SENT && dst == nil {
				// getpeername answers ENOTCONN in SYN_SENT, SO_PEERNAME
				// does not.
				if dst = closedPeer(fd, family); dst != nil {
					words, port, _ := inetAddr(dst)
					e.DstAddr, e.DstPort = words, proto.Uint32(port)
					what = fmt.Sprintf("%s (%s)", d.link, inetDesc(uint32(typ), uint32(family), uint32(protocol), src, dst))
				}
			}
			if info.State == kernel.TCP_SYN_SENT && !d.files.tcpEstablished {
				return nil, d.unsupported(fmt.Sprintf("%s in state SYN_SENT: its peer has not answered yet: --tcp-established moves it (it sends its SYN again once restored; --tcp-close ends it)", what))
			}
			if !tcpRepairable(info.State) || dst == nil {
				return nil, d.unsupported(fmt.Sprintf("%s in state %s: only established, half-closed and opening (SYN_SENT) TCP connections move (--tcp-close restores it as ended)", what, tcpStateNames[info.State]))
			}
			if err := dumpTCPStream(d, fd, e, src, dst, what); err != nil {
				return nil, err
			}
		}
	} else {
		if dst != nil {
			e.State = proto.Uint32(tcpEstablished)
		}
		if n, err := unix.IoctlGetInt(fd, unix.SIOCINQ); err == nil && n > 0 {
			d.files.warnf("%s: %s: the datagrams queued on it (%d bytes next) are dropped: only their senders could send them again", d.where, what, n)
		}
		if protocol == unix.IPPROTO_UDP || protocol == unix.IPPROTO_UDPLITE {
			how, found, err := inetShutdown(d.pid, family, protocol, uint32(d.st.Ino))
			if err != nil {
				return nil, fmt.Errorf("%s: %s: shutdown state (sock_diag): %w", d.where, what, err)
			}
			if found && how&3 != 0 {
				e.Shutdown = skShutdown(how).Enum()
			}
		}
	}
	if family == unix.AF_INET6 {
		v6, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		if err != nil {
			return nil, fmt.Errorf("%s: IPV6_V6ONLY: %w", d.where, err)
		}
		e.V6Only = proto.Bool(v6 != 0)
	}
	if e.NsId, err = d.socketNetID(fd, what); err != nil {
		return nil, err
	}
	if e.IpOpts, err = dumpIPOpts(fd, family, typ, protocol); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", d.where, what, err)
	}
	if e.Opts, err = dumpSkOpts(fd); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", d.where, what, err)
	}
	if err := dumpInetOpts(fd, typ, e.Opts); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", d.where, what, err)
	}
	return &fdinfo.FileEntry{Id: e.Id, Isk: e}, nil
}

// dumpInetOpts adds the options of TCP and UDP sockets to o.
func dumpInetOpts(fd, typ int, o *skopts.SkOptsEntry) error {
	flag := func(level, opt int, name string) (*bool, error) {
		v, err := unix.GetsockoptInt(fd, level, opt)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return proto.Bool(v != 0), nil
	}
	var err error
	if o.Reuseaddr, err = flag(unix.SOL_SOCKET, unix.SO_REUSEADDR, "SO_REUSEADDR"); err != nil {
		return err
	}
	if o.SoReuseport, err = flag(unix.SOL_SOCKET, unix.SO_REUSEPORT, "SO_REUSEPORT"); err != nil {
		return err
	}
	if o.SoKeepalive, err = flag(unix.SOL_SOCKET, unix.SO_KEEPALIVE, "SO_KEEPALIVE"); err != nil {
		return err
	}
	if o.SoBroadcast, err = flag(unix.SOL_SOCKET, unix.SO_BROADCAST, "SO_BROADCAST"); err != nil {
		return err
	}
	if typ == unix.SOCK_STREAM {
		for _, k := range []struct {
			opt  int
			name string
			to   **uint32
		}{{unix.TCP_KEEPCNT, "TCP_KEEPCNT", &o.TcpKeepcnt}, {unix.TCP_KEEPIDLE, "TCP_KEEPIDLE", &o.TcpKeepidle}, {unix.TCP_KEEPINTVL, "TCP_KEEPINTVL", &o.TcpKeepintvl}} {
			v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, k.opt)
			if err != nil {
				return fmt.Errorf("%s: %w", k.name, err)
			}
			*k.to = proto.Uint32(uint32(v))
		}
	}
	return nil
}

// restoreInetOpts sets what dumpInetOpts read, after bind.
func restoreInetOpts(fd, typ int, o *skopts.SkOptsEntry) error {
	set := func(level, opt int, name string, v int) error {
		if err := unix.SetsockoptInt(fd, level, opt, v); err != nil {
			return fmt.Errorf("%s %d: %w", name, v, err)
		}
		return nil
	}
	b := func(p *bool) int {
		if p != nil && *p {
			return 1
		}
		return 0
	}
	for _, s := range []struct {
		opt  int
		name string
		v    *bool
	}{{unix.SO_REUSEADDR, "SO_REUSEADDR", o.Reuseaddr}, {unix.SO_REUSEPORT, "SO_REUSEPORT", o.SoReuseport},
		{unix.SO_KEEPALIVE, "SO_KEEPALIVE", o.SoKeepalive}, {unix.SO_BROADCAST, "SO_BROADCAST", o.SoBroadcast}} {
		if err := set(unix.SOL_SOCKET, s.opt, s.name, b(s.v)); err != nil {
			return err
		}
	}
	if typ == unix.SOCK_STREAM {
		for _, k := range []struct {
			opt  int
			name string
			v    *uint32
		}{{unix.TCP_KEEPCNT, "TCP_KEEPCNT", o.TcpKeepcnt}, {unix.TCP_KEEPIDLE, "TCP_KEEPIDLE", o.TcpKeepidle}, {unix.TCP_KEEPINTVL, "TCP_KEEPINTVL", o.TcpKeepintvl}} {
			if k.v != nil && *k.v > 0 {
				if err := set(unix.IPPROTO_TCP, k.opt, k.name, int(*k.v)); err != nil {
					return err
				}
			}
		}
	}
	return restoreSkOpts(fd, o)
}

func openInetSocket(r *fileRestore, e *fdinfo.FileEntry) (*os.File, error) {
	isk := e.GetIsk()
	if isk == nil {
		return nil, corruptf("files.img", "inet socket id %d without its entry", e.GetId())
	}
	family, typ := isk.GetFamily(), int(isk.GetType())
	if (family != unix.AF_INET && family != unix.AF_INET6) || inetKind(family, uint32(typ), isk.GetProto()) == "" {
		return nil, corruptf("files.img", "inet socket id %d: family %d, type %d, protocol %d", e.GetId(), family, typ, isk.GetProto())
	}
	src, err := inetSockaddr(family, isk.GetSrcAddr(), isk.GetSrcPort())
	if err != nil {
		return nil, corruptf("files.img", "inet socket id %d: source: %v", e.GetId(), err)
	}
	var dst unix.Sockaddr
	// A connected raw socket has no destination port.
	if isk.GetDstPort() != 0 || typ != unix.SOCK_STREAM && isk.GetState() == tcpEstablished && len(isk.GetDstAddr()) > 0 {
		if dst, err = inetSockaddr(family, isk.GetDstAddr(), isk.GetDstPort()); err != nil {
			return nil, corruptf("files.img", "inet socket id %d: destination: %v", e.GetId(), err)
		}
	}
	what := fmt.Sprintf("inet socket id %d (%s)", e.GetId(), inetDesc(uint32(typ), family, isk.GetProto(), src, dst))
	state := isk.GetState()
	connected := typ == unix.SOCK_STREAM && state != tcpListen && state != tcpClose
	var stream *tcpStream
	if typ == unix.SOCK_STREAM && state == tcpClose && dst != nil {
		// Ended by --tcp-close, with the bytes it had received.
		se, inq, _, err := tcpStreamOf(r, isk.GetIno())
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		if err == nil {
			ended := &tcpStream{e: se, inq: inq}
			fd := -1
			return socketInNet(r, isk.GetNsId(), what, &fd, isk.GetFlags(), fmt.Sprintf("socket:[%d]", isk.GetIno()), func() error {
				var err error
				if fd, err = unix.Socket(int(family), typ|unix.SOCK_CLOEXEC, int(isk.GetProto())); err != nil {
					return os.NewSyscallError("socket", err)
				}
				if family == unix.AF_INET6 {
					if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, b2i(isk.GetV6Only())); err != nil {
						return fmt.Errorf("IPV6_V6ONLY: %w", err)
					}
				}
				if err := restoreTCPEnded(fd, isk, src, dst, ended); err != nil {
					return err
				}
				if err := restoreInetOpts(fd, typ, isk.GetOpts()); err != nil {
					return err
				}
				return restoreIPOpts(fd, int(family), typ, int(isk.GetProto()), isk.GetIpOpts())
			})
		}
	}
	if connected {
		// Moved with its stream image, or dumped with --tcp-close.
		se, inq, outq, err := tcpStreamOf(r, isk.GetIno())
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		if err == nil {
			if dst == nil {
				return nil, corruptf("files.img", "%s: connected without a destination", what)
			}
			stream = &tcpStream{e: se, inq: inq, outq: outq}
			// The other end of a connection waiting in an accept queue.
			c, err := queuedConnOf(r, isk.GetIno())
			if err != nil {
				return nil, fmt.Errorf("%s: %w", what, err)
			}
			if c != nil {
				return openQueuedPeer(r, isk, src, dst, stream, c, what)
			}
		}
	}
	fd := -1
	build := func() error {
		var err error
		if fd, err = unix.Socket(int(family), typ|unix.SOCK_CLOEXEC, int(isk.GetProto())); err != nil {
			return os.NewSyscallError("socket", err)
		}
		// A raw socket has its "port", its protocol, from the start, and
		// then IPV6_V6ONLY can no longer change (EINVAL).
		if family == unix.AF_INET6 && typ != unix.SOCK_RAW {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, b2i(isk.GetV6Only())); err != nil {
				return fmt.Errorf("IPV6_V6ONLY: %w", err)
			}
		}
		if stream != nil {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1); err != nil {
				return fmt.Errorf("TCP_REPAIR: %w", err)
			}
			if err := restoreTCPStream(r, fd, isk, src, dst, stream); err != nil {
				return err
			}
			// After bind: SO_REUSEADDR would end the forced reuse repair
			// mode gives, which binding beside the listener of the same
			// port needs.
			if err := restoreInetOpts(fd, typ, isk.GetOpts()); err != nil {
				return err
			}
			return restoreIPOpts(fd, int(family), typ, int(isk.GetProto()), isk.GetIpOpts())
		}
		// A TCP socket that was connected comes back as one that has
		// ended (--tcp-close): not bound, for its port is its
		// listener's.
		ended := connected
		if isk.GetSrcPort() != 0 && !ended {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			setFreebind(fd, int(family), true)
			// Before bind: sockets that share a port with SO_REUSEPORT
			// (listeners among them) can only bind beside each other if
			// each has it when it binds.
			if isk.GetOpts().GetSoReuseport() {
				if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
					return fmt.Errorf("SO_REUSEPORT: %w", err)
				}
			}
			if err := unix.Bind(fd, src); err != nil {
				return fmt.Errorf("bind: %w", err)
			}
		}
		if err := restoreInetOpts(fd, typ, isk.GetOpts()); err != nil {
			return err
		}
		if err := setFreebind(fd, int(family), isk.GetIpOpts().GetFreebind()); err != nil {
			return err
		}
		if err := restoreIPOpts(fd, int(family), typ, int(isk.GetProto()), isk.GetIpOpts()); err != nil {
			return err
		}
		switch {
		case typ == unix.SOCK_STREAM && state == tcpListen:
			if err := unix.Listen(fd, int(isk.GetBacklog())); err != nil {
				return fmt.Errorf("listen: %w", err)
			}
		case typ != unix.SOCK_STREAM && dst != nil:
			if err := unix.Connect(fd, dst); err != nil {
				return fmt.Errorf("connect: %w", err)
			}
		}
		if how := isk.GetShutdown(); typ != unix.SOCK_STREAM && how != skopts.SkShutdown_NONE {
			m := map[skopts.SkShutdown]int{skopts.SkShutdown_READ: unix.SHUT_RD, skopts.SkShutdown_WRITE: unix.SHUT_WR, skopts.SkShutdown_BOTH: unix.SHUT_RDWR}[how]
			// A datagram socket that is not connected answers ENOTCONN,
			// and is shut down all the same (inet_shutdown).
			if err := unix.Shutdown(fd, m); err != nil && err != unix.ENOTCONN {
				return fmt.Errorf("shutdown %v: %w", how, err)
			}
		}
		return nil
	}
	return socketInNet(r, isk.GetNsId(), what, &fd, isk.GetFlags(), fmt.Sprintf("socket:[%d]", isk.GetIno()), build)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// socketInTreeNet runs build, which makes socket *fd and sets it up, in
// the restored tree's network namespace (a socket belongs to the one it
// is made in), then gives the socket the image's status flags. On
// failure it closes what build made.
func socketInTreeNet(r *fileRestore, what string, fd *int, flags uint32, name string, build func() error) (*os.File, error) {
	return socketInNet(r, 0, what, fd, flags, name, build)
}

// socketInNet is socketInTreeNet for a socket of the network namespace
// with image id nsID (its entry's ns_id; 0: the root task's).
func socketInNet(r *fileRestore, nsID uint32, what string, fd *int, flags uint32, name string, build func() error) (*os.File, error) {
	pid, err := r.netnsTask(nsID)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	same, err := nsthread.Same(pid, "net")
	if err == nil {
		if same {
			err = build()
		} else {
			err = nsthread.Run(func() error { return nsthread.Join(pid, "net", unix.CLONE_NEWNET) }, build)
		}
	}
	if err != nil {
		if *fd >= 0 {
			unix.Close(*fd)
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	status := int(flags) & (unix.O_NONBLOCK | unix.O_ASYNC)
	if _, err := unix.FcntlInt(uintptr(*fd), unix.F_SETFL, status); err != nil {
		unix.Close(*fd)
		return nil, fmt.Errorf("%s: set flags %#x: %w", what, status, err)
	}
	return os.NewFile(uintptr(*fd), name), nil
}

// socketOf returns ctcr's copy of the fd d and its address family if it
// is a socket of one of families; -1 (and no error) if it is anything
// else, another kind's.
func socketOf(d *fdDump, families ...int) (int, int, error) {
	if d.st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return -1, 0, nil
	}
	f, err := d.file()
	if err != nil {
		return -1, 0, err
	}
	fd := int(f.Fd())
	family, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return -1, 0, nil
	}
	for _, want := range families {
		if family == want {
			return fd, family, nil
		}
	}
	return -1, 0, nil
}
