package criu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	skopts "github.com/checkpoint-restore/go-criu/v7/crit/images/sk-opts"
	skpacket "github.com/checkpoint-restore/go-criu/v7/crit/images/sk-packet"
	skunix "github.com/checkpoint-restore/go-criu/v7/crit/images/sk-unix"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/kernel"
	"github.com/ctcr/ctcr/criu/nsthread"
	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/internal/inroot"
)

// unixSockets are AF_UNIX sockets of every type ctcr knows (stream,
// datagram, seqpacket): unbound, bound to a path or an abstract name,
// listening with connections waiting to be accepted, connected (to each
// other, socketpairs included), shut down in either direction.
//
// Dump asks sock_diag (NETLINK_SOCK_DIAG, UNIX_DIAG) once for every unix
// socket of the network namespace: name, inode of the bound file, peer,
// pending connections of listeners ("icons"), queue lengths, shutdown.
// Each socket's entry goes into files.img (a UNIXSK entry, as CRIU's
// criu/sk-unix.c writes it), its receive queue into sk-queues.img, read
// with MSG_PEEK and SO_PEEK_OFF on ctcr's pidfd_getfd copy so the task
// loses nothing:
//
//	sk-queues.img: SK_QUEUES magic, then per message (per chunk of a
//	    stream): sk_packet_entry{id_for: socket's file id, length,
//	    scm: the file ids of the fds it carries (SCM_RIGHTS)} | data
//
// Fds in flight are dumped as files of their own (an entry in files.img
// that no task's fd names, or a task's if it holds the same file) and
// sent again with their message at restore.
// A socket whose peer is outside the dumped tree makes the dump fail,
// unless external peers are allowed (--ext-unix-sk, as in CRIU): then the
// socket is dumped with its own state and queue, and its peer gets an
// entry of its own in files.img flagged USK_EXTERN, with the name to
// reach it by. Such an entry belongs to no fd.
//
// Restore builds every socket of the checkpoint at the first one asked
// for, since they depend on each other: named sockets and listeners
// first; connections accepted from a listener by connecting to it and
// accepting; then the connections still waiting in its backlog, in
// their order; other pairs with socketpair(2); one-way datagram
// connections with connect(2). Queued data is sent again by each
// socket's peer (or, for a bound datagram socket, from a socket of
// ctcr's to its name); then sockets whose peer was external connect to
// that peer's name again (a stream or seqpacket socket to the listener
// it had been accepted by, a datagram socket to its peer's name); then
// shutdown state, options and flags follow.
var unixSockets = fileKind{
	name:   unixKindName,
	fdType: fdinfo.FdTypes_UNIXSK,
	dump:   dumpUnixSocket,
	open:   openUnixSocket,
	finish: finishUnixSockets,
	fixup:  relistenAsOwner,
}

// relistenAsOwner makes the first restored task that holds a listening
// socket call listen(2) on it again. ctcr listened on it to restore its
// connections, and listen sets the credentials the socket's clients
// get as their peer's (SO_PEERCRED): ctcr's, whose PID a container
// cannot see. sd-bus refuses a peer with PID 0 (ENODATA): systemctl
// could not talk to a restored systemd. Listening again on a listening
// socket only sets its backlog and its credentials (net/unix/af_unix.c
// unix_listen, init_peercred), now those of the task, as at the dump.
func relistenAsOwner(r *fileRestore, t *restoringTask, fd int, e *fdinfo.FileEntry) error {
	u := e.GetUsk()
	if u == nil || u.GetState() != tcpListen {
		return nil
	}
	done, _ := r.state["unix relisten"].(map[uint32]bool)
	if done == nil {
		done = map[uint32]bool{}
		r.state["unix relisten"] = done
	}
	if done[e.GetId()] {
		return nil
	}
	done[e.GetId()] = true
	if ur, _ := r.state[unixKindName].(*unixRestore); ur != nil && ur.credsApplied[u.GetIno()] {
		return nil // listened as its recorded creator already
	}
	if _, err := t.ctl.call(unix.SYS_LISTEN, uint64(fd), uint64(u.GetBacklog())); err != nil {
		return fmt.Errorf("unix socket %d: listen as its owner: %w", u.GetIno(), err)
	}
	return nil
}

const unixKindName = "unix socket"

// sock_diag for AF_UNIX (include/uapi/linux/unix_diag.h).
const (
	udiagShowName     = 0x01
	udiagShowVFS      = 0x02
	udiagShowPeer     = 0x04
	udiagShowIcons    = 0x08
	udiagShowRQLen    = 0x10
	unixDiagName      = 0
	unixDiagVFS       = 1
	unixDiagPeer      = 2
	unixDiagIcons     = 3
	unixDiagRQLen     = 4
	unixDiagShutdown  = 6
	sizeofUnixDiagReq = 24
	sizeofUnixDiagMsg = 16
)

// uskExtern flags a unix_sk_entry that stands for a socket outside the
// dumped tree (CRIU's USK_EXTERN, criu/include/sockets.h).
const uskExtern = 1 << 0

// Socket states as unix sockets use them (include/net/tcp_states.h).
const (
	tcpEstablished = 1
	tcpClose       = 7
	tcpListen      = 10
)

// unixDiag is what sock_diag says of one unix socket.
type unixDiag struct {
	ino, typ, state uint32
	name            []byte // abstract names start with a NUL
	vfsIno, vfsDev  uint32
	hasVFS          bool
	peer            uint32
	icons           []uint32 // pending connections: their clients' inodes
	rqueue, wqueue  uint32   // listen: backlog length and limit; else bytes queued in and out
	shutdown        uint8
}

// unixDiagAll lists every unix socket of task pid's network namespace:
// sock_diag answers for the namespace its socket was made in.
func unixDiagAll(pid int) (map[uint32]*unixDiag, error) {
	s, err := diagSocketOf(pid)
	if err != nil {
		return nil, err
	}
	defer unix.Close(s)
	return unixDiagAllOn(s)
}

// unixDiagAllOn lists every unix socket of the network namespace the
// NETLINK_SOCK_DIAG socket s was made in.
func unixDiagAllOn(s int) (map[uint32]*unixDiag, error) {
	req := make([]byte, sizeofUnixDiagReq)
	le := binary.LittleEndian
	req[0] = unix.AF_UNIX
	le.PutUint32(req[4:], 0xffffffff) // every state
	le.PutUint32(req[12:], udiagShowName|udiagShowVFS|udiagShowPeer|udiagShowIcons|udiagShowRQLen)
	le.PutUint32(req[16:], 0xffffffff) // no cookie
	le.PutUint32(req[20:], 0xffffffff)
	out := map[uint32]*unixDiag{}
	err := sockDiagOn(s, req, func(b []byte) error {
		d, err := parseUnixDiag(b)
		if err != nil {
			return err
		}
		out[d.ino] = d
		return nil
	})
	return out, err
}

// sockDiag sends the sock_diag dump request req (a family's *_diag_req)
// from task pid's network namespace, where it answers, and hands each
// reply message to each.
func sockDiag(pid int, req []byte, each func([]byte) error) error {
	s, err := diagSocketOf(pid)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	return sockDiagOn(s, req, each)
}

func newDiagSocket() (int, error) {
	s, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	return s, os.NewSyscallError("socket(NETLINK_SOCK_DIAG)", err)
}

// diagSocketOf makes a NETLINK_SOCK_DIAG socket in task pid's network
// namespace.
func diagSocketOf(pid int) (int, error) {
	same, err := nsthread.Same(pid, "net")
	if err != nil {
		return -1, err
	}
	if same {
		return newDiagSocket()
	}
	s := -1
	err = nsthread.Run(func() error { return nsthread.Join(pid, "net", unix.CLONE_NEWNET) }, func() error {
		var err error
		s, err = newDiagSocket()
		return err
	})
	return s, err
}

// diagSocketBeside makes a NETLINK_SOCK_DIAG socket in the network
// namespace of socket fd (SIOCGSKNS): what works from a thread that
// sees no /proc of the tree, such as one building in a container's view.
func diagSocketBeside(fd int) (int, error) {
	ns, err := unix.IoctlRetInt(fd, unix.SIOCGSKNS)
	if err != nil {
		return -1, os.NewSyscallError("ioctl(SIOCGSKNS)", err)
	}
	defer unix.Close(ns)
	s := -1
	err = nsthread.Run(func() error { return os.NewSyscallError("setns", unix.Setns(ns, unix.CLONE_NEWNET)) }, func() error {
		var err error
		s, err = newDiagSocket()
		return err
	})
	return s, err
}

