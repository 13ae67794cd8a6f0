package criu

import (
	"encoding/binary"
	"fmt"
	"os"
	"unsafe"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	packetsock "github.com/checkpoint-restore/go-criu/v7/crit/images/packet-sock"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/kernel"
	"github.com/ctcr/ctcr/criu/proc"
)

// packetSockets are AF_PACKET sockets (DHCP clients, capture tools),
// SOCK_PACKET ones included:
// type, protocol, the interface they are bound to, their version,
// reserve, flags (auxdata, origdev, vnet header, loss), timestamp
// source, copy threshold, multicast memberships and fanout group, as
// packet sock_diag reports them, in CRIU's packet_sock_entry
// (criu/sk-packet.c). An RX or TX ring is set up again with its
// geometry (and mapped again where the task mapped it, mem.go): it comes
// back empty, as in CRIU. Frames queued on a socket or in its ring are
// dropped with a warning.
var packetSockets = fileKind{
	name:   "packet socket",
	fdType: fdinfo.FdTypes_PACKETSK,
	dump:   dumpPacketSocket,
	open:   openPacketSocket,
}

// packetDiag is what packet sock_diag says of one socket.
type packetDiag struct {
	typ, proto                      uint32
	index, version, reserve, thresh uint32
	tstamp, flags                   uint32
	mclist                          []*packetsock.PacketMclist
	fanout                          *uint32
	rxRing, txRing                  *packetsock.PacketRing
}

func parsePacketDiag(b []byte) (uint32, *packetDiag, error) {
	if len(b) < kernel.SizeofPacketDiagMsg {
		return 0, nil, fmt.Errorf("packet_diag_msg of %d bytes", len(b))
	}
	le := binary.LittleEndian
	d := &packetDiag{typ: uint32(b[1]), proto: uint32(le.Uint16(b[2:]))} // ntohs(po->num)
	ino := le.Uint32(b[4:])
	for a := b[kernel.SizeofPacketDiagMsg:]; len(a) >= 4; {
		l, t := int(le.Uint16(a)), le.Uint16(a[2:])
		if l < 4 || l > len(a) {
			return 0, nil, fmt.Errorf("packet_diag attribute of %d bytes in %d", l, len(a))
		}
		v := a[4:l]
		switch t {
		case kernel.PACKET_DIAG_INFO:
			if len(v) >= kernel.SizeofPacketDiagInfo {
				d.index, d.version, d.reserve = le.Uint32(v), le.Uint32(v[4:]), le.Uint32(v[8:])
				d.thresh, d.tstamp, d.flags = le.Uint32(v[12:]), le.Uint32(v[16:]), le.Uint32(v[20:])
			}
		case kernel.PACKET_DIAG_MCLIST:
			for m := v; len(m) >= kernel.SizeofPacketDiagMclist; m = m[kernel.SizeofPacketDiagMclist:] {
				alen := min(int(le.Uint16(m[10:])), 32)
				addr := make([]byte, alen) // present even when empty: the field is required
				copy(addr, m[12:12+alen])
				d.mclist = append(d.mclist, &packetsock.PacketMclist{Index: proto.Uint32(le.Uint32(m)), Type: proto.Uint32(uint32(le.Uint16(m[8:]))), Addr: addr})
			}
		case kernel.PACKET_DIAG_RX_RING, kernel.PACKET_DIAG_TX_RING:
			if len(v) < kernel.SizeofPacketDiagRing {
				return 0, nil, fmt.Errorf("packet_diag_ring of %d bytes", len(v))
			}
			r := &packetsock.PacketRing{BlockSize: proto.Uint32(le.Uint32(v)), BlockNr: proto.Uint32(le.Uint32(v[4:])),
				FrameSize: proto.Uint32(le.Uint32(v[8:])), FrameNr: proto.Uint32(le.Uint32(v[12:])), RetireTmo: proto.Uint32(le.Uint32(v[16:])),
				SizeofPriv: proto.Uint32(le.Uint32(v[20:])), Features: proto.Uint32(le.Uint32(v[24:]))}
			if t == kernel.PACKET_DIAG_RX_RING {
				d.rxRing = r
			} else {
				d.txRing = r
			}
		case kernel.PACKET_DIAG_FANOUT:
			if len(v) >= 4 {
				d.fanout = proto.Uint32(le.Uint32(v))
			}
		}
		a = a[min((l+3)&^3, len(a)):]
	}
	return ino, d, nil
}

