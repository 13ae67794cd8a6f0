package criu

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/eventpoll"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// epolls are epoll instances. Each registered target is kept as CRIU
// keeps it (criu/eventpoll.c): the target's fd number in the task that
// registered it, its events and its data, in the epoll's entry of
// files.img. Restore creates the instance in ctcr and, once the task
// has all its fds, registers every target again from inside the task
// with epoll_ctl: the kernel keys an item by (file, fd number), so the
// task's later EPOLL_CTL_MOD or DEL of that fd must find it. The target
// may be any kind of file ctcr restores (pipes, sockets, event fds,
// other epolls): only its fd number matters here.
var epolls = fileKind{
	name:   "epoll",
	fdType: fdinfo.FdTypes_EVENTPOLL,
	dump:   dumpEpoll,
	open:   openEpoll,
	fixup:  registerEpollTargets,
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
	for _, l := range d.info.Extra {
		if !strings.HasPrefix(l, "tfd:") {
			continue
		}
		t, err := parseEpollTarget(l)
		if err != nil {
			return nil, fmt.Errorf("%s (%s): %w", d.where, d.link, err)
		}
		// The kernel keeps the fd number given at EPOLL_CTL_ADD; the
		// task may have closed or reused it since, while another fd
		// keeps the file alive. Restore needs the number to hold the
		// same file.
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", d.pid, t.tfd), &st); err != nil || st.Ino != t.ino || st.Dev != kernelDev(t.sdev) {
			return nil, d.unsupported(fmt.Sprintf("epoll target fd %d (inode %d) is no longer open at that number", t.tfd, t.ino))
		}
		ep.Tfd = append(ep.Tfd, &eventpoll.EventpollTfdEntry{
			Id: proto.Uint32(id), Tfd: proto.Uint32(uint32(t.tfd)), Events: proto.Uint32(t.events), Data: proto.Uint64(t.data),
			Dev: proto.Uint32(uint32(kernelDev(t.sdev))), Inode: proto.Uint64(t.ino), Pos: proto.Uint64(t.pos),
		})
	}
	return &fdinfo.FileEntry{Id: proto.Uint32(id), Epfd: ep}, nil
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
	return newFd(fd, "epoll", ep.GetFlags())
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
	tfds := e.GetEpfd().GetTfd()
	if len(tfds) == 0 {
		return nil
	}
	b := t.ctl.newBatch()
	what := map[int]string{}
	for _, tfd := range tfds {
		// struct epoll_event is packed on x86-64: u32 events, u64 data.
		var ev [12]byte
		binary.LittleEndian.PutUint32(ev[0:], tfd.GetEvents())
		binary.LittleEndian.PutUint64(ev[4:], tfd.GetData())
		p, err := b.put(ev[:])
		if err != nil {
			return err
		}
		what[b.add(unix.SYS_EPOLL_CTL, uint64(fd), unix.EPOLL_CTL_ADD, uint64(tfd.GetTfd()), p)] =
			fmt.Sprintf("register target fd %d (events %#x)", tfd.GetTfd(), tfd.GetEvents())
	}
	if res, err := b.run(); err != nil {
		return fmt.Errorf("epoll: %s: %w", what[len(res)], err)
	}
	return nil
}