// sockDiagOn sends the sock_diag dump request req on the
// NETLINK_SOCK_DIAG socket s and hands each reply message to each.
func sockDiagOn(s int, req []byte, each func([]byte) error) error {
	msg := make([]byte, unix.NLMSG_HDRLEN+len(req))
	le := binary.LittleEndian
	le.PutUint32(msg[0:], uint32(len(msg)))
	le.PutUint16(msg[4:], unix.SOCK_DIAG_BY_FAMILY)
	le.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	le.PutUint32(msg[8:], 1)
	copy(msg[unix.NLMSG_HDRLEN:], req)
	if err := unix.Sendto(s, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return os.NewSyscallError("sock_diag request", err)
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(s, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("sock_diag reply", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("sock_diag reply: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := int32(le.Uint32(m.Data)); e != 0 {
						return os.NewSyscallError("sock_diag", unix.Errno(-e))
					}
				}
				continue
			}
			if err := each(m.Data); err != nil {
				return err
			}
		}
	}
}

func parseUnixDiag(b []byte) (*unixDiag, error) {
	if len(b) < sizeofUnixDiagMsg {
		return nil, fmt.Errorf("sock_diag: short unix_diag_msg of %d bytes", len(b))
	}
	le := binary.LittleEndian
	d := &unixDiag{typ: uint32(b[1]), state: uint32(b[2]), ino: le.Uint32(b[4:])}
	for a := b[sizeofUnixDiagMsg:]; len(a) >= 4; {
		l := int(le.Uint16(a))
		if l < 4 || l > len(a) {
			return nil, fmt.Errorf("sock_diag: socket %d: attribute of %d bytes in %d", d.ino, l, len(a))
		}
		v := a[4:l]
		switch le.Uint16(a[2:]) {
		case unixDiagName:
			d.name = append([]byte(nil), v...)
			if i := strings.IndexByte(string(v), 0); i > 0 {
				// A path: the kernel counts its terminating NUL (and
				// whatever bind was given after it).
				d.name = d.name[:i]
			}
		case unixDiagVFS:
			if len(v) >= 8 {
				d.vfsIno, d.vfsDev, d.hasVFS = le.Uint32(v), le.Uint32(v[4:]), true
			}
		case unixDiagPeer:
			if len(v) >= 4 {
				d.peer = le.Uint32(v)
			}
		case unixDiagIcons:
			for i := 0; i+4 <= len(v); i += 4 {
				d.icons = append(d.icons, le.Uint32(v[i:]))
			}
		case unixDiagRQLen:
			if len(v) >= 8 {
				d.rqueue, d.wqueue = le.Uint32(v), le.Uint32(v[4:])
			}
		case unixDiagShutdown:
			if len(v) >= 1 {
				d.shutdown = v[0]
			}
		}
		aligned := (l + 3) &^ 3
		if aligned >= len(a) {
			break
		}
		a = a[aligned:]
	}
	return d, nil
}

// unixDumpState is what dumping unix sockets keeps across fds and tasks.
type unixDumpState struct {
	diag   map[uint32]*unixDiag
	diagNs int                      // a task of the network namespace diag lists
	dumped map[uint32]*dumpedUnixSk // by inode
	order  []uint32

	// Set by allowExternalUnixPeers (--ext-unix-sk): the dumped tasks,
	// and the inodes of every socket they hold (read on first need).
	extAllowed bool
	procs      []*dumpProc
	held       map[uint32]bool
	external   map[uint32]*skunix.UnixSkEntry // USK_EXTERN entries, by inode

	// creds are the peer credentials of the sockets, by inode, for
	// unix-creds.json (sk_unix_cred.go).
	creds map[string]*unixCredsEntry
}

type dumpedUnixSk struct {
	where string // "task P fd N"
	e     *skunix.UnixSkEntry
	d     *unixDiag
}

func unixState(t *fileTable) *unixDumpState {
	return t.kindState(unixKindName, func() any {
		return &unixDumpState{dumped: map[uint32]*dumpedUnixSk{}, external: map[uint32]*skunix.UnixSkEntry{}}
	}).(*unixDumpState)
}

// allowExternalUnixPeers lets the dump keep unix sockets connected to a
// socket no task of procs holds (--ext-unix-sk).
func allowExternalUnixPeers(t *fileTable, procs []*dumpProc) {
	st := unixState(t)
	st.extAllowed, st.procs = true, procs
}

// heldByTree reports whether a task of the dumped tree has the socket
// with inode ino open. Whether a peer is external must be known when the
// socket is dumped, before every task's fds are: files.img, where the
// peer's entry goes, is written before the tree-wide checks run.
func (st *unixDumpState) heldByTree(ino uint32) (bool, error) {
	if st.held == nil {
		held := map[uint32]bool{}
		for _, p := range st.procs {
			if p.zombie {
				continue
			}
			fds, err := proc.Fds(p.pid)
			if err != nil {
				return false, fmt.Errorf("task %d: list fds: %w", p.pid, err)
			}
			for _, fd := range fds {
				link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", p.pid, fd))
				if err != nil {
					continue // closed since listed: a stopped task cannot, so not a socket
				}
				var n uint32
				if _, err := fmt.Sscanf(link, "socket:[%d]", &n); err == nil {
					held[n] = true
				}
			}
		}
		st.held = held
	}
	return st.held[ino], nil
}

// externalPeer returns the USK_EXTERN entry of the peer of sk (d), made
// and added to files.img on first use, when external peers are allowed
// and the peer is outside the tree; nil when the peer is in the tree or
// external peers are not allowed (finishUnixSockets then refuses it). A
// peer that cannot be reached again by its name is refused here.
func (st *unixDumpState) externalPeer(d *fdDump, sk *unixDiag, peer uint32, what string) (*skunix.UnixSkEntry, error) {
	if !st.extAllowed || peer == 0 {
		return nil, nil
	}
	if e := st.external[peer]; e != nil {
		return e, nil
	}
	if in, err := st.heldByTree(peer); err != nil || in {
		return nil, err
	}
	pd := st.diag[peer]
	if pd == nil {
		return nil, d.unsupported(fmt.Sprintf("%s: its peer, socket %d outside the dumped tree, is unknown to sock_diag", what, peer))
	}
	pdesc := fmt.Sprintf("socket %d (%s)", peer, unixSkDesc(pd))
	if len(pd.name) == 0 {
		return nil, d.unsupported(fmt.Sprintf("%s: its peer, %s outside the dumped tree, has no name to connect to again", what, pdesc))
	}
	if sk.typ != unix.SOCK_DGRAM {
		// Reconnecting makes a new connection to a listener: the peer
		// must be one, or a connection accepted from one (which has its
		// listener's name).
		if pd.state != tcpListen && st.listenerByName(pd.name, pd.typ) == nil {
			return nil, d.unsupported(fmt.Sprintf("%s: its peer, %s outside the dumped tree, is no connection accepted from a listening socket: nothing to connect to again", what, pdesc))
		}
		if sk.rqueue > 0 {
			return nil, d.unsupported(fmt.Sprintf("%s: %d bytes sent by its peer %s outside the dumped tree are queued: only that peer could queue them again", what, sk.rqueue, pdesc))
		}
	} else if sk.rqueue > 0 && len(sk.name) == 0 {
		return nil, d.unsupported(fmt.Sprintf("%s: datagrams are queued on it, but it has no name to send them to again before it connects to its peer %s outside the dumped tree", what, pdesc))
	}
	e := &skunix.UnixSkEntry{
		Id: proto.Uint32(d.files.nextID()), Ino: proto.Uint32(peer), Type: proto.Uint32(pd.typ), State: proto.Uint32(pd.state),
		Flags: proto.Uint32(0), Uflags: proto.Uint32(uskExtern), Backlog: proto.Uint32(0), Peer: proto.Uint32(pd.peer),
		Fown: noFown(), Name: append([]byte{}, pd.name...), Shutdown: skShutdown(pd.shutdown).Enum(),
		Opts: &skopts.SkOptsEntry{
			SoSndbuf: proto.Uint32(0), SoRcvbuf: proto.Uint32(0), SoSndTmoSec: proto.Uint64(0), SoSndTmoUsec: proto.Uint64(0),
			SoRcvTmoSec: proto.Uint64(0), SoRcvTmoUsec: proto.Uint64(0),
		},
	}
	d.files.entries = append(d.files.entries, &fdinfo.FileEntry{Type: fdinfo.FdTypes_UNIXSK.Enum(), Id: proto.Uint32(e.GetId()), Usk: e})
	st.external[peer] = e
	return e, nil
}

