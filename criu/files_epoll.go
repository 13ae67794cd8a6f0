package criu

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/eventpoll"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/nsthread"
)

// epolls are epoll instances. Each registered target is kept as CRIU
// keeps it (criu/eventpoll.c): the fd number it was registered under,
// its events and its data, in the epoll's entry of files.img. The kernel
// keys an item by (file, fd number): the task's later EPOLL_CTL_MOD or
// DEL of that fd must find it, so restore registers every target under
// its number again.
//
// The number alone does not say which file the target is: the task may
// have closed it, or dup'ed the file elsewhere and reused the number,
// and an epoll in flight in an SCM_RIGHTS message has no fd table at
// all. So the dump finds each target by kcmp(KCMP_EPOLL_TFD) among every
// fd of the tree and keeps its file id beside the images:
//
//	epoll.json: {"EPOLL ID": [TARGET FILE ID, ...]}   (one per tfd entry, in order)
//
// Restore, once every file exists, registers the targets from ctcr
// itself, on a thread with a private copy of ctcr's fd table
// (unshare(CLONE_FILES)) where it can put each target file at its number
// without touching ctcr's own fds. Images without epoll.json register
// from inside the task by number, as before.
var epolls = fileKind{
	name:   "epoll",
	fdType: fdinfo.FdTypes_EVENTPOLL,
	dump:   dumpEpoll,
	open:   openEpoll,
	fixup:  registerEpollTargets,
	finish: finishEpolls,
}

const epollFile = "epoll.json"

// epollDumpState keeps, across fds, the epolls whose targets are yet to
// be found and the target file ids found.
type epollDumpState struct {
	pending []*epollDump
	targets map[string][]uint32
}

// epollDump is one epoll being dumped: where it is open (a task's fd,
// or ctcr's own for one in flight) and its targets.
type epollDump struct {
	id       uint32
	pid, efd int
	where    string
	tfds     []epollTarget
}

// epollTarget is one "tfd:" line of an epoll's fdinfo.
type epollTarget struct {
	tfd    int
	events uint32
	data   uint64
	pos    uint64
	ino    uint64
	sdev   uint64 // the superblock's dev_t in the kernel's encoding
}

// parseEpollTarget parses
//
//	tfd:        5 events:       19 data:       7fff00000005  pos:0 ino:61af sdev:7
func parseEpollTarget(line string) (epollTarget, error) {
	var t epollTarget
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "tfd:" || f[2] != "events:" || f[4] != "data:" {
		return t, fmt.Errorf("epoll target line %q", line)
	}
	tfd, err := strconv.Atoi(f[1])
	if err != nil || tfd < 0 {
		return t, fmt.Errorf("epoll target line %q: fd", line)
	}
	t.tfd = tfd
	ev, err := strconv.ParseUint(f[3], 16, 32)
	if err != nil {
		return t, fmt.Errorf("epoll target line %q: events: %w", line, err)
	}
	t.events = uint32(ev)
	if t.data, err = strconv.ParseUint(f[5], 16, 64); err != nil {
		return t, fmt.Errorf("epoll target line %q: data: %w", line, err)
	}
	for _, kv := range f[6:] {
		k, v, _ := strings.Cut(kv, ":")
		var dst *uint64
		base := 16
		switch k {
		case "pos":
			dst, base = &t.pos, 10
		case "ino":
			dst = &t.ino
		case "sdev":
			dst = &t.sdev
		default:
			continue
		}
		if *dst, err = strconv.ParseUint(v, base, 64); err != nil {
			return t, fmt.Errorf("epoll target line %q: %s: %w", line, k, err)
		}
	}
	return t, nil
}

// kernelDev converts a dev_t of the kernel's internal encoding (what
// fdinfo prints as sdev: major << 20 | minor) to the user one.
func kernelDev(d uint64) uint64 { return unix.Mkdev(uint32(d>>20), uint32(d&0xfffff)) }

