package criu

import (
	"encoding/binary"
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	packetsock "github.com/checkpoint-restore/go-criu/v7/crit/images/packet-sock"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/kernel"
)

// packetSockets are AF_PACKET sockets (DHCP clients, capture tools):
// type, protocol, the interface they are bound to, their version,
// reserve, flags (auxdata, origdev, vnet header, loss), timestamp
// source, copy threshold, multicast memberships and fanout group, as
// packet sock_diag reports them, in CRIU's packet_sock_entry
// (criu/sk-packet.c). A socket with an RX or TX ring (mapped memory the
// kernel fills) is refused. Frames queued on one are dropped with a
// warning.
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
	rings                           bool
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
			d.rings = true
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
	if pd.rings {
		return nil, d.unsupported(what + " with an RX or TX ring")
	}
	e := &packetsock.PacketSockEntry{
		Id: proto.Uint32(d.files.nextID()), Type: proto.Uint32(pd.typ), Protocol: proto.Uint32(pd.proto), Flags: proto.Uint32(d.flags),
		Ifindex: proto.Uint32(pd.index), Fown: noFown(), Version: proto.Uint32(pd.version), Reserve: proto.Uint32(pd.reserve),
		AuxData: proto.Bool(pd.flags&kernel.PDI_AUXDATA != 0), OrigDev: proto.Bool(pd.flags&kernel.PDI_ORIGDEV != 0),
		VnetHdr: proto.Bool(pd.flags&kernel.PDI_VNETHDR != 0), Loss: proto.Bool(pd.flags&kernel.PDI_LOSS != 0),
		Timestamp: proto.Uint32(pd.tstamp), CopyThresh: proto.Uint32(pd.thresh), Mclist: pd.mclist, Fanout: pd.fanout,
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
	if p.GetType() != unix.SOCK_RAW && p.GetType() != unix.SOCK_DGRAM {
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
		if p.Fanout != nil {
			if err := set(unix.PACKET_FANOUT, "PACKET_FANOUT", p.GetFanout()); err != nil {
				return err
			}
		}
		return restoreSkOpts(fd, p.GetOpts())
	}
	return socketInTreeNet(r, what, &fd, p.GetFlags(), "packet socket", build)
}
