package criu

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	skinet "github.com/checkpoint-restore/go-criu/v7/crit/images/sk-inet"
	tcpstream "github.com/checkpoint-restore/go-criu/v7/crit/images/tcp-stream"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/kernel"
)

// An established TCP connection whose two ends are both in the dumped
// tree moves with TCP repair mode, as CRIU's libsoccr moves it. In repair
// mode a socket sends nothing (no ACK, no retransmit, no FIN or RST when
// closed), and its state can be read and set from outside:
//
//	tcp-stream-INO.img: TCP_STREAM magic, one tcp_stream_entry (the
//	    sequence numbers of both queues, their lengths and how much of
//	    the send queue was never sent, the options the handshake agreed
//	    on, the windows, the timestamp), then the receive queue's bytes,
//	    then the send queue's
//
// Dump turns repair mode on through ctcr's copy of the socket and reads
// both queues with MSG_PEEK; the tasks are killed with their sockets
// still in repair mode, so the connection's end says nothing to anyone.
// If the tasks run on, repair mode is turned off again before they do.
//
// Restore makes the socket in repair mode, sets both sequence numbers,
// binds and connects it (no handshake happens in repair mode), sets the
// options and windows, puts the queues back (bytes received and sent
// but not acknowledged, as they were), leaves repair mode, then sends
// what had never been sent.
//
// A connection with an end outside the tree would need the network held
// still while its other end moves (CRIU drops its packets with netfilter
// meanwhile): it is refused, or ended with --tcp-close.

// Half-closed connections move the same way. A FIN counts as one byte
// of the sequence: the sequence numbers dumped include the FIN this end
// sent (FIN_WAIT1, FIN_WAIT2, CLOSING, LAST_ACK) and the one it received
// (CLOSE_WAIT, CLOSING, LAST_ACK). Restore leaves the FINs out, restores
// the connection as established, and replays the shutdown: once out of
// repair mode, an end that had sent its FIN is shut down for writing
// again and sends it (after the bytes it had never sent), and an end
// that had received one receives it again from its peer if its peer is
// in the tree; from a peer outside the tree (--tcp-established) restore
// makes that FIN itself, as soccr does (sk_tcp_fin.go).

// tcpRepairable reports whether a connection in state moves with repair.
func tcpRepairable(state uint8) bool {
	switch state {
	case tcpEstablished, kernel.TCP_SYN_SENT, kernel.TCP_FIN_WAIT1, kernel.TCP_FIN_WAIT2, kernel.TCP_CLOSE_WAIT, kernel.TCP_CLOSING, kernel.TCP_LAST_ACK:
		return true
	}
	return false
}

// tcpSentFIN and tcpGotFIN say whether an end in state has sent its FIN
// (its write sequence includes it), or has received its peer's.
func tcpSentFIN(state uint32) bool {
	switch state {
	case kernel.TCP_FIN_WAIT1, kernel.TCP_FIN_WAIT2, kernel.TCP_CLOSING, kernel.TCP_LAST_ACK:
		return true
	}
	return false
}

func tcpGotFIN(state uint32) bool {
	switch state {
	case kernel.TCP_CLOSE_WAIT, kernel.TCP_CLOSING, kernel.TCP_LAST_ACK:
		return true
	}
	return false
}

// tcpEnd is one end of a connection, as "addr:port->addr:port". An IPv6
// socket's IPv4-mapped address (::ffff:a.b.c.d) is written as IPv4, as
// the other end, an IPv4 socket, may see it.
func tcpEnd(src, dst unix.Sockaddr) string {
	return sockaddrString(unmap(src)) + "->" + sockaddrString(unmap(dst))
}

func unmap(sa unix.Sockaddr) unix.Sockaddr {
	a, ok := sa.(*unix.SockaddrInet6)
	if !ok || [12]byte(a.Addr[:12]) != [12]byte{10: 0xff, 11: 0xff} {
		return sa
	}
	v4 := &unix.SockaddrInet4{Port: a.Port}
	copy(v4.Addr[:], a.Addr[12:])
	return v4
}

// tcpConns is what the inet kind keeps of the connections it dumped with
// repair, to check in finish that each one's peer was dumped too.
type tcpConns struct {
	ends  map[string]string // "src->dst" -> where it was dumped
	peers map[string]string // "src->dst" -> the peer's "dst->src"
	// inos: the socket inode of each end dumped.
	inos map[string]uint32
}

