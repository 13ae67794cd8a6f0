package criu

import (
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/tty"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/proc"
)

// ttys are Unix98 pseudo-terminals: the master a task opened from
// /dev/ptmx and the slave /dev/pts/N. A pair whose two ends are held in
// the dumped tree is restored as a new pair with the same settings; a
// slave whose master is outside (the terminal the job runs on) becomes
// ctcr's own terminal with --shell-job and is refused without it.
//
// The images are CRIU's (criu/tty.c), so crit decodes them:
//
//	files.img:     FileEntry{type TTY, tty: tty_file_entry{id, tty_info_id, flags}}
//	               one per open file description of either end
//	tty-info.img:  TTY_INFO magic, then one tty_info_entry per end of a
//	               pair, with id = index<<1 | 1 for the master, index<<1
//	               for the slave: type PTY, the pty index, termios,
//	               locked termios, window size, packet mode, the slave's
//	               lock, exclusive mode, session and foreground group
//
// The termios and window size of a pty live in the slave's tty; ioctls on
// the master reach them through its link, so both entries carry the same
// values and restore sets them once through the new master. No
// tty_file_entry has a regf_id: CRIU then makes the path up itself
// (pty_alloc_reg), /dev/ptmx or /dev/pts/<index>.
//
//	tty-data.img:  TTY_DATA magic, then one tty_data_entry per end of a
//	               pair with bytes buffered for its readers: tty_id is
//	               the end's tty_info id (tty_data.go says how they are
//	               taken and put back)
//
// CRIU keeps buffered bytes only with --tty-data, and names the entry by
// a tty file id; ctcr always keeps them, by tty_info id: an end has one
// buffer, whichever of its files a task holds.
//
// Besides the two ends of a pty, a task may hold:
//
//   - a slave whose master was closed: the kernel hung it up and removed
//     its /dev/pts node (the fd's link ends in " (deleted)"). Its
//     tty_info has no termios, as CRIU writes a hung-up terminal; restore
//     makes a new pair, opens the slave and closes the master, which
//     hangs the slave up again.
//   - /dev/tty (5:0), the controlling terminal of the task that opened
//     it: tty_info type CTTY, whose pty entry names the pty it stood
//     for. Only the session leader of a pty the tree holds the master of
//     can have it back: restore makes that slave the leader's controlling
//     terminal (TIOCSCTTY), then the leader itself opens /dev/tty with a
//     remote open and the result replaces the fd. The other tasks of a
//     session got their controlling terminal from their parent at fork,
//     which the restore cannot redo: their /dev/tty is refused by name.
//   - /dev/console (5:1) and the virtual consoles /dev/tty0../dev/tty63
//     (4:N): devices of the machine, reopened by path with their own
//     settings (tty_info types CONSOLE and VT).
//
// The tty_info ids of these are type<<16 | n (n the pty index for CTTY,
// the minor for CONSOLE and VT), above every pty end's index<<1 | master.
// The owner of a /dev/pts node (a program may chown it, as grantpt does)
// is in the slave's tty_info uid and gid, written from the node itself
// even when no task holds the slave.
var ttys = fileKind{
	name:   "tty",
	fdType: fdinfo.FdTypes_TTY,
	dump:   dumpTTY,
	open:   openTTY,
	fixup:  fixupTTY,
	finish: finishTTYs,
}

// Device numbers of Unix98 ptys (include/uapi/linux/major.h).
const (
	ttyauxMajor           = 5 // minor 2: /dev/ptmx
	unix98PtySlaveMajor   = 136
	unix98PtyMajorCount   = 8
	ptmxMinor             = 2
	termiosNCC            = 19 // NCCS of the kernel's struct termios (asm-generic/termbits.h)
	maxPtyIndex           = unix98PtyMajorCount * 256
	ptmxIndexSearchLength = 32 // /dev/ptmx opens tried to get a pty's old index back

	// Other terminals (include/uapi/linux/major.h, drivers/tty/tty_io.c,
	// drivers/tty/vt/vt.c): 5:0 is /dev/tty, 5:1 /dev/console; major 4
	// minors 0-63 are the virtual consoles (MAX_NR_CONSOLES), 64 and up
	// serial ports.
	ttyMajor     = 4
	maxVTMinor   = 63
	ttyCurMinor  = 0
	consoleMinor = 1
)

// devTTYType says which of the terminals other than a pty end st is:
// CTTY, CONSOLE, VT, or UNKNOWN for none of them.
func devTTYType(st *unix.Stat_t) tty.TtyType {
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return tty.TtyType_UNKNOWN
	}
	maj, min := unix.Major(st.Rdev), unix.Minor(st.Rdev)
	switch {
	case maj == ttyauxMajor && min == ttyCurMinor:
		return tty.TtyType_CTTY
	case maj == ttyauxMajor && min == consoleMinor:
		return tty.TtyType_CONSOLE
	case maj == ttyMajor && min <= maxVTMinor:
		return tty.TtyType_VT
	}
	return tty.TtyType_UNKNOWN
}