// unreachablePeer reports whether, with external peers allowed, the
// stream or seqpacket connection sk has its peer outside the tree with
// nothing to connect to again: a client without a name that connected to
// a listener of the tree, say. Like a TCP connection whose far end is
// gone, it is then restored as a connection its peer has closed: what
// was queued for it can be read, then end of file.
func (st *unixDumpState) unreachablePeer(sk *unixDiag, peer uint32) (bool, error) {
	if !st.extAllowed || peer == 0 || sk.typ == unix.SOCK_DGRAM {
		return false, nil
	}
	if in, err := st.heldByTree(peer); err != nil || in {
		return false, err
	}
	pd := st.diag[peer]
	if pd == nil || len(pd.name) == 0 {
		return true, nil
	}
	return pd.state != tcpListen && st.listenerByName(pd.name, pd.typ) == nil, nil
}

// listenerByName returns the listening socket of type typ bound to name.
func (st *unixDumpState) listenerByName(name []byte, typ uint32) *unixDiag {
	for _, d := range st.diag {
		if d.state == tcpListen && d.typ == typ && string(d.name) == string(name) {
			return d
		}
	}
	return nil
}

// listenerOf returns the listening socket whose backlog holds a
// connection from ino, if any.
func (st *unixDumpState) listenerOf(ino uint32) *unixDiag {
	for _, d := range st.diag {
		if d.state != tcpListen {
			continue
		}
		for _, ic := range d.icons {
			if ic == ino {
				return d
			}
		}
	}
	return nil
}

func skShutdown(mode uint8) skopts.SkShutdown {
	// sk_shutdown: RCV_SHUTDOWN 1, SEND_SHUTDOWN 2, as SkShutdown's READ
	// and WRITE.
	return skopts.SkShutdown(mode & 3)
}

func dumpUnixSocket(d *fdDump) (*fdinfo.FileEntry, error) {
	if d.st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, nil
	}
	f, err := d.file()
	if err != nil {
		return nil, err
	}
	sfd := int(f.Fd())
	if dom, err := unix.GetsockoptInt(sfd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil || dom != unix.AF_UNIX {
		return nil, nil // another family: not this kind's
	}
	ino := uint32(d.st.Ino)
	st := unixState(d.files)
	sk := st.diag[ino]
	if sk == nil {
		// First socket, or one sock_diag did not list before: ask again.
		if st.diagNs == 0 || d.vpid != 0 {
			st.diagNs = d.pid // a socket in flight is of the tree's namespace
		}
		if st.diag, err = unixDiagAll(st.diagNs); err != nil {
			return nil, fmt.Errorf("%s (%s): %w", d.where, d.link, err)
		}
		if sk = st.diag[ino]; sk == nil {
			return nil, fmt.Errorf("%s (%s): sock_diag does not know this unix socket", d.where, d.link)
		}
	}
	what := fmt.Sprintf("unix socket %d (%s)", ino, unixSkDesc(sk))
	switch sk.typ {
	case unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_SEQPACKET:
	default:
		return nil, d.unsupported(fmt.Sprintf("%s of type %d", what, sk.typ))
	}
	switch sk.state {
	case tcpListen, tcpEstablished, tcpClose:
	default:
		return nil, d.unsupported(fmt.Sprintf("%s in state %d", what, sk.state))
	}
	peer := sk.peer
	pending := false
	if peer == 0 && sk.state == tcpEstablished && sk.typ != unix.SOCK_DGRAM {
		// A connection not accepted yet: its peer is the embryo socket in
		// the listener's backlog, which has no inode. Record the listener,
		// as CRIU does.
		if l := st.listenerOf(ino); l != nil {
			pending = true
			if sk.wqueue != 0 {
				return nil, d.unsupported(fmt.Sprintf("%s: %d bytes sent on a connection listening socket %d has not accepted yet (they cannot be read without accepting it)", what, sk.wqueue, l.ino))
			}
			peer = l.ino
		}
	}
	if gone, err := st.unreachablePeer(sk, peer); err != nil {
		return nil, err
	} else if gone {
		d.files.warnf("%s: %s: its peer, socket %d outside the dumped tree, has nothing to connect to again: it comes back as a connection its peer has closed", d.where, what, peer)
		peer = 0
	}
	// The peer's own entry, if it is external, takes the id before this
	// socket's: dumpOneFd adds this one after it.
	if _, err := st.externalPeer(d, sk, peer, what); err != nil {
		return nil, err
	}
	id := d.files.nextID()
	e := &skunix.UnixSkEntry{
		Id: proto.Uint32(id), Ino: proto.Uint32(ino), Type: proto.Uint32(sk.typ), State: proto.Uint32(sk.state),
		Flags: proto.Uint32(d.flags), Uflags: proto.Uint32(0), Backlog: proto.Uint32(0), Peer: proto.Uint32(peer),
		Fown: noFown(), Name: append([]byte{}, sk.name...), Shutdown: skShutdown(sk.shutdown).Enum(),
	}
	if sk.state == tcpListen {
		e.Backlog = proto.Uint32(sk.wqueue)
	}
	if e.NsId, err = d.socketNetID(sfd, what); err != nil {
		return nil, err
	}
	if len(sk.name) > 0 && sk.name[0] != 0 {
		name := string(sk.name)
		if !strings.HasPrefix(name, "/") {
			dir, err := relativeNameDir(d, sk)
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %w", d.where, what, err)
			}
			if dir == "" {
				return nil, d.unsupported(fmt.Sprintf("%s is bound to the relative path %q, which does not lead to it from its task's working directory: the directory it was bound from is unknown", what, name))
			}
			e.NameDir = proto.String(dir)
			name = path.Join(dir, name)
		}
		if fst, err := statInTree(d.pid, name); err != nil || !sk.hasVFS || fst.Ino != uint64(sk.vfsIno) {
			e.Deleted = proto.Bool(true) // the name no longer leads to this socket
		} else {
			e.FilePerms = &skunix.FilePermsEntry{Mode: proto.Uint32(fst.Mode), Uid: proto.Uint32(fst.Uid), Gid: proto.Uint32(fst.Gid)}
		}
	}
	if e.Opts, err = dumpSkOpts(sfd); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", d.where, what, err)
	}
	if sk.state != tcpListen && sk.rqueue > 0 || sk.typ == unix.SOCK_DGRAM {
		if err := dumpSkQueue(d, sfd, id, sk); err != nil {
			return nil, err
		}
	}
	if err := st.recordCreds(d, sfd, ino, pending); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", d.where, what, err)
	}
	st.dumped[ino] = &dumpedUnixSk{where: d.where, e: e, d: sk}
	st.order = append(st.order, ino)
	return &fdinfo.FileEntry{Id: proto.Uint32(id), Usk: e}, nil
}