func dumpPacketSocket(d *fdDump) (*fdinfo.FileEntry, error) {
	fd, _, err := socketOf(d, unix.AF_PACKET)
	if fd < 0 || err != nil {
		return nil, err
	}
	req := make([]byte, kernel.SizeofPacketDiagReq)
	req[0] = unix.AF_PACKET
	binary.LittleEndian.PutUint32(req[4:], uint32(d.st.Ino))
	binary.LittleEndian.PutUint32(req[8:], kernel.PACKET_SHOW_INFO|kernel.PACKET_SHOW_MCLIST|kernel.PACKET_SHOW_RING_CFG|kernel.PACKET_SHOW_FANOUT)
	var pd *packetDiag
	err = sockDiag(d.pid, req, func(b []byte) error {
		ino, got, err := parsePacketDiag(b)
		if err == nil && ino == uint32(d.st.Ino) {
			pd = got
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s (%s): packet sock_diag: %w", d.where, d.link, err)
	}
	what := fmt.Sprintf("%s (packet socket)", d.link)
	if pd == nil {
		return nil, fmt.Errorf("%s: %s: sock_diag does not know it", d.where, what)
	}
	e := &packetsock.PacketSockEntry{
		Id: proto.Uint32(d.files.nextID()), Type: proto.Uint32(pd.typ), Protocol: proto.Uint32(pd.proto), Flags: proto.Uint32(d.flags),
		Ifindex: proto.Uint32(pd.index), Fown: noFown(), Version: proto.Uint32(pd.version), Reserve: proto.Uint32(pd.reserve),
		AuxData: proto.Bool(pd.flags&kernel.PDI_AUXDATA != 0), OrigDev: proto.Bool(pd.flags&kernel.PDI_ORIGDEV != 0),
		VnetHdr: proto.Bool(pd.flags&kernel.PDI_VNETHDR != 0), Loss: proto.Bool(pd.flags&kernel.PDI_LOSS != 0),
		Timestamp: proto.Uint32(pd.tstamp), CopyThresh: proto.Uint32(pd.thresh), Mclist: pd.mclist, Fanout: pd.fanout,
		RxRing: pd.rxRing, TxRing: pd.txRing,
	}
	if pd.rxRing != nil || pd.txRing != nil {
		d.files.warnf("%s: %s: its ring comes back empty: the frames in it are dropped", d.where, what)
	}
	if e.Opts, err = dumpSkOpts(fd); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", d.where, what, err)
	}
	if n, err := unix.IoctlGetInt(fd, unix.SIOCINQ); err == nil && n > 0 {
		d.files.warnf("%s: %s: the frames queued on it (%d bytes next) are dropped: they cannot be queued again", d.where, what, n)
	}
	return &fdinfo.FileEntry{Id: e.Id, Psk: e}, nil
}

func openPacketSocket(r *fileRestore, e *fdinfo.FileEntry) (*os.File, error) {
	p := e.GetPsk()
	if p == nil {
		return nil, corruptf("files.img", "packet socket id %d without its entry", e.GetId())
	}
	what := fmt.Sprintf("packet socket id %d (type %d, protocol %#x, interface %d)", e.GetId(), p.GetType(), p.GetProtocol(), p.GetIfindex())
	if p.GetType() != unix.SOCK_RAW && p.GetType() != unix.SOCK_DGRAM && p.GetType() != unix.SOCK_PACKET {
		return nil, corruptf("files.img", "%s: not a packet socket type", what)
	}
	proto16 := uint16(p.GetProtocol())
	htons := proto16<<8 | proto16>>8
	fd := -1
	build := func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_PACKET, int(p.GetType())|unix.SOCK_CLOEXEC, int(htons)); err != nil {
			return os.NewSyscallError("socket(AF_PACKET)", err)
		}
		if p.GetType() == unix.SOCK_PACKET {
			return bindSpkt(fd, p)
		}
		set := func(opt int, name string, v uint32) error {
			if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, opt, int(v)); err != nil {
				return fmt.Errorf("%s %d: %w", name, v, err)
			}
			return nil
		}
		for _, o := range []struct {
			opt  int
			name string
			v    uint32
		}{{unix.PACKET_VERSION, "PACKET_VERSION", p.GetVersion()}, {unix.PACKET_RESERVE, "PACKET_RESERVE", p.GetReserve()},
			{unix.PACKET_AUXDATA, "PACKET_AUXDATA", uint32(b2i(p.GetAuxData()))}, {unix.PACKET_ORIGDEV, "PACKET_ORIGDEV", uint32(b2i(p.GetOrigDev()))},
			{unix.PACKET_VNET_HDR, "PACKET_VNET_HDR", uint32(b2i(p.GetVnetHdr()))}, {unix.PACKET_LOSS, "PACKET_LOSS", uint32(b2i(p.GetLoss()))},
			{unix.PACKET_TIMESTAMP, "PACKET_TIMESTAMP", p.GetTimestamp()}} {
			if o.v != 0 {
				if err := set(o.opt, o.name, o.v); err != nil {
					return err
				}
			}
		}
		if p.GetCopyThresh() != 0 {
			if err := set(unix.PACKET_COPY_THRESH, "PACKET_COPY_THRESH", p.GetCopyThresh()); err != nil {
				return err
			}
		}
		if p.GetIfindex() != 0 {
			if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons, Ifindex: int(p.GetIfindex())}); err != nil {
				return fmt.Errorf("bind to interface %d: %w", p.GetIfindex(), err)
			}
		}
		for _, m := range p.GetMclist() {
			mr := unix.PacketMreq{Ifindex: int32(m.GetIndex()), Type: uint16(m.GetType()), Alen: uint16(len(m.GetAddr()))}
			copy(mr.Address[:], m.GetAddr())
			if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mr); err != nil {
				return fmt.Errorf("membership type %d on interface %d: %w", m.GetType(), m.GetIndex(), err)
			}
		}
		// The rings after the version and reserve they depend on; the
		// request is tpacket_req3 for every version (the kernel reads
		// the first four fields of it for V1 and V2).
		for _, r := range []struct {
			opt  int
			name string
			ring *packetsock.PacketRing
		}{{unix.PACKET_RX_RING, "PACKET_RX_RING", p.GetRxRing()}, {unix.PACKET_TX_RING, "PACKET_TX_RING", p.GetTxRing()}} {
			if r.ring == nil {
				continue
			}
			req := unix.TpacketReq3{Block_size: r.ring.GetBlockSize(), Block_nr: r.ring.GetBlockNr(), Frame_size: r.ring.GetFrameSize(),
				Frame_nr: r.ring.GetFrameNr(), Retire_blk_tov: r.ring.GetRetireTmo(), Sizeof_priv: r.ring.GetSizeofPriv(), Feature_req_word: r.ring.GetFeatures()}
			if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, r.opt, &req); err != nil {
				return fmt.Errorf("%s of %d blocks of %d bytes: %w", r.name, req.Block_nr, req.Block_size, err)
			}
		}
		if p.Fanout != nil {
			if err := set(unix.PACKET_FANOUT, "PACKET_FANOUT", p.GetFanout()); err != nil {
				return err
			}
		}
		return restoreSkOpts(fd, p.GetOpts())
	}
	return socketInTreeNet(r, what, &fd, p.GetFlags(), "packet socket", build)
}