// ttyKindOwns reports whether the tty kind dumps the fd d on a character
// device: an end of a Unix98 pty, /dev/tty, /dev/console or a virtual
// console. Regular files leave these to it, but for /dev/tty of a shell
// job (--shell-job) that tty.go cannot restore as such (its task is no
// session leader, or its terminal no pty): that one stays a path, which
// restore replaces by ctcr's terminal, as before.
func ttyKindOwns(d *fdDump) bool {
	master, slave := ptyEnd(&d.st)
	if master || slave {
		return true
	}
	switch devTTYType(&d.st) {
	case tty.TtyType_UNKNOWN:
		return false
	case tty.TtyType_CTTY:
		if d.shellJob && d.vpid != 0 {
			ps, err := proc.ReadStat(d.pid, d.pid)
			if err != nil {
				return true // dumpDevTTY reads it again and says what failed
			}
			var cst unix.Stat_t
			cst.Mode, cst.Rdev = unix.S_IFCHR, uint64(ps.TtyNr)
			_, slave := ptyEnd(&cst)
			return slave && ps.Session == d.pid
		}
	}
	return true
}

// ttyDevInfoID is the tty_info id of a terminal other than a pty end.
func ttyDevInfoID(t tty.TtyType, n uint32) uint32 { return uint32(t)<<16 | n }

// ptyEnd says whether st is the master or a slave of a Unix98 pty.
func ptyEnd(st *unix.Stat_t) (master, slave bool) {
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return false, false
	}
	maj, min := unix.Major(st.Rdev), unix.Minor(st.Rdev)
	return maj == ttyauxMajor && min == ptmxMinor, maj >= unix98PtySlaveMajor && maj < unix98PtySlaveMajor+unix98PtyMajorCount
}

func ttyInfoID(index uint32, master bool) uint32 {
	id := index << 1
	if master {
		id |= 1
	}
	return id
}

// ttyDumpState is what the tty kind keeps across the fds of a dump.
type ttyDumpState struct {
	infos   map[uint32]bool     // tty_info ids written
	masters map[uint32]bool     // pty indexes whose master is in the tree
	slaves  map[uint32][]string // pty index -> "task P fd N" holding a slave
	// shellJob: a slave whose master is outside may stay (--shell-job).
	shellJob bool
	// masterFiles holds a description of each master in the tree, to
	// read its pair's buffered bytes once every fd is known.
	masterFiles map[uint32]*os.File
	// hungUp: pty indexes of slaves whose master was closed.
	hungUp map[uint32]bool
	// cttys: pty index -> "task P fd N" holding /dev/tty for it.
	cttys map[uint32]string
}

func dumpTTY(d *fdDump) (*fdinfo.FileEntry, error) {
	master, slave := ptyEnd(&d.st)
	if !master && !slave && devTTYType(&d.st) == tty.TtyType_UNKNOWN {
		return nil, nil
	}
	s := d.files.kindState("tty", func() any {
		return &ttyDumpState{infos: map[uint32]bool{}, masters: map[uint32]bool{}, slaves: map[uint32][]string{}, masterFiles: map[uint32]*os.File{},
			hungUp: map[uint32]bool{}, cttys: map[uint32]string{}}
	}).(*ttyDumpState)
	if !master && !slave {
		return dumpDevTTY(d, s)
	}
	f, err := d.file()
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	var index uint32
	if master {
		n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
		if err != nil {
			return nil, fmt.Errorf("%s (%s): TIOCGPTN: %w", d.where, d.link, err)
		}
		index = n
		s.masters[index] = true
		if s.masterFiles[index] == nil {
			dfd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				return nil, fmt.Errorf("%s (%s): %w", d.where, d.link, err)
			}
			mf := os.NewFile(uintptr(dfd), d.link)
			s.masterFiles[index] = mf
			d.files.closers = append(d.files.closers, func() { mf.Close() })
		}
	} else {
		index = ptySlaveIndex(&d.st)
		s.slaves[index] = append(s.slaves[index], fmt.Sprintf("%s (%s)", d.where, d.link))
		s.shellJob = s.shellJob || d.shellJob
	}
	infoID := ttyInfoID(index, master)
	if !s.infos[infoID] {
		ie, err := ttyInfo(fd, infoID, index, master, &d.st)
		if err != nil {
			return nil, fmt.Errorf("%s (%s): %w", d.where, d.link, err)
		}
		if slave && ie.GetTermios() == nil {
			s.hungUp[index] = true
		}
		s.infos[infoID] = true
		d.files.addImage(images.TtyInfo, ie, nil)
	}
	id := d.files.nextID()
	return &fdinfo.FileEntry{Id: proto.Uint32(id), Tty: &tty.TtyFileEntry{
		Id: proto.Uint32(id), TtyInfoId: proto.Uint32(infoID), Flags: proto.Uint32(d.flags), Fown: noFown(),
	}}, nil
}

func ptySlaveIndex(st *unix.Stat_t) uint32 {
	return (unix.Major(st.Rdev)-unix98PtySlaveMajor)*256 + unix.Minor(st.Rdev)
}

