package criu

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	skinet "github.com/checkpoint-restore/go-criu/v7/crit/images/sk-inet"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/kernel"
)

// A connection the kernel completed on a listener that the application
// has not accept()ed yet is in no fd: it sits in the listener's accept
// queue, a socket without an inode, until accept() gives it one. CRIU
// refuses such a listener (or, with --skip-in-flight, drops what waits).
// ctcr keeps the connections whose other end is in the dumped tree:
//
// Dump, once every fd of the tree is dumped (the other end must have
// been met) and every check has passed, takes them out of the queue with accept4 on ctcr's own copy
// of the listener (the tasks' fds do not change), reads what each had
// received (and whether its peer's FIN came after it), and silences it
// with repair mode before closing it. Nothing else of it matters: the
// application never had it, so it never sent anything. The queue is kept
// beside the images, in queue order:
//
//	tcp-accept-queue.json: [{"listener": FILE-ID, "peer": INODE,
//	    "data": BASE64, "fin": BOOL}, ...]
//
// where listener is the listener's id in files.img and peer the inode of
// the connection's other end, a socket of the tree dumped as usual.
//
// The kernel has no way to put a socket into a listener's accept queue,
// and a handshake on the restored listener makes a child whose sequence
// numbers are the kernel's choice. Both ends being in the tree, the
// sequence numbers are no one else's business: restore makes the other
// end anew, not in repair mode, bound to its address, and connects it to
// the restored listener, then sends what the queued end had received,
// then what the other end had still to deliver (its send queue), and
// shuts it down for writing if it had. That runs once every socket
// exists and the segments the dump held still get through, before any
// task runs; restore waits (bounded) until the listener's queue holds
// the connection and every byte is acknowledged: the application's
// accept() then returns it with its bytes, as it would have.
//
// A connection from outside the tree is refused by name: its peer knows
// its sequence numbers. So is a dump with --leave-running: what was
// taken out of the queue cannot be put back. A dump that fails after
// the queue was read loses those connections (their ends see nothing);
// they are read as late as the dump can, once every fd is dumped and
// checked.

// acceptQueueFile is the sidecar listing the connections in accept
// queues (CRIU has no image for them).
const acceptQueueFile = "tcp-accept-queue.json"

// queuedConn is one connection waiting in a listener's accept queue.
type queuedConn struct {
	Listener uint32 `json:"listener"`
	Peer     uint32 `json:"peer"`
	Data     []byte `json:"data,omitempty"`
	FIN      bool   `json:"fin,omitempty"`
}

// acceptQueue is a listener whose accept queue the dump must read.
type acceptQueue struct {
	where, what string
	pid         int
	keep        int // ctcr's copy of the listener, closed after the dump
	id          uint32
	family      int
	src         unix.Sockaddr
	count       int // connections waiting, as TCP_INFO said
}

type acceptQueues struct{ qs []*acceptQueue }

// noteAcceptQueue records listener fd (entry e, bound to src), whose
// accept queue holds n connections, for dumpAcceptQueues.
func noteAcceptQueue(d *fdDump, fd int, e *skinet.InetSkEntry, src unix.Sockaddr, n int, what string) error {
	if d.files.leaveRunning {
		return d.unsupported(fmt.Sprintf("%s: %d connections wait to be accepted: the dump takes them out of the accept queue to read them, which --leave-running cannot undo (--tcp-close drops them)", what, n))
	}
	keep, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s: %s: dup: %w", d.where, what, err)
	}
	d.files.closers = append(d.files.closers, func() { unix.Close(keep) })
	st := d.files.kindState("tcp accept queues", func() any { return &acceptQueues{} }).(*acceptQueues)
	st.qs = append(st.qs, &acceptQueue{where: d.where, what: what, pid: d.pid, keep: keep, id: e.GetId(), family: int(e.GetFamily()), src: src, count: n})
	return nil
}