func dumpEpoll(d *fdDump) (*fdinfo.FileEntry, error) {
	if !isAnon(d, "eventpoll") {
		return nil, nil
	}
	id := d.files.nextID()
	ep := &eventpoll.EventpollFileEntry{Id: proto.Uint32(id), Flags: proto.Uint32(d.flags), Fown: zeroFown()}
	pe := &epollDump{id: id, pid: d.pid, efd: d.fd, where: d.where + " (" + d.link + ")"}
	for _, l := range d.info.Extra {
		if !strings.HasPrefix(l, "tfd:") {
			continue
		}
		t, err := parseEpollTarget(l)
		if err != nil {
			return nil, fmt.Errorf("%s (%s): %w", d.where, d.link, err)
		}
		pe.tfds = append(pe.tfds, t)
		ep.Tfd = append(ep.Tfd, &eventpoll.EventpollTfdEntry{
			Id: proto.Uint32(id), Tfd: proto.Uint32(uint32(t.tfd)), Events: proto.Uint32(t.events), Data: proto.Uint64(t.data),
			Dev: proto.Uint32(uint32(kernelDev(t.sdev))), Inode: proto.Uint64(t.ino), Pos: proto.Uint64(t.pos),
		})
	}
	st := epollState(d.files)
	if d.files.inFlight {
		// Its fd in ctcr closes after this: find its targets now;
		// every task's fds are dumped already.
		if err := findEpollTargets(d.files, st, pe); err != nil {
			return nil, err
		}
	} else {
		// Its targets may be fds of this task not dumped yet, or of
		// a later task: found once all are (finishEpolls).
		st.pending = append(st.pending, pe)
	}
	return &fdinfo.FileEntry{Id: proto.Uint32(id), Epfd: ep}, nil
}

func epollState(t *fileTable) *epollDumpState {
	return t.kindState("epoll", func() any { return &epollDumpState{targets: map[string][]uint32{}} }).(*epollDumpState)
}

// findEpollTargets finds the file id of each target of epoll pe among
// every fd dumped: the one kcmp says the epoll watches under that
// number. A target open nowhere in the tree (only in a process outside
// it) is refused.
func findEpollTargets(t *fileTable, st *epollDumpState, pe *epollDump) error {
	ids := make([]uint32, 0, len(pe.tfds))
	seen := map[int]int{}
	for _, tg := range pe.tfds {
		toff := seen[tg.tfd] // the kernel counts same-numbered targets in fdinfo's order
		seen[tg.tfd]++
		found := false
		for _, o := range t.opened {
			if o.ino != tg.ino || o.dev != kernelDev(tg.sdev) {
				continue
			}
			if isEpollTarget(o.pid, o.fd, pe.pid, pe.efd, tg.tfd, toff) {
				ids = append(ids, o.id)
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("%s: epoll target registered as fd %d (inode %d) is open nowhere in the dumped tree: %w", pe.where, tg.tfd, tg.ino, ErrUnsupported)
		}
	}
	st.targets[strconv.Itoa(int(pe.id))] = ids
	return nil
}

// finishEpolls finds the targets of the epolls of tasks, once every fd
// is dumped, and puts epoll.json beside files.img.
func finishEpolls(t *fileTable) error {
	st, ok := t.kinds["epoll"].(*epollDumpState)
	if !ok {
		return nil
	}
	for _, pe := range st.pending {
		if err := findEpollTargets(t, st, pe); err != nil {
			return err
		}
	}
	st.pending = nil
	b, err := json.Marshal(st.targets)
	if err != nil {
		return err
	}
	t.sidecars = append(t.sidecars, sidecar{name: epollFile, data: b})
	return nil
}

// epollTargetIDs returns the target file ids epoll.json keeps for epoll
// id, or nil for an image without them.
func (r *fileRestore) epollTargetIDs(id uint32) ([]uint32, error) {
	all, ok := r.state["epoll.json"].(map[string][]uint32)
	if !ok {
		all = map[string][]uint32{}
		b, err := os.ReadFile(r.cp.dir.Path(epollFile))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		if err == nil {
			if err := json.Unmarshal(b, &all); err != nil {
				return nil, corruptf(epollFile, "%v", err)
			}
		}
		r.state["epoll.json"] = all
	}
	return all[strconv.Itoa(int(id))], nil
}

func openEpoll(r *fileRestore, e *fdinfo.FileEntry) (*os.File, error) {
	ep := e.GetEpfd()
	if ep == nil {
		return nil, corruptf("files.img", "epoll id %d without its entry", e.GetId())
	}
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll id %d: %w", e.GetId(), err)
	}
	f, err := newFd(fd, "epoll", ep.GetFlags())
	if err != nil {
		return nil, err
	}
	targets, err := r.epollTargetIDs(e.GetId())
	if err != nil {
		f.Close()
		return nil, err
	}
	if len(targets) > 0 || len(ep.GetTfd()) == 0 {
		if len(targets) != len(ep.GetTfd()) {
			f.Close()
			return nil, corruptf(epollFile, "epoll id %d has %d targets, files.img %d", e.GetId(), len(targets), len(ep.GetTfd()))
		}
		r.finals = append(r.finals, func() error { return r.registerEpollTargetsFromCtcr(e, f, targets) })
	}
	return f, nil
}