func tcpState(t *fileTable) *tcpConns {
	return t.kindState("tcp connections", func() any {
		return &tcpConns{ends: map[string]string{}, peers: map[string]string{}, inos: map[string]uint32{}}
	}).(*tcpConns)
}

// finishTCP refuses a connection whose other end the dump did not meet,
// unless --tcp-established held it still.
func finishTCP(t *fileTable) error {
	if err := checkAcceptQueues(t); err != nil {
		return err
	}
	st, ok := t.kinds["tcp connections"].(*tcpConns)
	if !ok {
		return nil
	}
	var ends []string
	for end := range st.ends {
		ends = append(ends, end)
	}
	sort.Strings(ends)
	if t.tcpEstablished {
		return nil
	}
	for _, end := range ends {
		if _, ok := st.ends[st.peers[end]]; !ok {
			return fmt.Errorf("%s: TCP connection %s: its other end is outside the dumped tree: --tcp-established moves it, holding its segments still meanwhile (--tcp-close restores it as ended): %w",
				st.ends[end], end, ErrUnsupported)
		}
	}
	return nil
}

// dumpTCPStream puts the established connection of fd (ctcr's copy of
// the task's socket, entry e) in repair mode and writes its stream image.
func dumpTCPStream(d *fdDump, fd int, e *skinet.InetSkEntry, src, dst unix.Sockaddr, what string) error {
	fail := func(step string, err error) error { return fmt.Errorf("%s: %s: %s: %w", d.where, what, step, err) }
	if d.files.tcpEstablished {
		if err := d.files.lockNetwork(d.pid, src, dst); err != nil {
			return fail("hold the connection still", err)
		}
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1); err != nil {
		return fail("TCP_REPAIR", err)
	}
	// Repair mode off again if the tasks run on; a copy ctcr holds to do
	// it, since ctcr's dup of the fd is closed after this fd's dump.
	keep, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 0)
		return fail("dup", err)
	}
	d.files.giveBacks = append(d.files.giveBacks, func() error {
		if err := unix.SetsockoptInt(keep, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF_NO_WP); err != nil {
			return fmt.Errorf("%s: %s: leave TCP repair mode: %w", d.where, what, err)
		}
		return nil
	})
	d.files.closers = append(d.files.closers, func() { unix.Close(keep) })

	seq := func(queue int) (uint32, error) {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, queue); err != nil {
			return 0, err
		}
		v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ)
		return uint32(v), err
	}
	inSeq, err := seq(kernel.TCP_RECV_QUEUE)
	if err != nil {
		return fail("receive queue sequence", err)
	}
	inq, err := peekQueue(fd, kernel.TCP_RECV_QUEUE, unix.SIOCINQ, 0)
	if err != nil {
		return fail("receive queue", err)
	}
	outSeq, err := seq(kernel.TCP_SEND_QUEUE)
	if err != nil {
		return fail("send queue sequence", err)
	}
	// A FIN sent and not acknowledged yet counts in SIOCOUTQ, and, not
	// sent yet, in SIOCOUTQNSD: it is no byte of the queue.
	fin := 0
	if tcpSentFIN(e.GetState()) {
		fin = 1
	}
	outq, err := peekQueue(fd, kernel.TCP_SEND_QUEUE, unix.SIOCOUTQ, fin)
	if err != nil {
		return fail("send queue", err)
	}
	unsent, err := unix.IoctlGetInt(fd, unix.SIOCOUTQNSD)
	if err != nil {
		return fail("SIOCOUTQNSD", err)
	}
	if unsent > 0 {
		unsent -= fin
	}
	info, err := kernel.TCPInfoBytes(fd)
	if err != nil || len(info) <= kernel.TCPInfoWscaleOffset {
		return fail("TCP_INFO", err)
	}
	mss, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_MAXSEG)
	if err != nil {
		return fail("TCP_MAXSEG", err)
	}
	win, err := kernel.GetTCPRepairWindow(fd)
	if err != nil {
		return fail("TCP_REPAIR_WINDOW", err)
	}
	s := &tcpstream.TcpStreamEntry{
		InqLen: proto.Uint32(uint32(len(inq))), InqSeq: proto.Uint32(inSeq),
		OutqLen: proto.Uint32(uint32(len(outq))), OutqSeq: proto.Uint32(outSeq), UnsqLen: proto.Uint32(uint32(unsent)),
		OptMask: proto.Uint32(uint32(info[5])), SndWscale: proto.Uint32(uint32(info[kernel.TCPInfoWscaleOffset] & 0xf)),
		RcvWscale: proto.Uint32(uint32(info[kernel.TCPInfoWscaleOffset] >> 4)), MssClamp: proto.Uint32(uint32(mss)),
		SndWl1: proto.Uint32(win.SndWl1), SndWnd: proto.Uint32(win.SndWnd), MaxWindow: proto.Uint32(win.MaxWindow),
		RcvWnd: proto.Uint32(win.RcvWnd), RcvWup: proto.Uint32(win.RcvWup),
	}
	if info[5]&kernel.TCPI_OPT_TIMESTAMPS != 0 {
		ts, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP)
		if err != nil {
			return fail("TCP_TIMESTAMP", err)
		}
		s.Timestamp = proto.Uint32(uint32(ts))
	}
	nodelay, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY)
	if err != nil {
		return fail("TCP_NODELAY", err)
	}
	cork, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_CORK)
	if err != nil {
		return fail("TCP_CORK", err)
	}
	s.Nodelay, s.Cork = proto.Bool(nodelay != 0), proto.Bool(cork != 0)
	d.files.addImageAs(images.TCPStream, images.TCPStream.FileName(int(e.GetIno())), s, append(inq, outq...))

	st := tcpState(d.files)
	end := tcpEnd(src, dst)
	st.ends[end] = d.where
	st.inos[end] = e.GetIno()
	st.peers[end] = tcpEnd(dst, src)
	return nil
}