// queuedEnds lists, with sock_diag, the connections of task pid's
// network namespace that wait in an accept queue of a listener bound to
// src: those of its port (and address, unless it listens on every
// address) that are established, or half-closed by their peer, and have
// no inode yet.
func queuedEnds(pid, family int, src unix.Sockaddr) ([][2]unix.Sockaddr, error) {
	req := make([]byte, kernel.SizeofInetDiagReqV2)
	req[0], req[1] = byte(family), unix.IPPROTO_TCP
	binary.LittleEndian.PutUint32(req[4:], 1<<tcpEstablished|1<<kernel.TCP_CLOSE_WAIT)
	binary.LittleEndian.PutUint32(req[48:], 0xffffffff)
	binary.LittleEndian.PutUint32(req[52:], 0xffffffff)
	srcWords, srcPort, _ := inetAddr(src)
	wildcard := true
	for _, w := range srcWords {
		wildcard = wildcard && w == 0
	}
	var out [][2]unix.Sockaddr
	err := sockDiag(pid, req, func(b []byte) error {
		if len(b) < kernel.SizeofInetDiagMsg || binary.LittleEndian.Uint32(b[kernel.InetDiagMsgInodeOffset:]) != 0 {
			return nil
		}
		id := b[kernel.InetDiagMsgSockidOffset:]
		sport, dport := uint32(binary.BigEndian.Uint16(id[0:])), uint32(binary.BigEndian.Uint16(id[2:]))
		n := 1
		if family == unix.AF_INET6 {
			n = 4
		}
		words := func(off int) []uint32 {
			w := make([]uint32, n)
			for i := range w {
				w[i] = binary.LittleEndian.Uint32(id[off+4*i:])
			}
			return w
		}
		local, remote := words(4), words(20)
		if sport != srcPort {
			return nil
		}
		if !wildcard {
			for i, w := range srcWords {
				if i >= len(local) || local[i] != w {
					return nil
				}
			}
		}
		l, err := inetSockaddr(uint32(family), local, sport)
		if err != nil {
			return nil
		}
		r, err := inetSockaddr(uint32(family), remote, dport)
		if err != nil {
			return nil
		}
		out = append(out, [2]unix.Sockaddr{l, r})
		return nil
	})
	return out, err
}

// checkAcceptQueues checks, with sock_diag, that the other end of every
// connection waiting in an accept queue of the tree's listeners was
// dumped, and counts the queued ends as dumped: nothing is taken from
// the queues yet, so a dump refused now leaves them as they were.
func checkAcceptQueues(t *fileTable) error {
	aq, ok := t.kinds["tcp accept queues"].(*acceptQueues)
	if !ok {
		return nil
	}
	st := tcpState(t)
	for _, q := range aq.qs {
		ends, err := queuedEnds(q.pid, q.family, q.src)
		if err != nil {
			return fmt.Errorf("%s: %s: the connections waiting to be accepted (sock_diag): %w", q.where, q.what, err)
		}
		for _, end := range ends {
			if _, ok := st.ends[tcpEnd(end[1], end[0])]; !ok {
				return fmt.Errorf("%s: %s: the connection %s waits to be accepted and its other end is outside the dumped tree: the kernel cannot put it back into the listener's accept queue with the sequence numbers its peer knows (--tcp-close drops it): %w",
					q.where, q.what, tcpEnd(end[0], end[1]), ErrUnsupported)
			}
		}
		if len(ends) != q.count {
			// Another listener shares the port (SO_REUSEPORT), or a
			// connection came or went: which queue holds what is unclear.
			return fmt.Errorf("%s: %s: %d connections wait to be accepted, sock_diag lists %d on its address: %w", q.where, q.what, q.count, len(ends), ErrUnsupported)
		}
		for _, end := range ends {
			e := tcpEnd(end[0], end[1])
			st.ends[e] = "the accept queue of " + q.where
			st.peers[e] = tcpEnd(end[1], end[0])
		}
	}
	return nil
}

// takeAcceptQueues takes the connections out of the accept queues
// checkAcceptQueues checked and records them beside the images. It runs
// last of the file table's finish, when nothing but writing the images
// can fail the dump any more: a dump that fails after loses them.
func (t *fileTable) takeAcceptQueues() error {
	aq, ok := t.kinds["tcp accept queues"].(*acceptQueues)
	if !ok {
		return nil
	}
	st := tcpState(t)
	var queued []queuedConn
	for _, q := range aq.qs {
		for i := 0; i < q.count; i++ {
			c, err := takeQueued(t, st, q)
			if err != nil {
				return fmt.Errorf("%s: %s: connection %d of %d waiting to be accepted: %w", q.where, q.what, i+1, q.count, err)
			}
			queued = append(queued, c)
		}
	}
	if len(queued) == 0 {
		return nil
	}
	b, err := json.Marshal(queued)
	if err != nil {
		return err
	}
	t.sidecars = append(t.sidecars, sidecar{name: acceptQueueFile, data: b})
	return nil
}