// dumpDevTTY records /dev/tty, /dev/console or a virtual console.
func dumpDevTTY(d *fdDump, s *ttyDumpState) (*fdinfo.FileEntry, error) {
	typ := devTTYType(&d.st)
	n := unix.Minor(d.st.Rdev)
	e := &tty.TtyInfoEntry{
		Type: typ.Enum(), Rdev: proto.Uint32(uint32(d.st.Rdev)), Dev: proto.Uint32(uint32(d.st.Dev)),
		Uid: proto.Uint32(d.st.Uid), Gid: proto.Uint32(d.st.Gid),
		Locked: proto.Bool(false), Exclusive: proto.Bool(false), PacketMode: proto.Bool(false), Sid: proto.Uint32(0), Pgrp: proto.Uint32(0),
	}
	if typ == tty.TtyType_CTTY {
		// What /dev/tty stands for is the controlling terminal of its
		// opener; a task keeps the one it opened it with, so it is the
		// task's own.
		if d.vpid == 0 {
			return nil, d.unsupported("/dev/tty in flight in a unix socket: whose controlling terminal it was is unknown")
		}
		ps, err := proc.ReadStat(d.pid, d.pid)
		if err != nil {
			return nil, fmt.Errorf("%s (/dev/tty): %w", d.where, err)
		}
		ctty := uint64(ps.TtyNr)
		var cst unix.Stat_t
		cst.Mode, cst.Rdev = unix.S_IFCHR, ctty
		if _, slave := ptyEnd(&cst); !slave {
			// (With --shell-job regular files keep it: ttyKindOwns.)
			if ctty == 0 {
				return nil, d.unsupported("/dev/tty of a task that has no controlling terminal any more")
			}
			return nil, d.unsupported(fmt.Sprintf("/dev/tty standing for terminal %d:%d, which is no pseudo-terminal (use --shell-job to restore it on ctcr's own terminal)", unix.Major(ctty), unix.Minor(ctty)))
		}
		if ps.Session != d.pid {
			return nil, d.unsupported(fmt.Sprintf("/dev/tty of a task that is not its session's leader (session %d): it got its controlling terminal from its parent at fork, which restore cannot redo", ps.Session))
		}
		n = ptySlaveIndex(&cst)
		e.Pty = &tty.TtyPtyEntry{Index: proto.Uint32(n)}
		s.cttys[n] = d.where
		s.shellJob = s.shellJob || d.shellJob
	}
	id := ttyDevInfoID(typ, n)
	e.Id = proto.Uint32(id)
	if !s.infos[id] {
		s.infos[id] = true
		d.files.addImage(images.TtyInfo, e, nil)
	}
	fid := d.files.nextID()
	return &fdinfo.FileEntry{Id: proto.Uint32(fid), Tty: &tty.TtyFileEntry{
		Id: proto.Uint32(fid), TtyInfoId: proto.Uint32(id), Flags: proto.Uint32(d.flags), Fown: noFown(),
	}}, nil
}

// ttyInfo reads the state of one end of a pty through fd, ctcr's
// duplicate of the task's file.
func ttyInfo(fd int, id, index uint32, master bool, st *unix.Stat_t) (*tty.TtyInfoEntry, error) {
	e := &tty.TtyInfoEntry{
		Id: proto.Uint32(id), Type: tty.TtyType_PTY.Enum(), Rdev: proto.Uint32(uint32(st.Rdev)), Dev: proto.Uint32(uint32(st.Dev)),
		Pty: &tty.TtyPtyEntry{Index: proto.Uint32(index)},
		Uid: proto.Uint32(st.Uid), Gid: proto.Uint32(st.Gid),
	}
	if !master {
		// A slave whose master was closed is hung up: every ioctl on it
		// fails with EIO (hung_up_tty_ioctl). It has nothing left to
		// keep but its owner.
		if _, err := unix.IoctlGetInt(fd, unix.TIOCGEXCL); errors.Is(err, unix.EIO) {
			e.Locked, e.PacketMode, e.Exclusive = proto.Bool(false), proto.Bool(false), proto.Bool(false)
			e.Sid, e.Pgrp = proto.Uint32(0), proto.Uint32(0)
			return e, nil
		}
	}
	// The lock and packet mode are the master's (the kernel answers them
	// on a master only); exclusive mode is each end's own.
	flag := func(req uint) (bool, error) {
		v, err := unix.IoctlGetInt(fd, req)
		return v != 0, err
	}
	var locked, pkt bool
	var err error
	if master {
		if locked, err = flag(unix.TIOCGPTLCK); err != nil {
			return nil, fmt.Errorf("TIOCGPTLCK: %w", err)
		}
		if pkt, err = flag(unix.TIOCGPKT); err != nil {
			return nil, fmt.Errorf("TIOCGPKT: %w", err)
		}
	}
	excl, err := flag(unix.TIOCGEXCL)
	if err != nil {
		return nil, fmt.Errorf("TIOCGEXCL: %w", err)
	}
	e.Locked, e.PacketMode, e.Exclusive = proto.Bool(locked), proto.Bool(pkt), proto.Bool(excl)
	// The session and foreground group of the slave: the kernel answers
	// them through a master, and through a slave only to a task it is the
	// controlling terminal of (ENOTTY otherwise, as when it has none).
	sid, pgrp := 0, 0
	if master {
		if v, err := unix.IoctlGetInt(fd, unix.TIOCGSID); err == nil {
			sid = v
			if v, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP); err == nil {
				pgrp = v
			}
		}
	}
	e.Sid, e.Pgrp = proto.Uint32(uint32(sid)), proto.Uint32(uint32(pgrp))
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if errors.Is(err, unix.EIO) {
		// A hung-up terminal has no settings left: CRIU writes the
		// entry without them.
		return e, nil
	}
	if err != nil {
		return nil, fmt.Errorf("TCGETS: %w", err)
	}
	lt, err := unix.IoctlGetTermios(fd, unix.TIOCGLCKTRMIOS)
	if err != nil {
		return nil, fmt.Errorf("TIOCGLCKTRMIOS: %w", err)
	}
	ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
	if err != nil {
		return nil, fmt.Errorf("TIOCGWINSZ: %w", err)
	}
	e.Termios, e.TermiosLocked = termiosEntry(t), termiosEntry(lt)
	e.Winsize = &tty.WinsizeEntry{WsRow: proto.Uint32(uint32(ws.Row)), WsCol: proto.Uint32(uint32(ws.Col)),
		WsXpixel: proto.Uint32(uint32(ws.Xpixel)), WsYpixel: proto.Uint32(uint32(ws.Ypixel))}
	return e, nil
}

