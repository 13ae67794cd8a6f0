package criu

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pipe"
	pipedata "github.com/checkpoint-restore/go-criu/v7/crit/images/pipe-data"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
)

// pipes are anonymous pipes. Each end an fd holds is one open file
// description: files.img gets a PIPE entry for it (its flags, and the
// pipe's inode as pipe_id), and pipes-data.img one entry per pipe inode
// with the pipe's size and the bytes buffered in it, as CRIU lays them
// out (criu/pipes.c):
//
//	pipes-data.img: PIPES_DATA magic, then per pipe:
//	    pipe_data_entry{pipe_id, bytes, size} | bytes of raw data
//
// Restore makes one pipe per pipe_id, writes its data back and hands the
// same description to every fd and task that shared it.
var pipes = fileKind{
	name:   "pipe",
	fdType: fdinfo.FdTypes_PIPE,
	dump:   dumpPipe,
	open:   openPipe,
}

func noFown() *fown.FownEntry {
	return &fown.FownEntry{Uid: proto.Uint32(0), Euid: proto.Uint32(0), Signum: proto.Uint32(0), PidType: proto.Uint32(0), Pid: proto.Uint32(0)}
}

func dumpPipe(d *fdDump) (*fdinfo.FileEntry, error) {
	if d.st.Mode&unix.S_IFMT != unix.S_IFIFO || !strings.HasPrefix(d.link, "pipe:") {
		return nil, nil
	}
	ino := uint32(d.st.Ino)
	if err := dumpPipeData(d, images.PipesData, ino); err != nil {
		return nil, err
	}
	id := d.files.nextID()
	return &fdinfo.FileEntry{Id: proto.Uint32(id), Pipe: &pipe.PipeEntry{
		Id: proto.Uint32(id), PipeId: proto.Uint32(ino), Flags: proto.Uint32(d.flags), Fown: noFown(),
	}}, nil
}

// dumpPipeData adds the buffered data of the pipe (or FIFO) behind d to
// the image of kind k, once per pipe inode.
func dumpPipeData(d *fdDump, k images.Kind, ino uint32) error {
	if x, ok := d.files.extra[k.Name]; ok {
		for _, m := range x.entries {
			if m.(*pipedata.PipeDataEntry).GetPipeId() == ino {
				return nil
			}
		}
	}
	data, size, err := peekPipe(d)
	if err != nil {
		return fmt.Errorf("%s (%s): read the buffered data: %w", d.where, d.link, err)
	}
	d.files.addImage(k, &pipedata.PipeDataEntry{
		PipeId: proto.Uint32(ino), Bytes: proto.Uint32(uint32(len(data))), Size: proto.Uint32(uint32(size)),
	}, data)
	return nil
}

// peekPipe returns the bytes buffered in the pipe behind d and the pipe's
// size, leaving the data where it is: tee(2) duplicates the buffers into
// a pipe of ctcr's own, which ctcr then reads.
func peekPipe(d *fdDump) ([]byte, int, error) {
	var src *os.File
	if d.flags&unix.O_ACCMODE == unix.O_WRONLY {
		// Only a write end here: open a read end of the same pipe. With
		// O_NONBLOCK the open neither waits for a writer nor consumes.
		f, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", d.pid, d.fd), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, 0, fmt.Errorf("open a read end: %w", err)
		}
		defer f.Close()
		src = f
	} else {
		f, err := d.file()
		if err != nil {
			return nil, 0, err
		}
		src = f
	}
	sfd := int(src.Fd())
	size, err := unix.FcntlInt(uintptr(sfd), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("F_GETPIPE_SZ: %w", err)
	}
	n, err := unix.IoctlGetInt(sfd, unix.TIOCINQ)
	if err != nil {
		return nil, 0, fmt.Errorf("FIONREAD: %w", err)
	}
	if n == 0 {
		return nil, size, nil
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, 0, err
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	// As many slots as the source: tee copies buffer references, one
	// slot each, however few bytes a buffer holds.
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, size); err != nil {
		return nil, 0, fmt.Errorf("F_SETPIPE_SZ %d on ctcr's pipe: %w", size, err)
	}
	got, err := unix.Tee(sfd, p[1], math.MaxInt32, unix.SPLICE_F_NONBLOCK)
	if err != nil {
		return nil, 0, fmt.Errorf("tee: %w", err)
	}
	if int(got) != n {
		return nil, 0, fmt.Errorf("tee copied %d of %d buffered bytes", got, n)
	}
	data := make([]byte, n)
	for off := 0; off < n; {
		m, err := unix.Read(p[0], data[off:])
		if err != nil {
			return nil, 0, err
		}
		if m == 0 {
			return nil, 0, fmt.Errorf("read %d of %d teed bytes", off, n)
		}
		off += m
	}
	return data, size, nil
}