// takeQueued accepts the next connection of q's queue into ctcr and
// reads it.
func takeQueued(t *fileTable, st *tcpConns, q *acceptQueue) (queuedConn, error) {
	fd, _, err := unix.Accept4(q.keep, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
	if err != nil {
		return queuedConn{}, fmt.Errorf("accept4: %w", err)
	}
	// Closed silently (no FIN, no reset) in repair mode with the dump's
	// other copies: its other end is dumped in repair mode too.
	t.closers = append(t.closers, func() {
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1)
		unix.Close(fd)
	})
	local, err := unix.Getsockname(fd)
	if err != nil {
		return queuedConn{}, fmt.Errorf("getsockname: %w", err)
	}
	peer := closedPeer(fd, q.family)
	if peer == nil {
		return queuedConn{}, fmt.Errorf("no peer address")
	}
	end, peerEnd := tcpEnd(local, peer), tcpEnd(peer, local)
	ino, ok := st.inos[peerEnd]
	if !ok {
		return queuedConn{}, fmt.Errorf("%s: its other end is outside the dumped tree: %w", end, ErrUnsupported)
	}
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return queuedConn{}, fmt.Errorf("%s: TCP_INFO: %w", end, err)
	}
	if info.State != tcpEstablished && info.State != kernel.TCP_CLOSE_WAIT {
		return queuedConn{}, fmt.Errorf("%s in state %s: %w", end, tcpStateNames[info.State], ErrUnsupported)
	}
	n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if err != nil {
		return queuedConn{}, fmt.Errorf("%s: SIOCINQ: %w", end, err)
	}
	c := queuedConn{Listener: q.id, Peer: ino, FIN: info.State == kernel.TCP_CLOSE_WAIT}
	if n > 0 {
		c.Data = make([]byte, n)
		got, _, err := unix.Recvfrom(fd, c.Data, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err != nil {
			return queuedConn{}, fmt.Errorf("%s: peek at the receive queue: %w", end, err)
		}
		if got != n {
			return queuedConn{}, fmt.Errorf("%s: peeked %d bytes of %d", end, got, n)
		}
	}
	st.ends[end] = "the accept queue of " + q.where
	st.peers[end] = peerEnd
	st.inos[end] = 0
	return c, nil
}

// queuedConnOf returns the connection waiting in an accept queue whose
// other end is the socket with inode ino, if any.
func queuedConnOf(r *fileRestore, ino uint32) (*queuedConn, error) {
	all, ok := r.state["tcp accept queue"].([]queuedConn)
	if !ok {
		b, err := os.ReadFile(r.cp.dir.Path(acceptQueueFile))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		if err == nil {
			if err := json.Unmarshal(b, &all); err != nil {
				return nil, corruptf(acceptQueueFile, "%v", err)
			}
		}
		for _, c := range all {
			l, ok := r.cp.files[c.Listener]
			if !ok || l.GetIsk() == nil || l.GetIsk().GetState() != tcpListen {
				return nil, corruptf(acceptQueueFile, "listener id %d is no TCP listener of files.img", c.Listener)
			}
		}
		r.state["tcp accept queue"] = all
	}
	for i := range all {
		if all[i].Peer == ino {
			return &all[i], nil
		}
	}
	return nil, nil
}

// acceptQueueWait bounds how long restore waits for a connection it
// makes to reach its listener's queue with every byte.
const acceptQueueWait = 10 * time.Second