func termiosEntry(t *unix.Termios) *tty.TermiosEntry {
	cc := make([]uint32, termiosNCC)
	for i := range cc {
		cc[i] = uint32(t.Cc[i])
	}
	return &tty.TermiosEntry{
		CIflag: proto.Uint32(t.Iflag), COflag: proto.Uint32(t.Oflag), CCflag: proto.Uint32(t.Cflag), CLflag: proto.Uint32(t.Lflag),
		CLine: proto.Uint32(uint32(t.Line)), CIspeed: proto.Uint32(t.Ispeed), COspeed: proto.Uint32(t.Ospeed), CCc: cc,
	}
}

func termiosFromEntry(e *tty.TermiosEntry) (*unix.Termios, error) {
	if len(e.GetCCc()) < termiosNCC {
		return nil, fmt.Errorf("termios with %d control characters, want %d", len(e.GetCCc()), termiosNCC)
	}
	t := &unix.Termios{Iflag: e.GetCIflag(), Oflag: e.GetCOflag(), Cflag: e.GetCCflag(), Lflag: e.GetCLflag(),
		Line: uint8(e.GetCLine()), Ispeed: e.GetCIspeed(), Ospeed: e.GetCOspeed()}
	for i := 0; i < termiosNCC; i++ {
		t.Cc[i] = uint8(e.GetCCc()[i])
	}
	return t, nil
}

// finishTTYs refuses a slave whose master is not in the tree, unless the
// dump is a shell job: restore then gives it ctcr's own terminal.
func finishTTYs(t *fileTable) error {
	v, ok := t.kinds["tty"]
	if !ok {
		return nil
	}
	s := v.(*ttyDumpState)
	var outside []uint32
	for index := range s.slaves {
		if !s.masters[index] && !s.hungUp[index] {
			outside = append(outside, index)
		}
	}
	for index := range s.cttys {
		if !s.masters[index] && !s.hungUp[index] {
			outside = append(outside, index)
		}
	}
	if len(outside) > 0 && !s.shellJob {
		sort.Slice(outside, func(i, j int) bool { return outside[i] < outside[j] })
		where := s.cttys[outside[0]]
		if w := s.slaves[outside[0]]; len(w) > 0 {
			where = w[0]
		}
		return fmt.Errorf("%s: a terminal whose master is outside the dumped tree (use --shell-job to restore it on ctcr's own terminal): %w",
			where, ErrUnsupported)
	}
	for index, where := range s.cttys {
		if s.hungUp[index] {
			return fmt.Errorf("%s (/dev/tty): its terminal /dev/pts/%d was hung up: %w", where, index, ErrUnsupported)
		}
	}
	indexes := make([]uint32, 0, len(s.masterFiles))
	for index := range s.masterFiles {
		indexes = append(indexes, index)
	}
	sort.Slice(indexes, func(i, j int) bool { return indexes[i] < indexes[j] })
	for _, index := range indexes {
		if err := s.slaveOwner(t, index); err != nil {
			return err
		}
	}
	for _, index := range indexes {
		d, peer, err := takePtyData(s.masterFiles[index], len(s.slaves[index]) > 0)
		if err != nil {
			return fmt.Errorf("pty %d: buffered bytes: %w", index, err)
		}
		if peer != nil {
			t.closers = append(t.closers, func() { peer.Close() })
			t.giveBacks = append(t.giveBacks, func() error {
				if err := d.put(peer); err != nil {
					return fmt.Errorf("pty %d: give its buffered bytes back: %w", index, err)
				}
				return nil
			})
		}
		for _, e := range []struct {
			master bool
			data   []byte
		}{{true, d.out}, {false, d.in}} {
			if len(e.data) > 0 {
				t.addImage(images.TtyData, &tty.TtyDataEntry{TtyId: proto.Uint32(ttyInfoID(index, e.master)), Data: e.data}, nil)
			}
		}
	}
	return nil
}

// slaveOwner writes the tty_info of the slave of pty index, which no
// task holds, for its owner: the node itself is reached through the
// master (TIOCGPTPEER with O_PATH opens it even while locked).
func (s *ttyDumpState) slaveOwner(t *fileTable, index uint32) error {
	id := ttyInfoID(index, false)
	if s.infos[id] {
		return nil
	}
	m := s.masterFiles[index]
	fd, _, errno := unix.Syscall(unix.SYS_IOCTL, m.Fd(), unix.TIOCGPTPEER, uintptr(unix.O_PATH|unix.O_CLOEXEC))
	if errno != 0 {
		return fmt.Errorf("pty %d: its slave's node (TIOCGPTPEER): %w", index, errno)
	}
	defer unix.Close(int(fd))
	var st unix.Stat_t
	if err := unix.Fstat(int(fd), &st); err != nil {
		return fmt.Errorf("pty %d: its slave's node: %w", index, err)
	}
	s.infos[id] = true
	t.addImage(images.TtyInfo, &tty.TtyInfoEntry{
		Id: proto.Uint32(id), Type: tty.TtyType_PTY.Enum(), Rdev: proto.Uint32(uint32(st.Rdev)), Dev: proto.Uint32(uint32(st.Dev)),
		Pty: &tty.TtyPtyEntry{Index: proto.Uint32(index)}, Uid: proto.Uint32(st.Uid), Gid: proto.Uint32(st.Gid),
		Locked: proto.Bool(false), Exclusive: proto.Bool(false), PacketMode: proto.Bool(false), Sid: proto.Uint32(0), Pgrp: proto.Uint32(0),
	}, nil)
	return nil
}