// relativeNameDir finds the directory socket sk's relative name was
// bound from: /proc/net/unix and sock_diag give the name as bind got it,
// resolved against the binder's working directory then. The task that
// holds it is asked first: its working directory, if the name leads
// from there to the socket's own inode (UNIX_DIAG_VFS). "" if it does
// not (the task changed directory, or the name was unlinked since).
func relativeNameDir(d *fdDump, sk *unixDiag) (string, error) {
	if !sk.hasVFS || d.vpid == 0 {
		return "", nil
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", d.pid))
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	if !strings.HasPrefix(cwd, "/") || strings.HasSuffix(cwd, " (deleted)") {
		return "", nil
	}
	st, err := statInTree(d.pid, path.Join(cwd, string(sk.name)))
	if err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Ino != uint64(sk.vfsIno) || st.Dev != unix.Mkdev(sk.vfsDev>>20, sk.vfsDev&0xfffff) {
		return "", nil
	}
	return cwd, nil
}

func unixSkDesc(sk *unixDiag) string {
	typ := map[uint32]string{unix.SOCK_STREAM: "stream", unix.SOCK_DGRAM: "dgram", unix.SOCK_SEQPACKET: "seqpacket"}[sk.typ]
	if typ == "" {
		typ = fmt.Sprintf("type %d", sk.typ)
	}
	switch {
	case len(sk.name) == 0:
		return typ
	case sk.name[0] == 0:
		return fmt.Sprintf("%s @%s", typ, sk.name[1:])
	}
	return fmt.Sprintf("%s %s", typ, sk.name)
}

func dumpSkOpts(fd int) (*skopts.SkOptsEntry, error) {
	o := &skopts.SkOptsEntry{}
	snd, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF)
	if err != nil {
		return nil, fmt.Errorf("SO_SNDBUF: %w", err)
	}
	rcv, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
	if err != nil {
		return nil, fmt.Errorf("SO_RCVBUF: %w", err)
	}
	o.SoSndbuf, o.SoRcvbuf = proto.Uint32(uint32(snd)), proto.Uint32(uint32(rcv))
	stv, err := unix.GetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO)
	if err != nil {
		return nil, fmt.Errorf("SO_SNDTIMEO: %w", err)
	}
	rtv, err := unix.GetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO)
	if err != nil {
		return nil, fmt.Errorf("SO_RCVTIMEO: %w", err)
	}
	o.SoSndTmoSec, o.SoSndTmoUsec = proto.Uint64(uint64(stv.Sec)), proto.Uint64(uint64(stv.Usec))
	o.SoRcvTmoSec, o.SoRcvTmoUsec = proto.Uint64(uint64(rtv.Sec)), proto.Uint64(uint64(rtv.Usec))
	pc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED)
	if errors.Is(err, unix.EOPNOTSUPP) {
		pc, err = 0, nil // only unix and netlink sockets have it (Linux 6.5 on)
	}
	if err != nil {
		return nil, fmt.Errorf("SO_PASSCRED: %w", err)
	}
	o.SoPasscred = proto.Bool(pc != 0)
	if err := dumpMoreSkOpts(fd, o); err != nil {
		return nil, err
	}
	return o, nil
}

// dumpMoreSkOpts reads the socket options every socket family has beyond
// buffers, timeouts and credentials. An option this socket lacks is left
// out.
func dumpMoreSkOpts(fd int, o *skopts.SkOptsEntry) error {
	absent := func(err error) bool {
		return errors.Is(err, unix.ENOPROTOOPT) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)
	}
	for _, u := range []struct {
		opt  int
		name string
		to   **uint32
	}{{unix.SO_PRIORITY, "SO_PRIORITY", &o.SoPriority}, {unix.SO_RCVLOWAT, "SO_RCVLOWAT", &o.SoRcvlowat},
		{unix.SO_MARK, "SO_MARK", &o.SoMark}, {kernel.SO_BUF_LOCK, "SO_BUF_LOCK", &o.SoBufLock}} {
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, u.opt)
		if absent(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", u.name, err)
		}
		*u.to = proto.Uint32(uint32(v))
	}
	for _, b := range []struct {
		opt  int
		name string
		to   **bool
	}{{unix.SO_DONTROUTE, "SO_DONTROUTE", &o.SoDontroute}, {unix.SO_NO_CHECK, "SO_NO_CHECK", &o.SoNoCheck},
		// Unix and netlink sockets only, since Linux 6.16.
		{unix.SO_PASSSEC, "SO_PASSSEC", &o.SoPasssec}} {
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, b.opt)
		if absent(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", b.name, err)
		}
		*b.to = proto.Bool(v != 0)
	}
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_OOBINLINE); err == nil && v != 0 {
		o.SoOobinline = proto.Uint32(1)
	}
	if l, err := unix.GetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER); err == nil && l.Onoff != 0 {
		o.SoLinger = proto.Uint32(uint32(l.Linger))
	}
	if dev, err := unix.GetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE); err == nil && dev != "" {
		o.SoBoundDev = proto.String(dev)
	}
	prog, err := kernel.SocketFilter(fd)
	if err != nil && !absent(err) {
		return fmt.Errorf("SO_GET_FILTER: %w", err)
	}
	o.SoFilter = prog
	return nil
}

// restoreMoreSkOpts sets what dumpMoreSkOpts read, the buffer locks
// last: forcing the sizes locked them both.
func restoreMoreSkOpts(fd int, o *skopts.SkOptsEntry) error {
	set := func(opt int, name string, v int) error {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, v); err != nil {
			return fmt.Errorf("%s %d: %w", name, v, err)
		}
		return nil
	}
	for _, u := range []struct {
		opt  int
		name string
		v    *uint32
	}{{unix.SO_PRIORITY, "SO_PRIORITY", o.SoPriority}, {unix.SO_RCVLOWAT, "SO_RCVLOWAT", o.SoRcvlowat}, {unix.SO_MARK, "SO_MARK", o.SoMark}} {
		if u.v != nil && *u.v != 0 {
			if err := set(u.opt, u.name, int(*u.v)); err != nil {
				return err
			}
		}
	}
	if o.GetSoDontroute() {
		if err := set(unix.SO_DONTROUTE, "SO_DONTROUTE", 1); err != nil {
			return err
		}
	}
	if o.GetSoNoCheck() {
		if err := set(unix.SO_NO_CHECK, "SO_NO_CHECK", 1); err != nil {
			return err
		}
	}
	if o.GetSoPasssec() {
		if err := set(unix.SO_PASSSEC, "SO_PASSSEC", 1); err != nil {
			return err
		}
	}
	if o.GetSoOobinline() != 0 {
		if err := set(unix.SO_OOBINLINE, "SO_OOBINLINE", 1); err != nil {
			return err
		}
	}
	if o.SoLinger != nil {
		if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: int32(o.GetSoLinger())}); err != nil {
			return fmt.Errorf("SO_LINGER %d: %w", o.GetSoLinger(), err)
		}
	}
	if dev := o.GetSoBoundDev(); dev != "" {
		if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, dev); err != nil {
			return fmt.Errorf("SO_BINDTODEVICE %q: %w", dev, err)
		}
	}
	if err := kernel.SetSocketFilter(fd, o.GetSoFilter()); err != nil {
		return fmt.Errorf("SO_ATTACH_FILTER (%d instructions): %w", len(o.GetSoFilter()), err)
	}
	if o.SoBufLock != nil {
		if err := set(kernel.SO_BUF_LOCK, "SO_BUF_LOCK", int(o.GetSoBufLock())); err != nil {
			return err
		}
	}
	return nil
}

// queuePeekTimeout bounds the reading of one socket's receive queue.
const queuePeekTimeout = 10 * time.Second