// peekQueue reads queue (in repair mode) without taking from it: the
// length ioctl says how much there is, fin more than its bytes when it
// counts a FIN too.
func peekQueue(fd, queue int, lenIoctl uint, fin int) ([]byte, error) {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, queue); err != nil {
		return nil, err
	}
	n, err := unix.IoctlGetInt(fd, lenIoctl)
	if err == nil && n > 0 {
		n -= fin
	}
	if err != nil || n <= 0 {
		return nil, err
	}
	buf := make([]byte, n)
	got, _, err := unix.Recvfrom(fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	if err != nil {
		return nil, err
	}
	if got != n {
		return nil, fmt.Errorf("peeked %d bytes of %d", got, n)
	}
	return buf, nil
}

// tcpStream is a connection's stream image, read.
type tcpStream struct {
	e         *tcpstream.TcpStreamEntry
	inq, outq []byte
}

// tcpStreamOf reads the stream image of the socket with inode ino.
func tcpStreamOf(r *fileRestore, ino uint32) (*tcpstream.TcpStreamEntry, []byte, []byte, error) {
	name := images.TCPStream.FileName(int(ino))
	path := r.cp.dir.Path(name)
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, nil, err
	}
	defer f.Close()
	rd, err := images.NewReader(f, images.TCPStream, path)
	if err != nil {
		return nil, nil, nil, err
	}
	s := &tcpstream.TcpStreamEntry{}
	if err := rd.Next(s); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, nil, corruptf(name, "no entry")
		}
		return nil, nil, nil, err
	}
	const max = 1 << 30
	if s.GetInqLen() > max || s.GetOutqLen() > max || s.GetUnsqLen() > s.GetOutqLen() {
		return nil, nil, nil, corruptf(name, "queues of %d and %d bytes, %d unsent", s.GetInqLen(), s.GetOutqLen(), s.GetUnsqLen())
	}
	data, err := rd.ReadPayload(int64(s.GetInqLen()) + int64(s.GetOutqLen()))
	if err != nil {
		return nil, nil, nil, err
	}
	return s, data[:s.GetInqLen()], data[s.GetInqLen():], nil
}