// restoredPty is a pair made at restore: its master, and the slave
// descriptions opened for the file ids that had one.
type restoredPty struct {
	master *os.File
	slaves map[uint32]*os.File // file id -> description
}

// ttyInfos returns tty-info.img's entries by id, read once.
func ttyInfos(r *fileRestore) (map[uint32]*tty.TtyInfoEntry, error) {
	if m, ok := r.state["tty-info"].(map[uint32]*tty.TtyInfoEntry); ok {
		return m, nil
	}
	x, err := r.readExtra(images.TtyInfo, func() proto.Message { return &tty.TtyInfoEntry{} }, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", images.TtyInfo.FileName(), err)
	}
	m := map[uint32]*tty.TtyInfoEntry{}
	for _, msg := range x.entries {
		e := msg.(*tty.TtyInfoEntry)
		if !validTTYInfo(e) {
			return nil, corruptf(images.TtyInfo.FileName(), "tty %d: type %v, pty %v, rdev %#x: not a terminal ctcr wrote", e.GetId(), e.GetType(), e.GetPty(), e.GetRdev())
		}
		m[e.GetId()] = e
	}
	r.state["tty-info"] = m
	return m, nil
}

// validTTYInfo checks that e's id is the one ctcr gives its type and
// device, so that ids cannot collide and the device is one tty.go knows.
func validTTYInfo(e *tty.TtyInfoEntry) bool {
	rdev := uint64(e.GetRdev())
	switch e.GetType() {
	case tty.TtyType_PTY:
		return e.GetPty() != nil && e.GetPty().GetIndex() < maxPtyIndex && e.GetId() == ttyInfoID(e.GetPty().GetIndex(), e.GetId()&1 != 0)
	case tty.TtyType_CTTY:
		return e.GetPty() != nil && e.GetPty().GetIndex() < maxPtyIndex && e.GetId() == ttyDevInfoID(tty.TtyType_CTTY, e.GetPty().GetIndex())
	case tty.TtyType_CONSOLE:
		return unix.Major(rdev) == ttyauxMajor && unix.Minor(rdev) == consoleMinor && e.GetId() == ttyDevInfoID(tty.TtyType_CONSOLE, consoleMinor)
	case tty.TtyType_VT:
		return unix.Major(rdev) == ttyMajor && unix.Minor(rdev) <= maxVTMinor && e.GetId() == ttyDevInfoID(tty.TtyType_VT, unix.Minor(rdev))
	}
	return false
}