// registerEpollTargetsFromCtcr adds the targets of epoll e (f) under
// their numbers, once every file of the checkpoint is open. It runs on a
// thread with its own copy of ctcr's fd table, where each target can be
// put at its number with dup3 whatever ctcr holds there; the copy goes
// with the thread, and the epoll keeps its items, which live as long as
// their files.
func (r *fileRestore) registerEpollTargetsFromCtcr(e *fdinfo.FileEntry, f *os.File, targets []uint32) error {
	tfds := e.GetEpfd().GetTfd()
	if len(tfds) == 0 {
		return nil
	}
	files := make([]*os.File, len(targets))
	maxTfd := 0
	for i, id := range targets {
		tf, err := r.get(id)
		if err != nil {
			return fmt.Errorf("epoll id %d: its target file id %d: %w", e.GetId(), id, err)
		}
		files[i] = tf
		maxTfd = max(maxTfd, int(tfds[i].GetTfd()))
	}
	return nsthread.Run(func() error {
		if err := unix.Unshare(unix.CLONE_FILES); err != nil {
			return fmt.Errorf("epoll id %d: unshare(CLONE_FILES): %w", e.GetId(), err)
		}
		return nil
	}, func() error {
		// Move the epoll and every target above the highest target
		// number first, so that no dup3 below replaces one still needed.
		high := func(g *os.File) (int, error) {
			nfd := -1
			err := rawFd(g, func(fd int) error {
				var err error
				nfd, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, maxTfd+1)
				return err
			})
			return nfd, err
		}
		epfd, err := high(f)
		if err != nil {
			return fmt.Errorf("epoll id %d: dup: %w", e.GetId(), err)
		}
		srcs := make([]int, len(files))
		for i, tf := range files {
			if srcs[i], err = high(tf); err != nil {
				return fmt.Errorf("epoll id %d: dup its target file id %d: %w", e.GetId(), targets[i], err)
			}
		}
		for i, tfd := range tfds {
			n := int(tfd.GetTfd())
			if r.signalfdByTask[epollItem{e.GetId(), tfd.GetTfd()}] {
				continue
			}
			if err := unix.Dup3(srcs[i], n, unix.O_CLOEXEC); err != nil {
				return fmt.Errorf("epoll id %d: put target file id %d at fd %d: %w", e.GetId(), targets[i], n, err)
			}
			d := tfd.GetData()
			ev := unix.EpollEvent{Events: tfd.GetEvents(), Fd: int32(uint32(d)), Pad: int32(uint32(d >> 32))}
			if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, n, &ev); err != nil {
				return fmt.Errorf("epoll id %d: register target fd %d (file id %d, events %#x): %w", e.GetId(), n, targets[i], tfd.GetEvents(), err)
			}
			unix.Close(n)
		}
		return nil
	})
}