// dumpSkQueue copies the receive queue of the socket fd into
// sk-queues.img without taking anything from it: MSG_PEEK from an offset
// that SO_PEEK_OFF moves on after each read. The socket's own peek offset
// is put back afterwards.
func dumpSkQueue(d *fdDump, fd int, id uint32, sk *unixDiag) error {
	where := fmt.Sprintf("%s: unix socket %d: receive queue", d.where, sk.ino)
	old, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err != nil {
		return fmt.Errorf("%s: SO_PEEK_OFF: %w", where, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		return fmt.Errorf("%s: SO_PEEK_OFF: %w", where, err)
	}
	defer unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, old)
	// Past its last message a SOCK_SEQPACKET socket whose peer shut down
	// or closed answers a non-blocking peek with 0 (end of file), not
	// EAGAIN, and does so for ever (net/unix/af_unix.c,
	// unix_dgram_recvmsg). An empty message also reads as 0 bytes; with
	// SO_PASSCRED on, a message comes with the sender's credentials and
	// the end of file with no control message at all, which tells them
	// apart. The socket's own SO_PASSCRED is put back afterwards.
	if sk.typ == unix.SOCK_SEQPACKET {
		pc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED)
		if err != nil {
			return fmt.Errorf("%s: SO_PASSCRED: %w", where, err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
			return fmt.Errorf("%s: SO_PASSCRED: %w", where, err)
		}
		defer unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, pc)
	}
	// A queue holds a bounded number of messages; a peek that goes on
	// answering past this deadline is a kernel behaviour ctcr does not
	// know, and fails by name rather than hanging the dump.
	deadline := time.Now().Add(queuePeekTimeout)
	size := 1 << 20
	if int(sk.rqueue) > size {
		size = int(sk.rqueue)
	}
	buf := make([]byte, size)
	oob := make([]byte, unix.CmsgSpace(253*4))
	total := 0
	for {
		flags := unix.MSG_PEEK | unix.MSG_DONTWAIT
		if sk.typ != unix.SOCK_STREAM {
			flags |= unix.MSG_TRUNC // the datagram's real length, to see truncation
		}
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, flags|unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		var scm []*skpacket.ScmEntry
		if oobn > 0 {
			if scm, err = takeRights(d, sk, oob[:oobn]); err != nil {
				return err
			}
		}
		if n == 0 && sk.typ == unix.SOCK_STREAM {
			break // end of stream: the peer is gone or shut down
		}
		if n == 0 && sk.typ == unix.SOCK_SEQPACKET && oobn == 0 {
			break // end of file, not a message: no credentials came with it
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: still peeking after %v (%d bytes read of %d): %w", where, queuePeekTimeout, total, sk.rqueue, os.ErrDeadlineExceeded)
		}
		if n > len(buf) {
			return d.unsupported(fmt.Sprintf("unix socket %d has a %d-byte datagram queued, more than ctcr reads (%d)", sk.ino, n, len(buf)))
		}
		total += n
		data := append([]byte(nil), buf[:n]...)
		d.files.addImage(images.SkQueues, &skpacket.SkPacketEntry{IdFor: proto.Uint32(id), Length: proto.Uint32(uint32(n)), Scm: scm}, data)
	}
	if sk.typ != unix.SOCK_DGRAM && total != int(sk.rqueue) {
		return fmt.Errorf("%s: peeked %d bytes, sock_diag counts %d", where, total, sk.rqueue)
	}
	return nil
}

// inFlightMsg is a queued message that carries fds (SCM_RIGHTS): peeking
// at it passed them to ctcr. They are dumped as files of their own once
// every task's fds are (dumpInFlight), and the message's scm entry lists
// their file ids, as CRIU's does.
type inFlightMsg struct {
	scm   *skpacket.ScmEntry
	fds   []int
	where string
}

// takeRights records the fds a peeked message carries for dumpInFlight.
// ctcr keeps them open until the dump ends, so that a task's fd to the
// same file is found to share it. An fd in flight on a socket that is
// itself in flight is refused: it could lead back to itself.
func takeRights(d *fdDump, sk *unixDiag, oob []byte) ([]*skpacket.ScmEntry, error) {
	cms, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("%s: unix socket %d: control message: %w", d.where, sk.ino, err)
	}
	var out []*skpacket.ScmEntry
	for _, cm := range cms {
		fds, err := unix.ParseUnixRights(&cm)
		if err != nil {
			continue // credentials (SO_PASSCRED) are the sender's, made again when sent again
		}
		for _, f := range fds {
			d.files.closers = append(d.files.closers, func() { unix.Close(f) })
		}
		if d.files.inFlight {
			return nil, d.unsupported(fmt.Sprintf("unix socket %d, itself in flight, carries %d fds in flight (SCM_RIGHTS)", sk.ino, len(fds)))
		}
		e := &skpacket.ScmEntry{Type: proto.Uint32(unix.SCM_RIGHTS)}
		d.files.flights = append(d.files.flights, inFlightMsg{scm: e, fds: fds, where: fmt.Sprintf("%s: unix socket %d", d.where, sk.ino)})
		out = append(out, e)
	}
	return out, nil
}

// dumpInFlight dumps the fds in flight in every socket queue, through
// the file kinds as if ctcr's copy were a task's fd.
func (t *fileTable) dumpInFlight() error {
	t.inFlight = true
	defer func() { t.inFlight = false }()
	for _, m := range t.flights {
		for i, f := range m.fds {
			fd := &fdDump{pid: os.Getpid(), fd: f, where: fmt.Sprintf("%s: fd %d of %d in flight", m.where, i+1, len(m.fds)), files: t}
			fe, err := dumpOneFd(fd)
			if fd.dup != nil {
				fd.dup.Close()
			}
			if err != nil {
				return err
			}
			m.scm.Rights = append(m.scm.Rights, fe.GetId())
		}
	}
	t.flights = nil
	return nil
}

// finishUnixSockets checks, once every task is dumped, that each socket's
// peer and each pending connection was dumped too.
func finishUnixSockets(t *fileTable) error {
	st, _ := t.kinds[unixKindName].(*unixDumpState)
	if st == nil {
		return nil
	}
	for _, ino := range st.order {
		s := st.dumped[ino]
		peer := s.e.GetPeer()
		if peer != 0 && st.external[peer] != nil {
			continue // dumped as external (--ext-unix-sk)
		}
		if peer != 0 && st.dumped[peer] == nil {
			pd := st.diag[peer]
			desc, hint := "", ""
			if pd != nil {
				desc = " (" + unixSkDesc(pd) + ")"
				if len(pd.name) > 0 && !st.extAllowed {
					hint = "; --ext-unix-sk dumps it and reconnects it to that name at restore"
				}
			}
			return fmt.Errorf("%s: unix socket %d (%s): its peer, socket %d%s, is outside the dumped tree%s: %w",
				s.where, ino, unixSkDesc(s.d), peer, desc, hint, ErrUnsupported)
		}
		if peer != 0 && s.d.typ == unix.SOCK_DGRAM {
			p := st.dumped[peer]
			if p.e.GetPeer() != ino && len(p.d.name) == 0 {
				return fmt.Errorf("%s: unix socket %d is connected to socket %d, which has no name to connect to again: %w", s.where, ino, peer, ErrUnsupported)
			}
		}
		for _, ic := range s.d.icons {
			if st.dumped[ic] == nil {
				return fmt.Errorf("%s: unix socket %d (%s): a connection waiting in its backlog comes from socket %d, outside the dumped tree: %w",
					s.where, ino, unixSkDesc(s.d), ic, ErrUnsupported)
			}
		}
	}
	return st.writeCreds(t)
}

// --- restore ---

// unixRestore holds every unix socket of the checkpoint once built.
type unixRestore struct {
	byIno    map[uint32]*skunix.UnixSkEntry
	external map[uint32]*skunix.UnixSkEntry // USK_EXTERN entries: peers outside the tree
	files    map[uint32]*os.File            // by inode
	// nets are the network namespaces of sockets of a nested one, by
	// image id, opened before the build (unixNets).
	nets map[uint32]*os.File

	// Peer credentials (sk_unix_cred.go): those recorded, by inode (nil
	// without unix-creds.json); the tasks to make calls in; where
	// remote calls go while the build runs on a thread of its own; the
	// tree's id maps; whom each listener last listened as; the listeners
	// whose credentials are the recorded ones.
	creds          map[uint32]*unixCredsEntry
	tasks          *unixTasks
	tracer         chan tracerCall
	uidMap, gidMap idMap
	listening      map[uint32]*unixCred
	credsApplied   map[uint32]bool
}

func openUnixSocket(r *fileRestore, e *fdinfo.FileEntry) (*os.File, error) {
	ue := e.GetUsk()
	if ue == nil {
		return nil, corruptf("files.img", "unix socket id %d without its entry", e.GetId())
	}
	ur, _ := r.state[unixKindName].(*unixRestore)
	if ur == nil {
		ur = &unixRestore{byIno: map[uint32]*skunix.UnixSkEntry{}, external: map[uint32]*skunix.UnixSkEntry{}, files: map[uint32]*os.File{}}
		r.state[unixKindName] = ur
		if err := ur.loadCreds(r); err != nil {
			return nil, err
		}
		closeNets, err := ur.openNets(r)
		if err != nil {
			return nil, err
		}
		err = ur.buildInView(r)
		closeNets()
		if err != nil {
			return nil, err
		}
	}
	f := ur.files[ue.GetIno()]
	if f == nil {
		return nil, fmt.Errorf("unix socket %d was not built", ue.GetIno())
	}
	return f, nil
}