// pipeData finds the data entry of pipe_id in the image of kind k.
func pipeData(r *fileRestore, k images.Kind, pipeID uint32) (*pipedata.PipeDataEntry, []byte, error) {
	x, err := r.readExtra(k, func() proto.Message { return &pipedata.PipeDataEntry{} }, func(m proto.Message) int64 {
		return int64(m.(*pipedata.PipeDataEntry).GetBytes())
	})
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, nil
		}
		return nil, nil, err
	}
	for i, m := range x.entries {
		if e := m.(*pipedata.PipeDataEntry); e.GetPipeId() == pipeID {
			return e, x.payload[i], nil
		}
	}
	return nil, nil, nil
}

// fillPipe gives the pipe whose write end is w its size and data back.
func fillPipe(w *os.File, e *pipedata.PipeDataEntry, data []byte) error {
	if e == nil {
		return nil
	}
	fd := int(w.Fd())
	if size := int(e.GetSize()); size > 0 {
		cur, err := unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0)
		if err != nil {
			return err
		}
		if cur != size {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, size); err != nil {
				return fmt.Errorf("F_SETPIPE_SZ %d: %w", size, err)
			}
		}
	}
	if int64(len(data)) != int64(e.GetBytes()) {
		return fmt.Errorf("pipe %d: %d bytes of data, the entry says %d", e.GetPipeId(), len(data), e.GetBytes())
	}
	for off := 0; off < len(data); {
		n, err := unix.Write(fd, data[off:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("write %d bytes back: %w", len(data), err)
		}
		off += n
	}
	return nil
}

// restoredPipe is a pipe made at restore: its two ends as ctcr made
// them, and whether a description of each was handed out already.
type restoredPipe struct {
	ends [2]*os.File
	used [2]bool
}

// hold keeps f open until restore ends; fileRestore.close closes it.
// Keys count down from the top of the id space, which files.img ids
// (counted up from 1) never reach.
func (r *fileRestore) hold(f *os.File) {
	id := uint32(math.MaxUint32)
	for r.files[id] != nil {
		id--
	}
	r.files[id] = f
}

// pipeEnd returns an open file description of one end of p with the
// access mode and status flags of flags: the end pipe2 made, the first
// time, and a new description of the same pipe (opened through
// /proc/self/fd) for every other.
func pipeEnd(p *restoredPipe, flags uint32) (*os.File, error) {
	end := 0
	if flags&unix.O_ACCMODE != unix.O_RDONLY {
		end = 1
	}
	status := int(flags) & (unix.O_NONBLOCK | unix.O_DIRECT | unix.O_ASYNC | unix.O_NOATIME)
	if !p.used[end] && flags&unix.O_ACCMODE != unix.O_RDWR {
		p.used[end] = true
		f := p.ends[end]
		if _, err := unix.FcntlInt(f.Fd(), unix.F_SETFL, status); err != nil {
			return nil, fmt.Errorf("set flags %#x: %w", status, err)
		}
		return f, nil
	}
	// O_NONBLOCK for the open itself: a FIFO open would wait for a peer.
	path := fmt.Sprintf("/proc/self/fd/%d", p.ends[end].Fd())
	fd, err := unix.Open(path, int(flags&unix.O_ACCMODE)|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open another description of %s: %w", p.ends[end].Name(), err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, status); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set flags %#x: %w", status, err)
	}
	return os.NewFile(uintptr(fd), p.ends[end].Name()), nil
}

func openPipe(r *fileRestore, e *fdinfo.FileEntry) (*os.File, error) {
	pe := e.GetPipe()
	if pe == nil {
		return nil, corruptf("files.img", "pipe id %d without its entry", e.GetId())
	}
	state, _ := r.state["pipe"].(map[uint32]*restoredPipe)
	if state == nil {
		state = map[uint32]*restoredPipe{}
		r.state["pipe"] = state
	}
	id := pe.GetPipeId()
	if in := r.opts.InheritFds[fmt.Sprintf("pipe:[%d]", id)]; in != nil {
		// The caller's pipe replaces the dumped one; its data and other
		// end are the caller's.
		fd, err := unix.FcntlInt(in.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("pipe %d: the inherited fd: %w", id, err)
		}
		return os.NewFile(uintptr(fd), in.Name()), nil
	}
	p := state[id]
	if p == nil {
		var fds [2]int
		if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
			return nil, fmt.Errorf("pipe %d: %w", id, err)
		}
		name := fmt.Sprintf("pipe:[%d]", id)
		p = &restoredPipe{ends: [2]*os.File{os.NewFile(uintptr(fds[0]), name), os.NewFile(uintptr(fds[1]), name)}}
		// An end no task holds must not outlive restore: a reader would
		// never see EOF.
		r.hold(p.ends[0])
		r.hold(p.ends[1])
		state[id] = p
		de, data, err := pipeData(r, images.PipesData, id)
		if err != nil {
			return nil, fmt.Errorf("pipe %d: %w", id, err)
		}
		if err := fillPipe(p.ends[1], de, data); err != nil {
			return nil, fmt.Errorf("pipe %d: %w", id, err)
		}
	}
	f, err := pipeEnd(p, pe.GetFlags())
	if err != nil {
		return nil, fmt.Errorf("pipe %d: %w", id, err)
	}
	return f, nil
}