// rawFd runs fn with f's descriptor number, without f.Fd() (which
// would make a pollable file blocking).
func rawFd(f *os.File, fn func(fd int) error) error {
	conn, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := conn.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// registerEpollTargets adds every target to the epoll at fd in task t,
// once per epoll however many fds and tasks share it: the first task
// that holds it, as at dump, is the one whose fd numbers were recorded.
func registerEpollTargets(r *fileRestore, t *restoringTask, fd int, e *fdinfo.FileEntry) error {
	done, _ := r.state["epoll"].(map[uint32]bool)
	if done == nil {
		done = map[uint32]bool{}
		r.state["epoll"] = done
	}
	if done[e.GetId()] {
		return nil
	}
	done[e.GetId()] = true
	if ids, err := r.epollTargetIDs(e.GetId()); err != nil || len(ids) > 0 {
		if err != nil {
			return err
		}
		// Registered from ctcr (registerEpollTargetsFromCtcr), but for
		// signalfds: a signalfd's poll waits on the signals of the task
		// that polls it first (fs/signalfd.c signalfd_poll, current's
		// sighand), which must be this task, not ctcr. Else systemd,
		// whose SIGCHLD comes through a signalfd in its epoll, never
		// wakes for one again.
		return r.registerSignalfdTargets(t, fd, e, ids)
	}
	tfds := e.GetEpfd().GetTfd()
	if len(tfds) == 0 {
		return nil
	}
	b := t.ctl.newBatch()
	what := map[int]string{}
	for _, tfd := range tfds {
		if err := addEpollCtl(b, fd, tfd, what, "target"); err != nil {
			return err
		}
	}
	if res, err := b.run(); err != nil {
		return fmt.Errorf("epoll: %s: %w", what[len(res)], err)
	}
	return nil
}

// epollItem is a target of an epoll: the epoll's file id, the target's
// fd number.
type epollItem struct{ epoll, tfd uint32 }

// registerSignalfdTargets adds the signalfd targets of epoll e, at fd
// in task t, from t itself; the others are added from ctcr. The
// signalfd must be at its recorded number in t's table.
func (r *fileRestore) registerSignalfdTargets(t *restoringTask, fd int, e *fdinfo.FileEntry, ids []uint32) error {
	tfds := e.GetEpfd().GetTfd()
	b := t.ctl.newBatch()
	what := map[int]string{}
	for i, tfd := range tfds {
		if i >= len(ids) || r.cp.files[ids[i]].GetType() != fdinfo.FdTypes_SIGNALFD {
			continue
		}
		at := false
		for _, own := range t.img.fds {
			at = at || (own.GetFd() == tfd.GetTfd() && own.GetId() == ids[i])
		}
		if !at {
			return fmt.Errorf("epoll id %d: its signalfd target (file id %d) is not at fd %d of %s, which polled it: %w", e.GetId(), ids[i], tfd.GetTfd(), t.where(), ErrUnsupported)
		}
		if r.signalfdByTask == nil {
			r.signalfdByTask = map[epollItem]bool{}
		}
		r.signalfdByTask[epollItem{e.GetId(), tfd.GetTfd()}] = true
		if err := addEpollCtl(b, fd, tfd, what, "signalfd target"); err != nil {
			return err
		}
	}
	if res, err := b.run(); err != nil {
		return fmt.Errorf("epoll: %s: %w", what[len(res)], err)
	}
	return nil
}

// addEpollCtl adds to b the epoll_ctl(EPOLL_CTL_ADD) that registers tfd
// with the epoll at fd, and names it in what by its call index.
func addEpollCtl(b *batch, fd int, tfd *eventpoll.EventpollTfdEntry, what map[int]string, kind string) error {
	// struct epoll_event is packed on x86-64: u32 events, u64 data.
	var ev [12]byte
	binary.LittleEndian.PutUint32(ev[0:], tfd.GetEvents())
	binary.LittleEndian.PutUint64(ev[4:], tfd.GetData())
	p, err := b.put(ev[:])
	if err != nil {
		return err
	}
	what[b.add(unix.SYS_EPOLL_CTL, uint64(fd), unix.EPOLL_CTL_ADD, uint64(tfd.GetTfd()), p)] =
		fmt.Sprintf("register %s fd %d (events %#x)", kind, tfd.GetTfd(), tfd.GetEvents())
	return nil
}