func unixAddr(name []byte) *unix.SockaddrUnix {
	if len(name) > 0 && name[0] == 0 {
		return &unix.SockaddrUnix{Name: "@" + string(name[1:])}
	}
	return &unix.SockaddrUnix{Name: string(name)}
}

func unixName(name []byte) string {
	if len(name) > 0 && name[0] == 0 {
		return "@" + string(name[1:])
	}
	return string(name)
}

// dial recreates socket e (its type, its own name) and connects it to
// the listener l restored already, as the process as names if it can
// (connectAs), else from ctcr.
func (ur *unixRestore) dial(r *fileRestore, e, l *skunix.UnixSkEntry, as *unixCred) error {
	fd, err := ur.socketFor(e)
	if err != nil {
		return err
	}
	f := ur.newSocket(r, e, fd)
	if err := bindUnix(r, fd, e); err != nil {
		return err
	}
	// The client gets a copy of the listener's credentials: make them
	// those e had.
	if err := ur.listenAs(r, l, ur.peerOf(e)); err != nil {
		return err
	}
	if ok, err := ur.connectAs(r, f, e, l, as); ok || err != nil {
		return err
	}
	return inNameDir(l, func() error {
		if err := unix.Connect(fd, unixAddr(l.GetName())); err != nil {
			return fmt.Errorf("connect to %q: %w", unixName(l.GetName()), err)
		}
		return nil
	})
}

func (ur *unixRestore) newSocket(r *fileRestore, e *skunix.UnixSkEntry, fd int) *os.File {
	f := os.NewFile(uintptr(fd), fmt.Sprintf("socket:[%d]", e.GetIno()))
	r.hold(f)
	ur.files[e.GetIno()] = f
	return f
}

// bindUnix gives fd the name of e.
//
// It runs with the restored tree's root as its own (buildInView chroots
// its thread into it when that is not ctcr's), so bind and connect
// resolve a name as the tree's processes would, never above that root,
// and the kernel records the name the task gave. A relative name is
// bound from the directory it was bound from (inNameDir). The checks
// before and the owner, mode and unlink after act through the socket's
// directory, resolved once inside that root, on the entry itself: never
// on what a symlink planted there points at.
//
// What the name leads to at restore:
//   - nothing: bind;
//   - for a socket whose name was unlinked or replaced at the dump
//     (deleted): whatever is there now is moved aside for the moment, the
//     socket is bound and its name unlinked, and the file moved back, as
//     CRIU does;
//   - a socket file no socket is bound to (left behind by the dumped
//     socket, whose tree was killed): removed, then bind;
//   - a socket file a live socket is bound to, or any other file: the
//     name is taken, refused naming it.
func bindUnix(r *fileRestore, fd int, e *skunix.UnixSkEntry) error {
	name := e.GetName()
	if len(name) == 0 {
		return nil
	}
	if name[0] == 0 {
		if err := unix.Bind(fd, unixAddr(name)); err != nil {
			return fmt.Errorf("bind to %q: %w", unixName(name), err)
		}
		return nil
	}
	return inNameDir(e, func() error { return bindUnixPath(r, fd, e) })
}

func bindUnixPath(r *fileRestore, fd int, e *skunix.UnixSkEntry) error {
	name := e.GetName()
	path := string(name)
	// A relative name is bound from the working directory (the root's
	// top inside the view, or the name's directory: inNameDir).
	top := "."
	if strings.HasPrefix(path, "/") {
		top = "/"
	}
	root, err := inroot.Open(top, "the restored tree's root")
	if err != nil {
		return err
	}
	dir, err := root.Parent(path, inroot.InRoot)
	root.Close()
	if err != nil {
		return fmt.Errorf("bind to %q: %w", path, err)
	}
	defer dir.Close()
	aside := ""
	if st, err := dir.Lstat(); err == nil {
		switch {
		case e.GetDeleted():
			aside = fmt.Sprintf(".ctcr-aside-%d-%d-%s", os.Getpid(), e.GetIno(), dir.Base)
			if len(aside) > 255 {
				aside = aside[:255]
			}
			if err := unix.Renameat2(dir.Fd(), dir.Base, dir.Fd(), aside, unix.RENAME_NOREPLACE); err != nil {
				return fmt.Errorf("bind to %q (unlinked at the dump): move the file now there aside: %w", path, err)
			}
			defer func() {
				if aside != "" {
					unix.Renameat2(dir.Fd(), aside, dir.Fd(), dir.Base, unix.RENAME_NOREPLACE)
				}
			}()
		case st.Mode&unix.S_IFMT == unix.S_IFSOCK:
			if user, err := unixSocketBoundTo(fd, &st); err != nil {
				return fmt.Errorf("bind to %q: is the socket file there in use: %w", path, err)
			} else if user != nil {
				return fmt.Errorf("bind to %q: the socket file there is in use by a live socket (inode %d, %s): %w", path, user.ino, unixSkDesc(user), unix.EADDRINUSE)
			}
			if err := dir.Unlink(); err != nil {
				return fmt.Errorf("remove the stale socket file: %w", err)
			}
		default:
			return fmt.Errorf("bind to %q: a file of mode %#o is there: %w", path, st.Mode, unix.EADDRINUSE)
		}
	}
	if err := unix.Bind(fd, unixAddr(name)); err != nil {
		return fmt.Errorf("bind to %q: %w", unixName(name), err)
	}
	if st, err := dir.Lstat(); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("bind to %q: the name does not lead to the socket bound through it", path)
	}
	if p := e.GetFilePerms(); p != nil {
		if err := dir.Lchmod(p.GetMode() & 07777); err != nil {
			return err
		}
		if err := dir.Lchown(int(p.GetUid()), int(p.GetGid())); err != nil {
			return err
		}
	}
	if e.GetDeleted() {
		if err := dir.Unlink(); err != nil {
			return err
		}
		if aside != "" {
			if err := unix.Renameat2(dir.Fd(), aside, dir.Fd(), dir.Base, unix.RENAME_NOREPLACE); err != nil {
				return fmt.Errorf("bind to %q (unlinked at the dump): move the file that was there back: %w", path, err)
			}
			aside = ""
		}
	}
	return nil
}

// unixSocketBoundTo returns the socket, in the network namespace of the
// socket fd being bound, whose name is the socket file st, or nil if
// there is none:
// such a file is then stale. sock_diag gives a bound socket's inode and
// device (the kernel's dev_t: major<<20 | minor, unix_diag.c).
func unixSocketBoundTo(fd int, st *unix.Stat_t) (*unixDiag, error) {
	s, err := diagSocketBeside(fd)
	if err != nil {
		return nil, err
	}
	defer unix.Close(s)
	all, err := unixDiagAllOn(s)
	if err != nil {
		return nil, err
	}
	for _, d := range all {
		if d.hasVFS && uint64(d.vfsIno) == st.Ino && unix.Mkdev(d.vfsDev>>20, d.vfsDev&0xfffff) == st.Dev {
			return d, nil
		}
	}
	return nil, nil
}

// inNameDir runs fn with the calling thread in the directory e's name
// was bound from, if that name is relative (name_dir, a path in the
// tree's root), so that bind and connect find it as the binder did. The
// thread has an fs of its own then (buildInView).
func inNameDir(e *skunix.UnixSkEntry, fn func() error) error {
	name := e.GetName()
	if e.NameDir == nil || len(name) == 0 || name[0] == 0 || name[0] == '/' {
		return fn()
	}
	back, err := unix.Open(".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("the working directory: %w", err)
	}
	defer unix.Close(back)
	root, err := inroot.Open("/", "the restored tree's root")
	if err != nil {
		return err
	}
	dir, err := root.OpenFile(e.GetNameDir(), unix.O_PATH|unix.O_DIRECTORY, 0, inroot.InRoot)
	root.Close()
	if err != nil {
		return fmt.Errorf("unix socket %d: the directory of its relative name %q: %w", e.GetIno(), unixName(name), err)
	}
	defer dir.Close()
	if err := unix.Fchdir(int(dir.Fd())); err != nil {
		return fmt.Errorf("unix socket %d: enter %s, the directory of its relative name: %w", e.GetIno(), e.GetNameDir(), err)
	}
	defer unix.Fchdir(back)
	return fn()
}