// restoreTCPStream makes fd, a new TCP socket in repair mode, the end of
// the connection src -> dst the image holds; repair mode is left.
func restoreTCPStream(r *fileRestore, fd int, isk *skinet.InetSkEntry, src, dst unix.Sockaddr, ts *tcpStream) error {
	if isk.GetState() == kernel.TCP_SYN_SENT {
		return restoreTCPSynSent(r, fd, isk, src, dst, ts.e)
	}
	s, inq, outq := ts.e, ts.inq, ts.outq
	setSeq := func(queue int, seq uint32) error {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, queue); err != nil {
			return err
		}
		return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ, int(seq))
	}
	// Without the FINs: they are sent again once out of repair mode.
	var sentFIN, gotFIN uint32
	if tcpSentFIN(isk.GetState()) {
		sentFIN = 1
	}
	if tcpGotFIN(isk.GetState()) {
		gotFIN = 1
	}
	if err := setSeq(kernel.TCP_RECV_QUEUE, s.GetInqSeq()-s.GetInqLen()-gotFIN); err != nil {
		return fmt.Errorf("receive sequence: %w", err)
	}
	if err := setSeq(kernel.TCP_SEND_QUEUE, s.GetOutqSeq()-s.GetOutqLen()-sentFIN); err != nil {
		return fmt.Errorf("send sequence: %w", err)
	}
	setFreebind(fd, int(isk.GetFamily()), true)
	if err := unix.Bind(fd, src); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	if err := setFreebind(fd, int(isk.GetFamily()), isk.GetIpOpts().GetFreebind()); err != nil {
		return err
	}
	if err := unix.Connect(fd, dst); err != nil {
		return fmt.Errorf("connect in repair mode: %w", err)
	}
	opts := []kernel.TCPRepairOpt{{Code: unix.TCPOPT_MAXSEG, Val: s.GetMssClamp()}}
	if s.GetOptMask()&kernel.TCPI_OPT_WSCALE != 0 {
		opts = append(opts, kernel.TCPRepairOpt{Code: unix.TCPOPT_WINDOW, Val: s.GetSndWscale() | s.GetRcvWscale()<<16})
	}
	if s.GetOptMask()&kernel.TCPI_OPT_SACK != 0 {
		opts = append(opts, kernel.TCPRepairOpt{Code: unix.TCPOPT_SACK_PERMITTED})
	}
	if s.GetOptMask()&kernel.TCPI_OPT_TIMESTAMPS != 0 {
		opts = append(opts, kernel.TCPRepairOpt{Code: unix.TCPOPT_TIMESTAMP})
	}
	if err := kernel.SetTCPRepairOptions(fd, opts); err != nil {
		return fmt.Errorf("TCP_REPAIR_OPTIONS: %w", err)
	}
	if s.GetOptMask()&kernel.TCPI_OPT_TIMESTAMPS != 0 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP, int(s.GetTimestamp())); err != nil {
			return fmt.Errorf("TCP_TIMESTAMP: %w", err)
		}
	}
	// The queues go back whole: room for them beyond the buffer sizes,
	// which the kernel counts with overhead. Set back in the final step.
	room := 2*(len(inq)+len(outq)) + 1<<20
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, room)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, room)
	sent := outq[:len(outq)-int(s.GetUnsqLen())]
	for _, q := range []struct {
		queue int
		data  []byte
		name  string
	}{{kernel.TCP_RECV_QUEUE, inq, "receive"}, {kernel.TCP_SEND_QUEUE, sent, "send"}} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, q.queue); err != nil {
			return err
		}
		if err := sendAll(fd, q.data); err != nil {
			return fmt.Errorf("%s queue, %d bytes: %w", q.name, len(q.data), err)
		}
	}
	if s.SndWnd != nil {
		// rcv_wup may not be past the receive sequence, which no longer
		// counts the FIN received.
		rcvWup := s.GetRcvWup()
		if gotFIN != 0 && rcvWup == s.GetInqSeq() {
			rcvWup -= gotFIN
		}
		w := kernel.TCPRepairWindow{SndWl1: s.GetSndWl1(), SndWnd: s.GetSndWnd(), MaxWindow: s.GetMaxWindow(), RcvWnd: s.GetRcvWnd(), RcvWup: rcvWup}
		if err := kernel.SetTCPRepairWindow(fd, w); err != nil {
			return fmt.Errorf("TCP_REPAIR_WINDOW: %w", err)
		}
	}
	// Out of repair mode only once every socket of the tree exists: a
	// segment to an end not made yet would be answered with a reset.
	unsent := outq[len(sent):]
	// The peer's FIN, from a peer outside the tree, is made again
	// (sk_tcp_fin.go), then this end's own.
	peerOutside := gotFIN != 0 && !tcpPeerInImages(r, src, dst)
	if peerOutside {
		r.lateFinals = append(r.lateFinals, func() error {
			fail := func(step string, err error) error {
				return fmt.Errorf("TCP connection %s (socket %d): %s: %w", tcpEnd(src, dst), isk.GetIno(), step, err)
			}
			win := s.GetSndWnd() >> s.GetSndWscale()
			if err := sendPeerFIN(r, fd, src, dst, s.GetInqSeq()-1, s.GetOutqSeq()-s.GetOutqLen()-sentFIN, win); err != nil {
				return fail("the FIN its peer had sent", err)
			}
			if sentFIN != 0 {
				if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
					return fail(fmt.Sprintf("shut down for writing again (%s)", tcpStateNames[uint8(isk.GetState())]), err)
				}
			}
			return nil
		})
	}
	r.finals = append(r.finals, func() error {
		fail := func(step string, err error) error {
			return fmt.Errorf("TCP connection %s (socket %d): %s: %w", tcpEnd(src, dst), isk.GetIno(), step, err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 0); err != nil {
			return fail("leave repair mode", err)
		}
		// Queued, not waited for: the peer may have no room yet. Room in
		// the send buffer for it all, then its own size back.
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 2*len(outq)+1<<20)
		for b := unsent; len(b) > 0; {
			n, err := unix.SendmsgN(fd, b, nil, nil, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return fail(fmt.Sprintf("queue the %d bytes never sent", len(unsent)), err)
			}
			b = b[n:]
		}
		if sentFIN != 0 && !peerOutside {
			// After the bytes never sent: the FIN follows them.
			if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
				return fail(fmt.Sprintf("shut down for writing again (%s)", tcpStateNames[uint8(isk.GetState())]), err)
			}
		}
		if err := restoreSkOpts(fd, isk.GetOpts()); err != nil {
			return fail("buffer sizes", err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, b2i(s.GetNodelay())); err != nil {
			return fail("TCP_NODELAY", err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_CORK, b2i(s.GetCork())); err != nil {
			return fail("TCP_CORK", err)
		}
		return nil
	})
	return nil
}

func sendAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.SendmsgN(fd, b, nil, nil, unix.MSG_NOSIGNAL)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// A connection dumped with --tcp-close comes back ended, as CRIU brings
// it back: what it had received and the task had not read yet can still
// be read, then reads see the end of the stream and writes fail. Its
// entry says state CLOSE with the addresses it had; its stream image
// holds only the receive queue, read with MSG_PEEK (no repair mode
// needed, so in any state: CLOSE_WAIT, FIN_WAIT2, ...).

// dumpTCPEnded writes the stream image of fd, a connection --tcp-close
// ends: its receive queue.
func dumpTCPEnded(d *fdDump, fd int, e *skinet.InetSkEntry, what string) error {
	fail := func(step string, err error) error { return fmt.Errorf("%s: %s: %s: %w", d.where, what, step, err) }
	n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if err != nil {
		return fail("SIOCINQ", err)
	}
	var inq []byte
	if n > 0 {
		inq = make([]byte, n)
		got, _, err := unix.Recvfrom(fd, inq, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err != nil {
			return fail("peek at the receive queue", err)
		}
		if got != n {
			return fail("peek at the receive queue", fmt.Errorf("peeked %d bytes of %d", got, n))
		}
	}
	e.State = proto.Uint32(tcpClose)
	s := &tcpstream.TcpStreamEntry{
		InqLen: proto.Uint32(uint32(n)), InqSeq: proto.Uint32(0), OutqLen: proto.Uint32(0), OutqSeq: proto.Uint32(0),
		OptMask: proto.Uint32(0), SndWscale: proto.Uint32(0), MssClamp: proto.Uint32(0),
	}
	d.files.addImageAs(images.TCPStream, images.TCPStream.FileName(int(e.GetIno())), s, inq)
	return nil
}

// tcpEndedSeq is the sequence number an ended connection is given in
// both directions: it has no peer to agree with.
const tcpEndedSeq = 1 << 24

// restoreTCPEnded makes fd, a new TCP socket, a connection src -> dst
// that has ended with ts's receive queue still to be read. In repair
// mode the socket connects without a handshake (and binds beside the
// listener of its port), takes the bytes into its receive queue and is
// shut down both ways without a FIN going out; out of repair mode, reads
// return the bytes, then 0.
func restoreTCPEnded(fd int, isk *skinet.InetSkEntry, src, dst unix.Sockaddr, ts *tcpStream) error {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1); err != nil {
		return fmt.Errorf("TCP_REPAIR: %w", err)
	}
	for _, q := range []int{kernel.TCP_RECV_QUEUE, kernel.TCP_SEND_QUEUE} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, q); err != nil {
			return fmt.Errorf("TCP_REPAIR_QUEUE: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ, tcpEndedSeq); err != nil {
			return fmt.Errorf("TCP_QUEUE_SEQ: %w", err)
		}
	}
	if isk.GetSrcPort() != 0 {
		setFreebind(fd, int(isk.GetFamily()), true)
		if err := unix.Bind(fd, src); err != nil {
			return fmt.Errorf("bind: %w", err)
		}
		if err := setFreebind(fd, int(isk.GetFamily()), isk.GetIpOpts().GetFreebind()); err != nil {
			return err
		}
	}
	if err := unix.Connect(fd, dst); err != nil {
		return fmt.Errorf("connect in repair mode: %w", err)
	}
	if len(ts.inq) > 0 {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 2*len(ts.inq)+1<<20)
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, kernel.TCP_RECV_QUEUE); err != nil {
			return fmt.Errorf("TCP_REPAIR_QUEUE: %w", err)
		}
		if err := sendAll(fd, ts.inq); err != nil {
			return fmt.Errorf("receive queue, %d bytes: %w", len(ts.inq), err)
		}
	}
	// The FIN shutdown queues is "sent" in repair mode only while the
	// send queue is the one being repaired: it never leaves.
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, kernel.TCP_SEND_QUEUE); err != nil {
		return fmt.Errorf("TCP_REPAIR_QUEUE: %w", err)
	}
	if err := unix.Shutdown(fd, unix.SHUT_RDWR); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF_NO_WP); err != nil {
		return fmt.Errorf("leave repair mode: %w", err)
	}
	return nil
}

