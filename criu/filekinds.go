package criu

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/proc"
)

// A fileKind is one kind of open file: regular files, pipes, sockets,
// event fds... Each kind lives in its own file with its dump and restore
// sides (files_reg.go, pipes.go, ...) and is listed once in fileKinds.
type fileKind struct {
	name   string
	fdType fdinfo.FdTypes
	// dump records the open file description behind d if it is of this
	// kind and returns its entry for files.img; (nil, nil) means the fd
	// is not of this kind.
	dump func(d *fdDump) (*fdinfo.FileEntry, error)
	// open recreates the open file description in ctcr; restore passes
	// it to every task that had it.
	open func(r *fileRestore, e *fdinfo.FileEntry) (*os.File, error)
	// fixup, if set, runs once the task has all its fds (epoll targets,
	// locks): fd is the number the file has in the task.
	fixup func(r *fileRestore, t *restoringTask, fd int, e *fdinfo.FileEntry) error
	// finish, if set, runs once every task's fds are dumped, before any
	// image is written: what needs the whole tree (a socket's peer).
	finish func(t *fileTable) error
}

// fileKinds are tried in order on every fd at dump. Set in init: a unix
// socket's dump dumps the fds in flight in its queue through them.
var fileKinds []*fileKind

func init() {
	fileKinds = []*fileKind{&memfds, &mqueueFiles, &regularFiles, &symlinkFds, &pipes, &fifos, &unixSockets, &inetSockets, &netlinkSockets, &packetSockets, &eventfdFiles, &pidfds, &epolls, &inotifies, &fanotifies, &signalfdFiles, &timerfdFiles, &ttys, &nsFiles, &bpfObjects}
}

func fileKindOf(t fdinfo.FdTypes) *fileKind {
	for _, k := range fileKinds {
		if k.fdType == t {
			return k
		}
	}
	return nil
}

// fdDump is one fd being dumped.
type fdDump struct {
	pid, fd  int
	vpid     int    // pid as the tree's PID namespace sees it (0: ctcr's own fd)
	where    string // "task P fd N", for errors
	link     string // what /proc/PID/fd/N points at
	st       unix.Stat_t
	info     *proc.Fdinfo
	flags    uint32 // file status flags (O_CLOEXEC is the fd's, not the file's)
	files    *fileTable
	shellJob bool
	dup      *os.File
}

// file returns the open file description itself, duplicated into ctcr
// with pidfd_getfd: a kind inspects pipes, sockets and event fds through
// it without disturbing the task. ctcr closes it after the dump.
func (d *fdDump) file() (*os.File, error) {
	if d.dup != nil {
		return d.dup, nil
	}
	pfd, err := unix.PidfdOpen(d.pid, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: pidfd_open: %w", d.where, err)
	}
	defer unix.Close(pfd)
	fd, err := unix.PidfdGetfd(pfd, d.fd, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: pidfd_getfd: %w", d.where, err)
	}
	d.dup = os.NewFile(uintptr(fd), d.link)
	return d.dup, nil
}

// unsupported names an fd ctcr cannot checkpoint.
func (d *fdDump) unsupported(what string) error {
	return fmt.Errorf("%s: %s: %w", d.where, what, ErrUnsupported)
}

// extraImage is an image a file kind writes besides files.img (pipes,
// pipes-data, unixsk, ...): entries, each optionally followed by raw data.
type extraImage struct {
	kind    images.Kind
	file    string // its file name in the images directory
	entries []proto.Message
	payload [][]byte
}

// addImage appends an entry (and raw data after it, or nil) to the image
// of kind k.
func (t *fileTable) addImage(k images.Kind, m proto.Message, payload []byte) {
	t.addImageAs(k, k.FileName(), m, payload)
}

// addImageAs is addImage for a kind with one file per object (file).
func (t *fileTable) addImageAs(k images.Kind, file string, m proto.Message, payload []byte) {
	if t.extra == nil {
		t.extra = map[string]*extraImage{}
	}
	x, ok := t.extra[file]
	if !ok {
		x = &extraImage{kind: k, file: file}
		t.extra[file] = x
		t.extraOrder = append(t.extraOrder, file)
	}
	x.entries = append(x.entries, m)
	x.payload = append(x.payload, payload)
}

// finish dumps the fds in flight in socket queues and runs every kind's
// finish, once every task's fds are dumped: files.img is complete after.
func (t *fileTable) finish() error {
	if err := t.dumpInFlight(); err != nil {
		return err
	}
	for _, k := range fileKinds {
		if k.finish != nil {
			if err := k.finish(t); err != nil {
				return err
			}
		}
	}
	// Last: it takes connections out of accept queues, which a failed
	// dump cannot put back.
	return t.takeAcceptQueues()
}

// writeExtra writes every extra image into the staging dir.
func (t *fileTable) writeExtra(stage *images.Staging) error {
	for _, sc := range t.sidecars {
		if err := stage.WriteFile(sc.name, sc.data); err != nil {
			return fmt.Errorf("write %s: %w", sc.name, err)
		}
	}
	if err := t.writeNetLock(stage.Path(netLockFile)); err != nil {
		return fmt.Errorf("write %s: %w", netLockFile, err)
	}
	for _, name := range t.extraOrder {
		x := t.extra[name]
		if err := writeWithPayloads(stage.Path(x.file), x); err != nil {
			return fmt.Errorf("write %s: %w", x.file, err)
		}
	}
	return nil
}