// packetRingVMA returns the id of the packet socket whose ring mapping
// m is ("socket:[INODE]" in maps): the socket one of the tree's fds
// holds, dumped before the memory, whose ring restore sets up again and
// maps from that socket. A socket mapping no fd of the tree holds, or a
// socket that is not a packet socket with a ring, is refused by name.
func packetRingVMA(files *fileTable, m proc.Mapping, where string) (uint32, error) {
	for _, o := range files.opened {
		if o.ino != m.Inode || unix.Major(o.dev) != m.Major || unix.Minor(o.dev) != m.Minor {
			continue
		}
		if psk := files.entries[o.id-1].GetPsk(); psk != nil && (psk.RxRing != nil || psk.TxRing != nil) {
			return o.id, nil
		}
		return 0, fmt.Errorf("%s: %s is a mapping of a socket with no packet ring (fd %d of task %d): %w", where, m.Path, o.fd, o.pid, ErrUnsupported)
	}
	return 0, fmt.Errorf("%s: %s is the ring of a socket no fd of the tree holds any more: %w", where, m.Path, ErrUnsupported)
}

// bindSpkt binds a SOCK_PACKET socket (the old interface, which has no
// packet options) to the interface of the entry by its name, as that
// interface is called in the restored tree's network namespace, and
// sets its socket options.
func bindSpkt(fd int, p *packetsock.PacketSockEntry) error {
	if p.GetIfindex() != 0 {
		ifr, err := unix.NewIfreq("")
		if err != nil {
			return err
		}
		ifr.SetUint32(p.GetIfindex())
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFNAME, ifr); err != nil {
			return fmt.Errorf("name of interface %d: %w", p.GetIfindex(), err)
		}
		// struct sockaddr_pkt as far as bind reads it: sizeof(struct
		// sockaddr), the family and 14 bytes of device name.
		var sa [16]byte
		binary.LittleEndian.PutUint16(sa[:], unix.AF_PACKET)
		copy(sa[2:15], ifr.Name())
		if _, _, e := unix.Syscall(unix.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(&sa[0])), uintptr(len(sa))); e != 0 {
			return fmt.Errorf("bind to interface %s: %w", ifr.Name(), e)
		}
	}
	return restoreSkOpts(fd, p.GetOpts())
}