// anyRelativeName reports whether a unix socket of the checkpoint has a
// relative name: building them needs a thread of its own fs.
func anyRelativeName(r *fileRestore) bool {
	for _, fe := range r.cp.files {
		if ue := fe.GetUsk(); ue != nil && ue.NameDir != nil {
			return true
		}
	}
	return false
}

func unixSocket(typ uint32) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, int(typ)|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket(AF_UNIX)", err)
	}
	return fd, nil
}

// buildInView builds every unix socket as the restored tree sees the
// world: in its network namespace (abstract names, and sock_diag at the
// next dump, are per namespace) and under its root (names are paths in
// its mounts). For a container that runs on a thread of its own; the
// other files fds in flight carry are opened first, outside it, since
// their kinds find paths through ctcr's /proc.
func (ur *unixRestore) buildInView(r *fileRestore) error {
	foreign, err := nsthread.Foreign(r.rootPid)
	if err != nil {
		return err
	}
	// Relative names are bound and reached from their directory: the
	// thread changes its working directory, which must be its own.
	ownFS := func() error { return unix.Unshare(unix.CLONE_FS) }
	if !foreign {
		if anyRelativeName(r) {
			return ur.runAway(ownFS, func() error { return ur.build(r) })
		}
		return ur.build(r)
	}
	x, err := r.readExtra(images.SkQueues, func() proto.Message { return &skpacket.SkPacketEntry{} }, func(m proto.Message) int64 {
		return int64(m.(*skpacket.SkPacketEntry).GetLength())
	})
	if errors.Is(err, os.ErrNotExist) {
		// Inside the view the images' path would mean the tree's.
		x, err = &extraImage{kind: images.SkQueues}, nil
		r.state["image:"+images.SkQueues.Name] = x
	}
	if err != nil {
		return err
	}
	for _, m := range x.entries {
		for _, scm := range m.(*skpacket.SkPacketEntry).GetScm() {
			for _, id := range scm.GetRights() {
				if fe := r.cp.files[id]; fe != nil && fe.GetType() != fdinfo.FdTypes_UNIXSK {
					if _, err := r.get(id); err != nil {
						return fmt.Errorf("fd in flight (file id %d): %w", id, err)
					}
				}
			}
		}
	}
	return ur.runAway(func() error {
		if err := nsthread.View(r.rootPid); err != nil {
			return err
		}
		return ownFS()
	}, func() error { return ur.build(r) })
}

// build makes every unix socket of the checkpoint, in the order their
// relations need (see unixSockets).
func (ur *unixRestore) build(r *fileRestore) error {
	var all []*skunix.UnixSkEntry
	for _, fe := range r.cp.files {
		if ue := fe.GetUsk(); fe.GetType() == fdinfo.FdTypes_UNIXSK && ue != nil {
			if ue.GetUflags()&uskExtern != 0 {
				ur.external[ue.GetIno()] = ue
				continue
			}
			all = append(all, ue)
			ur.byIno[ue.GetIno()] = ue
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].GetId() < all[j].GetId() })
	fail := func(e *skunix.UnixSkEntry, err error) error {
		return fmt.Errorf("unix socket %d (file id %d): %w", e.GetIno(), e.GetId(), err)
	}
	mutual := func(e *skunix.UnixSkEntry) *skunix.UnixSkEntry {
		if p := ur.byIno[e.GetPeer()]; p != nil && p.GetPeer() == e.GetIno() && p.GetIno() != e.GetIno() {
			return p
		}
		return nil
	}
	// 1. Listeners and bound sockets without a mutual peer: these have
	// names others connect to.
	for _, e := range all {
		if mutual(e) != nil || len(e.GetName()) == 0 {
			continue
		}
		if e.GetState() == tcpEstablished && e.GetType() != unix.SOCK_DGRAM {
			continue // a pending connection's client, or a half of a pair
		}
		fd, err := ur.socketFor(e)
		if err != nil {
			return fail(e, err)
		}
		ur.newSocket(r, e, fd)
		if err := bindUnix(r, fd, e); err != nil {
			return fail(e, err)
		}
		if e.GetState() == tcpListen {
			if err := unix.Listen(fd, int(e.GetBacklog())); err != nil {
				return fail(e, fmt.Errorf("listen: %w", err))
			}
		}
	}
	// 2. Connections accepted from a listener: connect to it, accept.
	// Before the pending ones, which would otherwise be accepted first.
	// Each connects as the task that had connected it: the accepted
	// socket's recorded peer (sk_unix_cred.go).
	for _, e := range all {
		p := mutual(e)
		if p == nil || ur.files[e.GetIno()] != nil || e.GetType() == unix.SOCK_DGRAM || len(e.GetName()) == 0 {
			continue
		}
		l := ur.listenerNamed(all, e)
		if l == nil || ur.files[p.GetIno()] != nil {
			continue
		}
		if err := ur.dial(r, p, l, ur.peerOf(e)); err != nil {
			return fail(p, err)
		}
		afd, _, err := unix.Accept4(int(ur.files[l.GetIno()].Fd()), unix.SOCK_CLOEXEC)
		if err != nil {
			return fail(e, fmt.Errorf("accept on %q: %w", unixName(l.GetName()), err))
		}
		ur.newSocket(r, e, afd)
	}
	// 3. Connections waiting in a listener's backlog, in its order (the
	// clients' file ids follow dump order; the backlog's own order is
	// kept by connecting in the order of the icons a listener had).
	for _, e := range all {
		if ur.files[e.GetIno()] != nil || e.GetState() != tcpEstablished || e.GetType() == unix.SOCK_DGRAM || mutual(e) != nil {
			continue
		}
		l := ur.byIno[e.GetPeer()]
		if l == nil || l.GetState() != tcpListen {
			continue
		}
		if err := ur.dial(r, e, l, ur.connectorOf(e)); err != nil {
			return fail(e, err)
		}
	}
	// Listeners take their own credentials back (clients of a listener
	// listened on again since they connected had others).
	if err := ur.settleListeners(r, all); err != nil {
		return err
	}
	// 4. Other pairs: socketpair, then names if they had any.
	for _, e := range all {
		p := mutual(e)
		if p == nil || ur.files[e.GetIno()] != nil {
			continue
		}
		fds, err := ur.pairOf(r, e, p)
		if err != nil {
			return fail(e, err)
		}
		ur.newSocket(r, e, fds[0])
		ur.newSocket(r, p, fds[1])
		if err := bindUnix(r, fds[0], e); err != nil {
			return fail(e, err)
		}
		if err := bindUnix(r, fds[1], p); err != nil {
			return fail(p, err)
		}
	}
	// 5. The rest: unbound or bound sockets, datagram sockets connected
	// one way to a named one, and connections whose peer had closed.
	var orphans []*skunix.UnixSkEntry
	for _, e := range all {
		if ur.files[e.GetIno()] != nil {
			continue
		}
		if e.GetState() == tcpEstablished && e.GetPeer() == 0 {
			orphans = append(orphans, e)
			continue
		}
		fd, err := ur.socketFor(e)
		if err != nil {
			return fail(e, err)
		}
		ur.newSocket(r, e, fd)
		if err := bindUnix(r, fd, e); err != nil {
			return fail(e, err)
		}
	}
	for _, e := range all {
		p := ur.byIno[e.GetPeer()]
		if e.GetType() != unix.SOCK_DGRAM || p == nil || mutual(e) != nil {
			continue
		}
		if err := inNameDir(p, func() error { return unix.Connect(int(ur.files[e.GetIno()].Fd()), unixAddr(p.GetName())) }); err != nil {
			return fail(e, fmt.Errorf("connect to %q: %w", unixName(p.GetName()), err))
		}
	}
	// A connection whose peer is gone: a pair whose other end sends the
	// queue, then closes.
	closing := map[uint32]int{}
	for _, e := range orphans {
		fds, err := ur.pairOf(r, e, nil)
		if err != nil {
			return fail(e, err)
		}
		ur.newSocket(r, e, fds[0])
		closing[e.GetIno()] = fds[1]
	}
	// Queued data, sent by whoever reaches the socket.
	if err := ur.refill(r, mutual, closing); err != nil {
		return err
	}
	for _, fd := range closing {
		unix.Close(fd)
	}
	// Sockets whose peer was outside the tree connect to it again, once
	// their queue is back: a connected datagram socket takes datagrams
	// from its peer only.
	for _, e := range all {
		if p := ur.external[e.GetPeer()]; p != nil {
			if err := connectExternal(r, int(ur.files[e.GetIno()].Fd()), e, p); err != nil {
				return fail(e, err)
			}
		}
	}
	// Shutdown, options, flags.
	for _, e := range all {
		f := ur.files[e.GetIno()]
		fd := int(f.Fd())
		if how := e.GetShutdown(); how != skopts.SkShutdown_NONE {
			m := map[skopts.SkShutdown]int{skopts.SkShutdown_READ: unix.SHUT_RD, skopts.SkShutdown_WRITE: unix.SHUT_WR, skopts.SkShutdown_BOTH: unix.SHUT_RDWR}[how]
			if err := unix.Shutdown(fd, m); err != nil && err != unix.ENOTCONN {
				return fail(e, fmt.Errorf("shutdown %v: %w", how, err))
			}
		}
		if err := restoreSkOpts(fd, e.GetOpts()); err != nil {
			return fail(e, err)
		}
		status := int(e.GetFlags()) & (unix.O_NONBLOCK | unix.O_ASYNC)
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, status); err != nil {
			return fail(e, fmt.Errorf("set flags %#x: %w", status, err))
		}
	}
	return nil
}