// openQueuedPeer makes the socket isk, the other end of connection c
// that waits in a listener's accept queue: bound now, connected once
// every socket exists (see the top of this file).
func openQueuedPeer(r *fileRestore, isk *skinet.InetSkEntry, src, dst unix.Sockaddr, ts *tcpStream, c *queuedConn, what string) (*os.File, error) {
	if len(ts.inq) > 0 {
		return nil, corruptf(acceptQueueFile, "%s: %d bytes received from a connection its listener never accepted", what, len(ts.inq))
	}
	listener, err := r.get(c.Listener)
	if err != nil {
		return nil, fmt.Errorf("%s: its peer's listener: %w", what, err)
	}
	family, typ := int(isk.GetFamily()), int(isk.GetType())
	fd := -1
	f, err := socketInTreeNet(r, what, &fd, isk.GetFlags(), fmt.Sprintf("socket:[%d]", isk.GetIno()), func() error {
		var err error
		if fd, err = unix.Socket(family, typ|unix.SOCK_CLOEXEC, int(isk.GetProto())); err != nil {
			return os.NewSyscallError("socket", err)
		}
		if family == unix.AF_INET6 {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, b2i(isk.GetV6Only())); err != nil {
				return fmt.Errorf("IPV6_V6ONLY: %w", err)
			}
		}
		// Its old self may linger in the kernel (killed in repair mode,
		// it is gone, but a TIME_WAIT of an earlier run may not be).
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		setFreebind(fd, family, true)
		if err := unix.Bind(fd, src); err != nil {
			return fmt.Errorf("bind: %w", err)
		}
		if err := restoreInetOpts(fd, typ, isk.GetOpts()); err != nil {
			return err
		}
		if err := setFreebind(fd, family, isk.GetIpOpts().GetFreebind()); err != nil {
			return err
		}
		return restoreIPOpts(fd, family, typ, int(isk.GetProto()), isk.GetIpOpts())
	})
	if err != nil {
		return nil, err
	}
	data := append(append([]byte(nil), c.Data...), ts.outq...)
	fin := c.FIN
	r.lateFinals = append(r.lateFinals, func() error {
		if err := connectQueued(fd, int(listener.Fd()), dst, data, fin); err != nil {
			return fmt.Errorf("%s, waiting in the accept queue of listener id %d: %w", what, c.Listener, err)
		}
		return nil
	})
	return f, nil
}

// connectQueued connects fd to its listener at dst, sends data, shuts it
// down for writing if fin, and waits until the connection is in the
// listener's accept queue and every byte is acknowledged.
func connectQueued(fd, listener int, dst unix.Sockaddr, data []byte, fin bool) error {
	deadline := time.Now().Add(acceptQueueWait)
	before, err := unix.GetsockoptTCPInfo(listener, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return fmt.Errorf("listener: TCP_INFO: %w", err)
	}
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return fmt.Errorf("F_GETFL: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags|unix.O_NONBLOCK); err != nil {
		return fmt.Errorf("F_SETFL: %w", err)
	}
	defer unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags)
	waitOut := func(step string) error {
		ms := int(time.Until(deadline) / time.Millisecond)
		if ms <= 0 {
			return fmt.Errorf("%s: no room in %v", step, acceptQueueWait)
		}
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		if _, err := unix.Poll(p, ms); err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("%s: poll: %w", step, err)
		}
		return nil
	}
	if err := unix.Connect(fd, dst); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return fmt.Errorf("connect: %w", err)
	}
	for {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return fmt.Errorf("TCP_INFO: %w", err)
		}
		if info.State == tcpEstablished {
			break
		}
		if info.State != kernel.TCP_SYN_SENT {
			soErr, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
			return fmt.Errorf("connect: state %s: %w", tcpStateNames[info.State], unix.Errno(soErr))
		}
		if err := waitOut("connect"); err != nil {
			return err
		}
	}
	for b := data; len(b) > 0; {
		n, err := unix.SendmsgN(fd, b, nil, nil, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
		switch {
		case errors.Is(err, unix.EAGAIN):
			if err := waitOut(fmt.Sprintf("send %d bytes", len(data))); err != nil {
				return err
			}
		case errors.Is(err, unix.EINTR):
		case err != nil:
			return fmt.Errorf("send %d bytes: %w", len(data), err)
		default:
			b = b[n:]
		}
	}
	if fin {
		if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
			return fmt.Errorf("shutdown: %w", err)
		}
	}
	for {
		outq, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
		if err != nil {
			return fmt.Errorf("SIOCOUTQ: %w", err)
		}
		l, err := unix.GetsockoptTCPInfo(listener, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return fmt.Errorf("listener: TCP_INFO: %w", err)
		}
		if outq == 0 && l.Unacked > before.Unacked {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v, %d bytes unacknowledged and %d connections in the listener's queue (%d before)", acceptQueueWait, outq, l.Unacked, before.Unacked)
		}
		time.Sleep(time.Millisecond)
	}
}
