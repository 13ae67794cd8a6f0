package criu

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/regfile"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/proc"
)

// fileTable collects the entries of files.img: every open file
// description, mapped file, cwd and root, each with an id.
type fileTable struct {
	// stats: the paths of mappings, cwd, root and executable stated in
	// their tasks' roots so far.
	stats      statCache
	entries    []*fdinfo.FileEntry
	byKey      map[string]uint32 // mapped files and fs paths, deduplicated
	opened     []openFd          // every fd dumped so far, in every task
	extra      map[string]*extraImage
	extraOrder []string
	kinds      map[string]any // what a file kind keeps across fds and tasks, by kind name
	// fileLocks: dump the locks tasks hold (--file-locks) instead of
	// failing on them.
	fileLocks bool
	// giveBacks put back what reading a file took from it (the bytes
	// buffered in a terminal) for tasks that run on after the dump.
	giveBacks []func() error
	closers   []func()
	// flights are the queued messages carrying fds; inFlight: the fd
	// being dumped is one of those.
	flights  []inFlightMsg
	inFlight bool
	// warnf reports what the checkpoint keeps differently from how it
	// was, which the user should know.
	warnf func(format string, args ...any)
	// tcpClose: established TCP connections are dumped to come back as
	// ended (--tcp-close) instead of failing the dump.
	tcpClose bool
	// tcpEstablished: connections with an end outside the tree move
	// too, held still by netLock meanwhile (--tcp-established).
	tcpEstablished bool
	// leaveRunning: the tasks run on after the dump
	// (DumpOptions.LeaveRunning).
	leaveRunning bool
	netLock      *netLock
	// vpidOf maps the host PID of each process of the tree to its PID
	// in the tree's namespace (what a pidfd names).
	vpidOf map[int]int
	// vtidOf and vpgidOf do the same for threads and process groups
	// (what a SIGIO owner names).
	vtidOf, vpgidOf map[int]int
	// sidecars are files a kind writes beside the images (JSON where
	// CRIU has no image type).
	sidecars []sidecar
	// savesIPC: the queues of the tree's own IPC namespace are saved
	// besides (DumpOptions.SavesIPC).
	savesIPC bool
	// hostSysV: the host's SysV segments the tree maps are saved
	// besides (DumpOptions.HostSysV).
	hostSysV bool
	// rootNetIno is the inode of the root task's network namespace;
	// nestedNS: sockets of a task's own network namespace below it are
	// kept (DumpOptions.NestedNS; socketNetID).
	rootNetIno uint64
	nestedNS   bool
	// rootIPCIno is the inode of the root task's IPC namespace; queues
	// of the others are saved with their nested namespace (nestedIPC).
	rootIPCIno uint64
	// rootPid is the host PID of the tree's root task (0 in a table
	// that is no dump's): with nestedNS, files of a nested mount
	// namespace's own view name their mount (files_mntview.go).
	rootPid int
}

// giveBack puts back, newest first, everything the dump took out of the
// tasks' files, if the tasks are to run on (keep), and lets go of what
// the kinds held for that.
func (t *fileTable) giveBack(keep bool, logf func(string, ...any)) {
	if keep {
		for i := len(t.giveBacks) - 1; i >= 0; i-- {
			if err := t.giveBacks[i](); err != nil {
				logf("%v", err)
			}
		}
	}
	t.giveBacks = nil
	for _, c := range t.closers {
		c()
	}
	t.closers = nil
}

// kindState returns what kind name keeps in t, made by mk on first use.
func (t *fileTable) kindState(name string, mk func() any) any {
	if t.kinds == nil {
		t.kinds = map[string]any{}
	}
	v, ok := t.kinds[name]
	if !ok {
		v = mk()
		t.kinds[name] = v
	}
	return v
}

// openFd is one dumped fd, kept to find the same open file description
// in later fds and tasks.
type openFd struct {
	pid, fd  int
	id       uint32
	ino, dev uint64
}

func newFileTable() *fileTable {
	return &fileTable{byKey: map[string]uint32{}, warnf: func(string, ...any) {}}
}

func (t *fileTable) nextID() uint32 { return uint32(len(t.entries) + 1) }

// regFileIn returns the id of a reg-file entry for path opened with
// flags, of the view of the mount with id mntID (noMount: the root's),
// sharing one entry between all users of the same path, view and flags
// at position 0 (mappings, cwd, root, the executable): the same path in
// two views is two files, with an entry each.
func (t *fileTable) regFileIn(path string, flags uint32, pos uint64, st *unix.Stat_t, mntID int32) uint32 {
	key := fmt.Sprintf("%s\x00%d", path, flags)
	if mntID != noMount {
		key += fmt.Sprintf("\x00mnt %d", mntID)
	}
	if pos == 0 {
		if id, ok := t.byKey[key]; ok {
			return id
		}
	}
	id := t.addIn(path, flags, pos, st, mntID)
	if pos == 0 {
		t.byKey[key] = id
	}
	return id
}

// addIn adds a reg-file entry of the view of the mount with id mntID
// (noMount: none named).
func (t *fileTable) addIn(path string, flags uint32, pos uint64, st *unix.Stat_t, mntID int32) uint32 {
	e := t.regEntry(path, flags, pos, st)
	if mntID != noMount {
		e.Reg.MntId = proto.Int32(mntID)
	}
	t.entries = append(t.entries, e)
	return e.GetId()
}