// extConnectTimeout bounds a connect to an external listener whose
// backlog is full (unix stream connect waits for room for SO_SNDTIMEO).
const extConnectTimeout = 10 * time.Second

// connectExternal connects fd, the socket of e, to its peer p outside
// the tree by p's name, as CRIU does with --ext-unix-sk.
func connectExternal(r *fileRestore, fd int, e, p *skunix.UnixSkEntry) error {
	where := fmt.Sprintf("its peer, socket %d %q, was outside the dumped tree", p.GetIno(), unixName(p.GetName()))
	if !r.opts.ExtUnixSk {
		return fmt.Errorf("%s: restore with --ext-unix-sk to connect to it again: %w", where, ErrUnsupported)
	}
	if len(p.GetName()) == 0 {
		return corruptf(images.Files.FileName(), "external unix socket %d without a name", p.GetIno())
	}
	tv := unix.NsecToTimeval(extConnectTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return fmt.Errorf("SO_SNDTIMEO: %w", err)
	}
	for {
		err := unix.Connect(fd, unixAddr(p.GetName()))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: connect to %q again: %w", where, unixName(p.GetName()), err)
		}
		return nil
	}
}

// listenerNamed returns the listening socket e was accepted from: the
// one of its type with its name.
func (ur *unixRestore) listenerNamed(all []*skunix.UnixSkEntry, e *skunix.UnixSkEntry) *skunix.UnixSkEntry {
	for _, l := range all {
		if l.GetState() == tcpListen && l.GetType() == e.GetType() && string(l.GetName()) == string(e.GetName()) {
			return l
		}
	}
	return nil
}

// refill sends every queued message again into the socket it was queued
// on: from its peer, from the closing end of an orphan's pair, or for a
// named datagram socket from a socket of ctcr's.
func (ur *unixRestore) refill(r *fileRestore, mutual func(*skunix.UnixSkEntry) *skunix.UnixSkEntry, closing map[uint32]int) error {
	x, err := r.readExtra(images.SkQueues, func() proto.Message { return &skpacket.SkPacketEntry{} }, func(m proto.Message) int64 {
		return int64(m.(*skpacket.SkPacketEntry).GetLength())
	})
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	byID := map[uint32]*skunix.UnixSkEntry{}
	for _, e := range ur.byIno {
		byID[e.GetId()] = e
	}
	// Raise the senders' buffers while refilling: the original queue may
	// have been filled by a sender with room to spare.
	raised := map[int]bool{}
	var tmp = map[uint32]int{}
	defer func() {
		for _, fd := range tmp {
			unix.Close(fd)
		}
	}()
	for i, m := range x.entries {
		pe := m.(*skpacket.SkPacketEntry)
		e := byID[pe.GetIdFor()]
		if e == nil {
			return corruptf(images.SkQueues.FileName(), "queued data for file id %d, which is no unix socket", pe.GetIdFor())
		}
		data := x.payload[i]
		var from int
		var to unix.Sockaddr
		switch p := mutual(e); {
		case p != nil:
			from = int(ur.files[p.GetIno()].Fd())
		case closing[e.GetIno()] != 0:
			from = closing[e.GetIno()]
		case e.GetType() == unix.SOCK_DGRAM && len(e.GetName()) > 0:
			if tmp[e.GetType()] == 0 {
				fd, err := ur.socketFor(e)
				if err != nil {
					return err
				}
				tmp[e.GetType()] = fd
			}
			from, to = tmp[e.GetType()], unixAddr(e.GetName())
		default:
			return fmt.Errorf("unix socket %d: no way to queue its %d bytes again: no peer and no name", e.GetIno(), len(data))
		}
		if !raised[from] {
			unix.SetsockoptInt(from, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 64<<20)
			raised[from] = true
		}
		oob, err := inFlightRights(r, e, pe)
		if err != nil {
			return err
		}
		for off := 0; off < len(data) || len(data) == 0; {
			var n int
			err := inNameDir(e, func() (err error) {
				n, err = unix.SendmsgN(from, data[off:], oob, to, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
				return err
			})
			oob = nil // the fds go with the first part only
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return fmt.Errorf("unix socket %d: queue %d bytes again: %w", e.GetIno(), len(data), err)
			}
			off += n
			if len(data) == 0 {
				break
			}
		}
	}
	return nil
}

// inFlightRights returns the control message that sends the fds a
// queued message carried (SCM_RIGHTS) along with it again, opening their
// files.
func inFlightRights(r *fileRestore, e *skunix.UnixSkEntry, pe *skpacket.SkPacketEntry) ([]byte, error) {
	var oob []byte
	for _, scm := range pe.GetScm() {
		if scm.GetType() != unix.SCM_RIGHTS {
			return nil, corruptf(images.SkQueues.FileName(), "unix socket %d: control message of type %d, not SCM_RIGHTS", e.GetIno(), scm.GetType())
		}
		fds := make([]int, 0, len(scm.GetRights()))
		for _, id := range scm.GetRights() {
			if r.cp.files[id] == nil {
				return nil, corruptf(images.SkQueues.FileName(), "unix socket %d: an fd in flight is file id %d, which files.img lacks", e.GetIno(), id)
			}
			f, err := r.get(id)
			if err != nil {
				return nil, fmt.Errorf("unix socket %d: fd in flight (file id %d): %w", e.GetIno(), id, err)
			}
			fds = append(fds, int(f.Fd()))
		}
		oob = append(oob, unix.UnixRights(fds...)...)
	}
	return oob, nil
}

func restoreSkOpts(fd int, o *skopts.SkOptsEntry) error {
	if o == nil {
		return nil
	}
	// getsockopt reports twice what setsockopt was given: give half back.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, int(o.GetSoSndbuf()/2)); err != nil {
		return fmt.Errorf("SO_SNDBUF %d: %w", o.GetSoSndbuf(), err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, int(o.GetSoRcvbuf()/2)); err != nil {
		return fmt.Errorf("SO_RCVBUF %d: %w", o.GetSoRcvbuf(), err)
	}
	stv := unix.Timeval{Sec: int64(o.GetSoSndTmoSec()), Usec: int64(o.GetSoSndTmoUsec())}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &stv); err != nil {
		return fmt.Errorf("SO_SNDTIMEO: %w", err)
	}
	rtv := unix.Timeval{Sec: int64(o.GetSoRcvTmoSec()), Usec: int64(o.GetSoRcvTmoUsec())}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &rtv); err != nil {
		return fmt.Errorf("SO_RCVTIMEO: %w", err)
	}
	if o.GetSoPasscred() {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
			return fmt.Errorf("SO_PASSCRED: %w", err)
		}
	}
	return restoreMoreSkOpts(fd, o)
}