// openDevTTY reopens /dev/console or a virtual console by its path in
// the restored tree's root, and checks that the path still leads to the
// same device. /dev/tty gets a stand-in here, which fixupTTY replaces by
// the task's own /dev/tty.
func openDevTTY(r *fileRestore, e *fdinfo.FileEntry, info *tty.TtyInfoEntry) (*os.File, error) {
	flags := int(e.GetTty().GetFlags()) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC)
	var path string
	switch info.GetType() {
	case tty.TtyType_CTTY:
		if infos, _ := ttyInfos(r); infos[ttyInfoID(info.GetPty().GetIndex(), true)] == nil {
			// The terminal's master was outside the tree (--shell-job):
			// the job's terminal is ctcr's, as for the terminal's path.
			return shellJobTerminal(r, e.GetId(), "/dev/tty")
		}
		f, err := os.Open(os.DevNull)
		if err != nil {
			return nil, fmt.Errorf("tty id %d: a stand-in for /dev/tty: %w", e.GetId(), err)
		}
		return f, nil
	case tty.TtyType_CONSOLE:
		path = "/dev/console"
	default:
		path = fmt.Sprintf("/dev/tty%d", unix.Minor(uint64(info.GetRdev())))
	}
	f, err := openTTYInTree(r.rootPid, path, flags)
	if err != nil {
		return nil, fmt.Errorf("tty id %d: %w", e.GetId(), err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || uint32(st.Rdev) != info.GetRdev() {
		f.Close()
		return nil, fmt.Errorf("tty id %d: %s is no longer the device %d:%d it was at the dump", e.GetId(), path, unix.Major(uint64(info.GetRdev())), unix.Minor(uint64(info.GetRdev())))
	}
	return f, nil
}

func openTTY(r *fileRestore, e *fdinfo.FileEntry) (*os.File, error) {
	tfe := e.GetTty()
	if tfe == nil {
		return nil, corruptf("files.img", "tty id %d without its entry", e.GetId())
	}
	infos, err := ttyInfos(r)
	if err != nil {
		return nil, err
	}
	info := infos[tfe.GetTtyInfoId()]
	if info == nil {
		return nil, corruptf("files.img", "tty id %d: tty_info_id %d is not in %s", e.GetId(), tfe.GetTtyInfoId(), images.TtyInfo.FileName())
	}
	if info.GetType() != tty.TtyType_PTY {
		return openDevTTY(r, e, info)
	}
	index := info.GetPty().GetIndex()
	master := tfe.GetTtyInfoId()&1 != 0
	pairs, _ := r.state["tty"].(map[uint32]*restoredPty)
	if pairs == nil {
		pairs = map[uint32]*restoredPty{}
		r.state["tty"] = pairs
	}
	p := pairs[index]
	if p == nil {
		mi := infos[ttyInfoID(index, true)]
		if si := infos[ttyInfoID(index, false)]; mi == nil && si != nil && si.GetTermios() == nil {
			// A slave hung up when its master was closed.
			if p, err = restorePty(r, index, nil, si); err != nil {
				return nil, fmt.Errorf("pty %d (hung up): %w", index, err)
			}
			pairs[index] = p
			mi = infos[ttyInfoID(index, true)]
		}
		if mi == nil && p == nil {
			return shellJobTerminal(r, e.GetId(), fmt.Sprintf("/dev/pts/%d", index))
		}
		if p == nil {
			if p, err = restorePty(r, index, mi, infos[ttyInfoID(index, false)]); err != nil {
				return nil, fmt.Errorf("pty %d: %w", index, err)
			}
			pairs[index] = p
		}
	}
	if master {
		if p.master == nil {
			return nil, corruptf(images.Files.FileName(), "tty id %d: the master of pty %d, whose slave was hung up", e.GetId(), index)
		}
		// Every description of a master is the one /dev/ptmx gave:
		// opening the master again would make another pty.
		if _, err := unix.FcntlInt(p.master.Fd(), unix.F_SETFL, int(tfe.GetFlags())&^unix.O_ACCMODE); err != nil {
			return nil, fmt.Errorf("pty %d master: set flags %#x: %w", index, tfe.GetFlags(), err)
		}
		return p.master, nil
	}
	f := p.slaves[e.GetId()]
	if f == nil {
		return nil, fmt.Errorf("pty %d: no slave was opened for tty id %d", index, e.GetId())
	}
	return f, nil
}

// shellJobTerminal returns the terminal that replaces the job's own
// (path), whose master was outside the dumped tree: ctcr's, with
// --shell-job.
func shellJobTerminal(r *fileRestore, id uint32, path string) (*os.File, error) {
	if r.opts.Terminal != nil {
		t, err := r.opts.Terminal()
		if err != nil {
			return nil, fmt.Errorf("tty id %d: %s: the terminal that replaces it: %w", id, path, err)
		}
		fd, err := unix.FcntlInt(t.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("tty id %d: the terminal that replaces %s: %w", id, path, err)
		}
		return os.NewFile(uintptr(fd), t.Name()), nil
	}
	if !r.opts.ShellJob {
		return nil, fmt.Errorf("tty id %d: %s, whose master was outside the dumped tree, needs --shell-job: %w", id, path, ErrUnsupported)
	}
	fd, err := unix.FcntlInt(0, unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("--shell-job: ctcr's stdin: %w", err)
	}
	return os.NewFile(uintptr(fd), "/dev/stdin"), nil
}

// openPtmx opens root's /dev/ptmx, trying for the pty index want: the
// kernel hands out the lowest free index, so opening until it comes up
// gets it back when it is free. Otherwise the pty gets another index.
func openPtmx(root int, want uint32) (*os.File, uint32, error) {
	const path = "/dev/ptmx"
	var spare []*os.File
	defer func() {
		for _, f := range spare {
			f.Close()
		}
	}()
	for i := 0; ; i++ {
		f, err := openTTYInTree(root, path, unix.O_RDWR)
		if err != nil {
			return nil, 0, err
		}
		n, err := unix.IoctlGetUint32(int(f.Fd()), unix.TIOCGPTN)
		if err != nil {
			f.Close()
			return nil, 0, fmt.Errorf("TIOCGPTN: %w", err)
		}
		if n >= want || i == ptmxIndexSearchLength {
			return f, n, nil
		}
		spare = append(spare, f)
	}
}

// restorePty makes a new pty for index with the settings of its master
// mi (and slave si, if a task held one), and opens every slave
// description of it in the checkpoint: they must be open before the pty
// is locked again.
func restorePty(r *fileRestore, index uint32, mi, si *tty.TtyInfoEntry) (*restoredPty, error) {
	m, got, err := openPtmx(r.rootPid, index)
	if err != nil {
		return nil, err
	}
	ok := false
	p := &restoredPty{master: m, slaves: map[uint32]*os.File{}}
	defer func() {
		if !ok {
			m.Close()
			for _, f := range p.slaves {
				f.Close()
			}
		}
	}()
	mfd := int(m.Fd())
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		return nil, fmt.Errorf("unlock: %w", err)
	}
	if mi.GetTermios() != nil {
		t, err := termiosFromEntry(mi.GetTermios())
		if err != nil {
			return nil, corruptf(images.TtyInfo.FileName(), "tty %d: %v", mi.GetId(), err)
		}
		lt, err := termiosFromEntry(mi.GetTermiosLocked())
		if err != nil {
			return nil, corruptf(images.TtyInfo.FileName(), "tty %d locked: %v", mi.GetId(), err)
		}
		// The locked bits first would forbid setting the others.
		if err := unix.IoctlSetTermios(mfd, unix.TCSETS, t); err != nil {
			return nil, fmt.Errorf("TCSETS: %w", err)
		}
		if err := unix.IoctlSetTermios(mfd, unix.TIOCSLCKTRMIOS, lt); err != nil {
			return nil, fmt.Errorf("TIOCSLCKTRMIOS: %w", err)
		}
		if ws := mi.GetWinsize(); ws != nil {
			w := &unix.Winsize{Row: uint16(ws.GetWsRow()), Col: uint16(ws.GetWsCol()), Xpixel: uint16(ws.GetWsXpixel()), Ypixel: uint16(ws.GetWsYpixel())}
			if err := unix.IoctlSetWinsize(mfd, unix.TIOCSWINSZ, w); err != nil {
				return nil, fmt.Errorf("TIOCSWINSZ: %w", err)
			}
		}
	}
	if mi.GetPacketMode() {
		if err := unix.IoctlSetPointerInt(mfd, unix.TIOCPKT, 1); err != nil {
			return nil, fmt.Errorf("packet mode: %w", err)
		}
	}
	slavePath := fmt.Sprintf("/dev/pts/%d", got)
	ids := make([]uint32, 0)
	for id, fe := range r.cp.files {
		if fe.GetType() == fdinfo.FdTypes_TTY && fe.GetTty().GetTtyInfoId() == ttyInfoID(index, false) {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		flags := int(r.cp.files[id].GetTty().GetFlags()) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC)
		f, err := openTTYInTree(r.rootPid, slavePath, flags)
		if err != nil {
			return nil, fmt.Errorf("tty id %d: %w", id, err)
		}
		p.slaves[id] = f
	}
	if si != nil {
		if err := chownSlave(m, si); err != nil {
			return nil, err
		}
	}
	if mi == nil {
		// A hung-up slave: closing its master hangs it up again (the
		// kernel's pty_close calls tty_vhangup on the slave).
		m.Close()
		p.master = nil
		ok = true
		return p, nil
	}
	if err := restorePtyData(r, index, m); err != nil {
		return nil, err
	}
	if si.GetExclusive() && len(ids) > 0 {
		if err := unix.IoctlSetInt(int(p.slaves[ids[0]].Fd()), unix.TIOCEXCL, 0); err != nil {
			return nil, fmt.Errorf("slave exclusive mode: %w", err)
		}
	}
	if mi.GetExclusive() {
		if err := unix.IoctlSetInt(mfd, unix.TIOCEXCL, 0); err != nil {
			return nil, fmt.Errorf("master exclusive mode: %w", err)
		}
	}
	if mi.GetLocked() {
		if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 1); err != nil {
			return nil, fmt.Errorf("lock: %w", err)
		}
	}
	ok = true
	return p, nil
}