// regEntry builds a reg-file entry with the next id, without adding it.
func (t *fileTable) regEntry(path string, flags uint32, pos uint64, st *unix.Stat_t) *fdinfo.FileEntry {
	id := t.nextID()
	reg := &regfile.RegFileEntry{
		Id: proto.Uint32(id), Flags: proto.Uint32(flags), Pos: proto.Uint64(pos),
		Fown: &fown.FownEntry{Uid: proto.Uint32(0), Euid: proto.Uint32(0), Signum: proto.Uint32(0), PidType: proto.Uint32(0), Pid: proto.Uint32(0)},
		Name: proto.String(path),
	}
	if st != nil {
		reg.Mode = proto.Uint32(st.Mode)
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			reg.Size = proto.Uint64(uint64(st.Size))
		}
	}
	return &fdinfo.FileEntry{Type: fdinfo.FdTypes_REG.Enum(), Id: proto.Uint32(id), Reg: reg}
}

// dumpFds records every open fd of pid. Each fd whose file description
// is shared with an earlier fd (dup, or inherited across fork) gets the
// same id, found with kcmp(KCMP_FILE); the file itself is dumped once, by
// the first kind in fileKinds that recognizes it.
func dumpFds(pid, vpid int, files *fileTable, shellJob bool) ([]*fdinfo.FdinfoEntry, error) {
	fds, err := proc.Fds(pid)
	if err != nil {
		return nil, fmt.Errorf("task %d: list fds: %w", pid, err)
	}
	var out []*fdinfo.FdinfoEntry
	for _, fd := range fds {
		d := &fdDump{pid: pid, vpid: vpid, fd: fd, where: fmt.Sprintf("task %d fd %d", pid, fd), files: files, shellJob: shellJob}
		e, err := dumpOneFd(d)
		if d.dup != nil {
			d.dup.Close()
		}
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func dumpOneFd(d *fdDump) (*fdinfo.FdinfoEntry, error) {
	var err error
	if d.link, err = os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", d.pid, d.fd)); err != nil {
		return nil, fmt.Errorf("%s: %w", d.where, err)
	}
	if d.info, err = proc.ReadFdinfo(d.pid, d.fd); err != nil {
		return nil, fmt.Errorf("%s: %w", d.where, err)
	}
	if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", d.pid, d.fd), &d.st); err != nil {
		return nil, fmt.Errorf("%s (%s): %w", d.where, d.link, err)
	}
	fdFlags := uint32(0)
	if d.info.Flags&unix.O_CLOEXEC != 0 {
		fdFlags = unix.FD_CLOEXEC
	}
	d.flags = d.info.Flags &^ unix.O_CLOEXEC
	files := d.files
	for _, p := range files.opened {
		if p.ino == d.st.Ino && p.dev == d.st.Dev && sameFile(p.pid, p.fd, d.pid, d.fd) {
			files.opened = append(files.opened, openFd{pid: d.pid, fd: d.fd, id: p.id, ino: d.st.Ino, dev: d.st.Dev})
			if err := dumpFileLocks(d, p.id); err != nil {
				return nil, err
			}
			return &fdinfo.FdinfoEntry{Id: proto.Uint32(p.id), Flags: proto.Uint32(fdFlags), Type: files.byID(p.id).Type, Fd: proto.Uint32(uint32(d.fd))}, nil
		}
	}
	for _, k := range fileKinds {
		e, err := k.dump(d)
		if err != nil {
			return nil, err
		}
		if e == nil {
			continue
		}
		e.Type = k.fdType.Enum()
		if err := dumpFown(d, e); err != nil {
			return nil, err
		}
		files.entries = append(files.entries, e)
		files.opened = append(files.opened, openFd{pid: d.pid, fd: d.fd, id: e.GetId(), ino: d.st.Ino, dev: d.st.Dev})
		if err := dumpFileLocks(d, e.GetId()); err != nil {
			return nil, err
		}
		return &fdinfo.FdinfoEntry{Id: proto.Uint32(e.GetId()), Flags: proto.Uint32(fdFlags), Type: k.fdType.Enum(), Fd: proto.Uint32(uint32(d.fd))}, nil
	}
	return nil, d.unsupported(fdKind(d.link))
}

// byID returns the entry with id.
func (t *fileTable) byID(id uint32) *fdinfo.FileEntry {
	return t.entries[id-1]
}

// fdKind names what a /proc/PID/fd link points at: "pipe pipe:[123]",
// "socket socket:[5]", "eventfd anon_inode:[eventfd]", ...
func fdKind(link string) string {
	switch {
	case strings.HasPrefix(link, "pipe:"):
		return "pipe " + link
	case strings.HasPrefix(link, "socket:"):
		return "socket " + link
	case strings.HasPrefix(link, "anon_inode:"):
		name := strings.Trim(strings.TrimPrefix(link, "anon_inode:"), "[]")
		return name + " " + link
	}
	return "file " + strconv.Quote(link)
}

// sidecar is a file written beside the images.
type sidecar struct {
	name string
	data []byte
}