func writeWithPayloads(path string, x *extraImage) error {
	f, err := images.CreateFile(path, os.O_WRONLY)
	if err != nil {
		return err
	}
	if x.kind.Prefix == images.PrefixRaw {
		// A raw image (pages) is its payloads alone, without entries.
		for _, p := range x.payload {
			if _, err := f.Write(p); err != nil {
				f.Close()
				return err
			}
		}
		return f.Close()
	}
	w, err := images.NewWriter(f, x.kind)
	if err != nil {
		f.Close()
		return err
	}
	for i, m := range x.entries {
		if err := w.Write(m); err != nil {
			f.Close()
			return err
		}
		if len(x.payload[i]) > 0 {
			if err := w.WritePayload(x.payload[i]); err != nil {
				f.Close()
				return err
			}
		}
	}
	return f.Close()
}

// fileRestore opens the files of a checkpoint for the tasks being
// restored: each open file description once, shared by every fd and task
// that had it.
type fileRestore struct {
	cp      *checkpoint
	rootPid int // host PID of the restored root: paths resolve in its root
	opts    *RestoreOptions
	files   map[uint32]*os.File
	// state keeps what a kind builds across files (a pipe's two ends,
	// a socket pair), by kind name.
	state map[string]any
	// hostPid returns the host PID of the restored process with id vpid,
	// hostTid the host id of the restored thread with id vtid.
	hostPid, hostTid func(id int) (int, bool)
	// finals run once every task has its files, before any task runs
	// (a TCP connection leaves repair mode once both its ends exist).
	finals []func() error
	// lateFinals run after the finals, once the segments the dump held
	// still get through again (a TCP handshake made at restore).
	lateFinals []func() error
	// asyncArmed are the files in O_ASYNC mode whose mode a task set
	// again through its own fd (rearmAsync).
	asyncArmed map[uint32]bool
	// signalfdByTask are the epoll items a task registered itself
	// (registerSignalfdTargets); registerEpollTargetsFromCtcr skips them.
	signalfdByTask map[epollItem]bool
}

// firstHolder returns the host PID of the first restored task, in the
// order tasks were dumped, with a descriptor on file id: the task whose
// view the dump saw the file in (its IPC namespace's queue, its mount
// namespace's path), or the root if none holds it.
func (r *fileRestore) firstHolder(id uint32) int {
	for _, ti := range r.cp.tasks {
		if ti.zombie {
			continue
		}
		for _, fd := range ti.fds {
			if fd.GetId() != id {
				continue
			}
			if host, ok := r.hostPid(int(ti.pstree.GetPid())); ok {
				return host
			}
		}
	}
	return r.rootPid
}

// finalize runs the finals in the order they were added, lets the
// segments of TCP connections the dump held still through, then runs the
// late finals.
func (r *fileRestore) finalize() error {
	for _, f := range r.finals {
		if err := f(); err != nil {
			return err
		}
	}
	r.finals = nil
	table, err := readNetLock(r.cp.dir.Path(netLockFile))
	if err != nil {
		return err
	}
	if table != "" {
		if err := unlockTable(r.rootPid, table); err != nil {
			return err
		}
	}
	for _, f := range r.lateFinals {
		if err := f(); err != nil {
			return err
		}
	}
	r.lateFinals = nil
	return nil
}

func newFileRestore(cp *checkpoint, opts *RestoreOptions) *fileRestore {
	return &fileRestore{cp: cp, opts: opts, files: map[uint32]*os.File{}, state: map[string]any{}, asyncArmed: map[uint32]bool{}}
}

// get returns the open file description with id, opening it on first use.
func (r *fileRestore) get(id uint32) (*os.File, error) {
	if f, ok := r.files[id]; ok {
		return f, nil
	}
	e := r.cp.files[id]
	k := fileKindOf(e.GetType())
	if k == nil {
		return nil, fmt.Errorf("file id %d of type %v: %w", id, e.GetType(), ErrUnsupported)
	}
	f, err := k.open(r, e)
	if err != nil {
		return nil, err
	}
	r.files[id] = f
	if fo := fownOf(e); fo != nil && (fo.GetPid() != 0 || fo.GetSignum() != 0) {
		r.finals = append(r.finals, func() error { return r.setFown(id, f, fo) })
	}
	return f, nil
}

func (r *fileRestore) close() {
	removeGhostDirs(r) // files_ghostkinds.go: names a failed restore left
	for _, f := range r.files {
		f.Close()
	}
}

// readExtra reads an extra image of kind k with its payloads, once.
func (r *fileRestore) readExtra(k images.Kind, newMsg func() proto.Message, payloadSize func(proto.Message) int64) (*extraImage, error) {
	key := "image:" + k.Name
	if x, ok := r.state[key]; ok {
		return x.(*extraImage), nil
	}
	path := r.cp.dir.Path(k.FileName())
	x := &extraImage{kind: k}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rd, err := images.NewReader(f, k, path)
	if err != nil {
		return nil, err
	}
	for {
		m := newMsg()
		if err := rd.Next(m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, err
		}
		var data []byte
		if payloadSize != nil {
			if n := payloadSize(m); n > 0 {
				if data, err = rd.ReadPayload(n); err != nil {
					return nil, err
				}
			}
		}
		x.entries = append(x.entries, m)
		x.payload = append(x.payload, data)
	}
	r.state[key] = x
	return x, nil
}