// chownSlave gives the /dev/pts node of master's pty the owner si had.
func chownSlave(master *os.File, si *tty.TtyInfoEntry) error {
	if si.Uid == nil || si.Gid == nil {
		return nil
	}
	fd, _, errno := unix.Syscall(unix.SYS_IOCTL, master.Fd(), unix.TIOCGPTPEER, uintptr(unix.O_PATH|unix.O_CLOEXEC))
	if errno != 0 {
		return fmt.Errorf("the slave's node (TIOCGPTPEER): %w", errno)
	}
	defer unix.Close(int(fd))
	var st unix.Stat_t
	if err := unix.Fstat(int(fd), &st); err != nil {
		return fmt.Errorf("the slave's node: %w", err)
	}
	if st.Uid == si.GetUid() && st.Gid == si.GetGid() {
		return nil
	}
	if err := unix.Fchownat(int(fd), "", int(si.GetUid()), int(si.GetGid()), unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("give the slave's node owner %d:%d: %w", si.GetUid(), si.GetGid(), err)
	}
	return nil
}

// ttyData returns tty-data.img's bytes by tty_info id, read once; a
// checkpoint without buffered bytes has no tty-data.img.
func ttyData(r *fileRestore) (map[uint32][]byte, error) {
	if m, ok := r.state["tty-data"].(map[uint32][]byte); ok {
		return m, nil
	}
	m := map[uint32][]byte{}
	x, err := r.readExtra(images.TtyData, func() proto.Message { return &tty.TtyDataEntry{} }, nil)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", images.TtyData.FileName(), err)
	}
	if err == nil {
		for _, msg := range x.entries {
			e := msg.(*tty.TtyDataEntry)
			if e.GetTtyId() >= ttyInfoID(maxPtyIndex, false) || m[e.GetTtyId()] != nil {
				return nil, corruptf(images.TtyData.FileName(), "tty %d: not a pty end, or twice", e.GetTtyId())
			}
			m[e.GetTtyId()] = e.GetData()
		}
	}
	r.state["tty-data"] = m
	return m, nil
}

// restorePtyData puts the bytes buffered in pty index at dump back into
// the new pair of master m.
func restorePtyData(r *fileRestore, index uint32, m *os.File) error {
	all, err := ttyData(r)
	if err != nil {
		return err
	}
	d := &ptyData{out: all[ttyInfoID(index, true)], in: all[ttyInfoID(index, false)]}
	if len(d.out) == 0 && len(d.in) == 0 {
		return nil
	}
	peer, err := ptyPeer(m)
	if err != nil {
		return err
	}
	defer peer.Close()
	if err := d.put(peer); err != nil {
		return fmt.Errorf("buffered bytes: %w", err)
	}
	return nil
}