// A socket in SYN_SENT (moved with --tcp-established) has sent its SYN
// and had no answer yet: its peer may have dropped the SYN, or answer it
// while the socket is away (the lock table drops the answer, and the
// peer sends it again). It comes back as CRIU's soccr brings it back:
// made in repair mode with the same initial sequence number (the send
// sequence dumped counts the SYN), bound to its address, then out of
// repair mode it connects as usual, and the kernel keeps the sequence
// number it was given and sends the SYN again: a peer that had answered
// the first one sees a retransmission. The handshake sets the options
// (MSS, window scale, SACK, timestamps) afresh. The connect runs once
// the lock table is gone, so that this SYN gets through.

// restoreTCPSynSent makes fd, a new TCP socket in repair mode, the
// socket src that was connecting to dst.
func restoreTCPSynSent(r *fileRestore, fd int, isk *skinet.InetSkEntry, src, dst unix.Sockaddr, s *tcpstream.TcpStreamEntry) error {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, kernel.TCP_SEND_QUEUE); err != nil {
		return fmt.Errorf("TCP_REPAIR_QUEUE: %w", err)
	}
	// The initial sequence number: the SYN is the one byte of sequence
	// the socket has used.
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ, int(s.GetOutqSeq()-s.GetOutqLen()-1)); err != nil {
		return fmt.Errorf("send sequence: %w", err)
	}
	setFreebind(fd, int(isk.GetFamily()), true)
	if err := unix.Bind(fd, src); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	if err := setFreebind(fd, int(isk.GetFamily()), isk.GetIpOpts().GetFreebind()); err != nil {
		return err
	}
	r.lateFinals = append(r.lateFinals, func() error {
		fail := func(step string, err error) error {
			return fmt.Errorf("TCP socket %s in SYN_SENT (socket %d): %s: %w", tcpEnd(src, dst), isk.GetIno(), step, err)
		}
		// Leaving repair mode also ends the forced address reuse it
		// gave (sk_reuse): the socket's own setting back after.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 0); err != nil {
			return fail("leave repair mode", err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, b2i(isk.GetOpts().GetReuseaddr())); err != nil {
			return fail("SO_REUSEADDR", err)
		}
		// Without waiting for the answer: the task waits for it, as it
		// did, in connect or poll.
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		if err != nil {
			return fail("F_GETFL", err)
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags|unix.O_NONBLOCK); err != nil {
			return fail("F_SETFL", err)
		}
		err = unix.Connect(fd, dst)
		if _, ferr := unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags); ferr != nil {
			return fail("F_SETFL", ferr)
		}
		if err != nil && !errors.Is(err, unix.EINPROGRESS) {
			return fail("connect", err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, b2i(s.GetNodelay())); err != nil {
			return fail("TCP_NODELAY", err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_CORK, b2i(s.GetCork())); err != nil {
			return fail("TCP_CORK", err)
		}
		return nil
	})
	return nil
}