// fixupTTY makes a slave the controlling terminal of the session leader
// it was that of, with its foreground process group: only the leader
// itself can, once the slave is one of its fds (TIOCSCTTY). For
// /dev/tty it then opens /dev/tty in the task (fixupCtty).
func fixupTTY(r *fileRestore, t *restoringTask, fd int, e *fdinfo.FileEntry) error {
	tfe := e.GetTty()
	infos, err := ttyInfos(r)
	if err != nil {
		return err
	}
	if info := infos[tfe.GetTtyInfoId()]; info.GetType() == tty.TtyType_CTTY {
		return fixupCtty(r, t, fd, e, info)
	}
	if info := infos[tfe.GetTtyInfoId()]; info.GetType() != tty.TtyType_PTY || tfe.GetTtyInfoId()&1 != 0 {
		return nil
	}
	mi := infos[tfe.GetTtyInfoId()|1]
	if mi == nil || mi.GetSid() == 0 || int(mi.GetSid()) != t.vpid || t.sid() != t.vpid {
		return nil
	}
	return setCtty(r, t, fd, mi)
}

// setCtty makes the slave of mi's pty the controlling terminal of t, a
// session leader, through fd, the task's fd on that slave, or, if fd is
// negative, through a slave description ctcr passes it for the moment.
func setCtty(r *fileRestore, t *restoringTask, fd int, mi *tty.TtyInfoEntry) error {
	done, _ := r.state["tty-ctty"].(map[int]bool)
	if done == nil {
		done = map[int]bool{}
		r.state["tty-ctty"] = done
	}
	if done[t.vpid] {
		return nil
	}
	done[t.vpid] = true
	index := mi.GetPty().GetIndex()
	passed := false
	if fd < 0 {
		pairs, _ := r.state["tty"].(map[uint32]*restoredPty)
		if pairs[index] == nil {
			// The pair comes with its master, which another task holds
			// and may get after this one.
			if err := openPtyMaster(r, index); err != nil {
				return err
			}
			pairs, _ = r.state["tty"].(map[uint32]*restoredPty)
		}
		p := pairs[index]
		if p == nil || p.master == nil {
			return fmt.Errorf("pty %d: its master was not restored before the session leader's /dev/tty", index)
		}
		peer, err := ptyPeer(p.master)
		if err != nil {
			return fmt.Errorf("pty %d: %w", index, err)
		}
		got, err := t.sendFds([]*os.File{peer})
		peer.Close()
		if err != nil {
			return fmt.Errorf("pty %d: pass a slave to the session leader: %w", index, err)
		}
		fd, passed = got[0], true
	}
	b := t.ctl.newBatch()
	what := map[int]string{}
	what[b.add(unix.SYS_IOCTL, uint64(fd), unix.TIOCSCTTY, 0)] = "make it the controlling terminal"
	if pg := mi.GetPgrp(); pg != 0 {
		p, err := b.put(int32(pg))
		if err != nil {
			return err
		}
		what[b.add(unix.SYS_IOCTL, uint64(fd), unix.TIOCSPGRP, p)] = fmt.Sprintf("foreground group %d", pg)
	}
	if passed {
		what[b.add(unix.SYS_CLOSE, uint64(fd))] = "close the slave passed for it"
	}
	if res, err := b.run(); err != nil {
		return fmt.Errorf("pty %d: %s: %w", index, what[len(res)], err)
	}
	return nil
}

// openPtyMaster makes the pair of pty index through a file of its master.
func openPtyMaster(r *fileRestore, index uint32) error {
	ids := make([]uint32, 0, 1)
	for id, fe := range r.cp.files {
		if fe.GetType() == fdinfo.FdTypes_TTY && fe.GetTty().GetTtyInfoId() == ttyInfoID(index, true) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return corruptf(images.Files.FileName(), "pty %d: no file of its master", index)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	if _, err := r.get(ids[0]); err != nil {
		return fmt.Errorf("pty %d master: %w", index, err)
	}
	return nil
}

// fixupCtty replaces fd, a stand-in, by /dev/tty opened by the task
// itself once its controlling terminal is back: only the kernel's
// /dev/tty open gives the file that follows the opener's terminal.
func fixupCtty(r *fileRestore, t *restoringTask, fd int, e *fdinfo.FileEntry, info *tty.TtyInfoEntry) error {
	infos, err := ttyInfos(r)
	if err != nil {
		return err
	}
	index := info.GetPty().GetIndex()
	mi := infos[ttyInfoID(index, true)]
	if mi == nil {
		return nil // --shell-job: the fd is ctcr's terminal already
	}
	if t.sid() != t.vpid {
		return fmt.Errorf("/dev/tty of pty %d in a task that is not its session's leader", index)
	}
	if err := setCtty(r, t, -1, mi); err != nil {
		return err
	}
	b := t.ctl.newBatch()
	path, err := b.put("/dev/tty")
	if err != nil {
		return err
	}
	b.add(unix.SYS_FCNTL, uint64(fd), unix.F_GETFD)
	flags := uint64(e.GetTty().GetFlags()) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC)
	b.add(unix.SYS_OPENAT, uint64(unix.AT_FDCWD&0xffffffffffffffff), path, flags|unix.O_NOCTTY|unix.O_CLOEXEC)
	res, err := b.run()
	if err != nil {
		return fmt.Errorf("pty %d: open /dev/tty in the task: %w", index, err)
	}
	cloexec := uint64(0)
	if res[0]&unix.FD_CLOEXEC != 0 {
		cloexec = unix.O_CLOEXEC
	}
	b = t.ctl.newBatch()
	b.add(unix.SYS_DUP3, res[1], uint64(fd), cloexec)
	b.add(unix.SYS_CLOSE, res[1])
	if _, err := b.run(); err != nil {
		return fmt.Errorf("pty %d: put /dev/tty at fd %d: %w", index, fd, err)
	}
	return nil
}
