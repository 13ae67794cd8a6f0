package criu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	filelock "github.com/checkpoint-restore/go-criu/v7/crit/images/file-lock"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
)

// File locks. The kernel lists, in the fdinfo of an fd, the locks taken
// through that open file: flock locks and OFD locks (owned by the open
// file description) and the POSIX locks of the task's fd table. With
// --file-locks each is kept in filelocks.img as CRIU keeps it
// (criu/file-lock.c): its kind, type, range and the task and fd that
// hold it. Restore takes it again from that task through that fd, once
// the task has all its fds. Without --file-locks a lock fails the dump:
// a restored task that believes it holds a lock it does not hold would
// corrupt what the lock protects.
//
// Leases (F_SETLEASE) show there too ("LEASE ACTIVE READ"): they belong
// to the open file description, and are kept the same way, with CRIU's
// FL_LEASE kind, and taken again with F_SETLEASE through the task's fd.
// A lease being broken (another open is waiting for it) is refused: the
// waiter is outside the dump, and the break's timer cannot be restored.

// Lock kinds of filelocks.img (CRIU criu/include/file-lock.h).
const (
	flPosix = 1
	flFlock = 2
	flOFD   = 4
	flLease = 8
)

// fileLock is one "lock:" line of an fdinfo.
type fileLock struct {
	kind       string // POSIX, FLOCK, OFDLCK, LEASE, ...
	mode       string // ADVISORY, MANDATORY; for a lease ACTIVE, BREAKING, BREAKER
	write      bool
	pid        int
	start, end int64 // end -1: to EOF
}

// parseLockLine parses
//
//	lock:	1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF
func parseLockLine(line string) (fileLock, error) {
	var l fileLock
	f := strings.Fields(strings.TrimPrefix(line, "lock:"))
	if len(f) < 8 || !strings.HasSuffix(f[0], ":") {
		return l, fmt.Errorf("lock line %q", line)
	}
	l.kind = f[1]
	l.mode = f[2]
	switch f[3] {
	case "WRITE":
		l.write = true
	case "READ":
	default:
		return l, fmt.Errorf("lock line %q: type %s", line, f[3])
	}
	var err error
	if l.pid, err = strconv.Atoi(f[4]); err != nil {
		return l, fmt.Errorf("lock line %q: pid: %w", line, err)
	}
	if l.start, err = strconv.ParseInt(f[6], 10, 64); err != nil {
		return l, fmt.Errorf("lock line %q: start: %w", line, err)
	}
	if f[7] == "EOF" {
		l.end = -1
	} else if l.end, err = strconv.ParseInt(f[7], 10, 64); err != nil || l.end < l.start {
		return l, fmt.Errorf("lock line %q: end", line)
	}
	return l, nil
}

func (l fileLock) String() string {
	t := "read"
	if l.write {
		t = "write"
	}
	end := "EOF"
	if l.end >= 0 {
		end = strconv.FormatInt(l.end, 10)
	}
	return fmt.Sprintf("%s %s lock on bytes %d-%s", l.kind, t, l.start, end)
}

// dumpFileLocks records the locks held through the fd d (file id), or
// fails on the first one without --file-locks. A lock shows in every fd
// of its open file (dups, fds inherited across fork): it is kept once,
// with the first task and fd that show it.
func dumpFileLocks(d *fdDump, id uint32) error {
	var seen map[string]bool
	for _, line := range d.info.Extra {
		if !strings.HasPrefix(line, "lock:") {
			continue
		}
		l, err := parseLockLine(line)
		if err != nil {
			return fmt.Errorf("%s (%s): %w", d.where, d.link, err)
		}
		if !d.files.fileLocks {
			return fmt.Errorf("%s (%s) holds a %v: dump with --file-locks to keep it: %w", d.where, d.link, l, ErrUnsupported)
		}
		if d.vpid == 0 {
			return d.unsupported(fmt.Sprintf("%v held through a file in flight (%s)", l, d.link))
		}
		var flag uint32
		owner := ""
		switch l.kind {
		case "POSIX":
			flag, owner = flPosix, strconv.Itoa(d.pid)
		case "FLOCK":
			flag = flFlock
		case "OFDLCK":
			flag = flOFD
		case "LEASE":
			if l.mode != "ACTIVE" {
				return d.unsupported(fmt.Sprintf("%v being broken (%s): an open of the file waits for it", l, d.link))
			}
			flag = flLease
		default:
			return d.unsupported(fmt.Sprintf("%v (%s)", l, d.link))
		}
		if seen == nil {
			seen = d.files.kindState("file locks", func() any { return map[string]bool{} }).(map[string]bool)
		}
		key := fmt.Sprintf("%d %d %s %d %d", id, flag, owner, l.start, l.end)
		if seen[key] {
			continue
		}
		seen[key] = true
		length := int64(0)
		if l.end >= 0 {
			length = l.end + 1 - l.start
		}
		typ := uint32(unix.F_RDLCK)
		if l.write {
			typ = unix.F_WRLCK
		}
		d.files.addImage(images.FileLocks, &filelock.FileLockEntry{
			Flag: proto.Uint32(flag), Type: proto.Uint32(typ), Pid: proto.Int32(int32(d.vpid)), Fd: proto.Int32(int32(d.fd)),
			Start: proto.Int64(l.start), Len: proto.Int64(length),
		}, nil)
	}
	return nil
}

// restoreFileLocks takes again, in task t, the locks it held through fd.
// It never waits: a lock someone else took since the dump fails the
// restore, naming it.
func restoreFileLocks(r *fileRestore, t *restoringTask, fd int, e *fdinfo.FileEntry) error {
	x, err := r.readExtra(images.FileLocks, func() proto.Message { return &filelock.FileLockEntry{} }, nil)
	if errors.Is(err, os.ErrNotExist) {
		r.state["image:"+images.FileLocks.Name] = &extraImage{kind: images.FileLocks}
		return nil
	}
	if err != nil {
		return err
	}
	b := t.ctl.newBatch()
	what := map[int]string{}
	for _, m := range x.entries {
		l := m.(*filelock.FileLockEntry)
		if int(l.GetPid()) != t.vpid || int(l.GetFd()) != fd {
			continue
		}
		typ := l.GetType()
		if typ != unix.F_RDLCK && typ != unix.F_WRLCK {
			return corruptf(images.FileLocks.FileName(), "lock type %d", typ)
		}
		desc := fmt.Sprintf("lock type %d on bytes %d+%d", typ, l.GetStart(), l.GetLen())
		switch l.GetFlag() {
		case flLease:
			what[b.add(unix.SYS_FCNTL, uint64(fd), unix.F_SETLEASE, uint64(typ))] = fmt.Sprintf("lease type %d", typ)
		case flFlock:
			op := uint64(unix.LOCK_SH)
			if typ == unix.F_WRLCK {
				op = unix.LOCK_EX
			}
			what[b.add(unix.SYS_FLOCK, uint64(fd), op|unix.LOCK_NB)] = "flock " + desc
		case flPosix, flOFD:
			cmd, name := uint64(unix.F_SETLK), "POSIX "
			if l.GetFlag() == flOFD {
				cmd, name = unix.F_OFD_SETLK, "OFD "
			}
			// struct flock: short type, short whence, pad, off_t start,
			// off_t len, pid_t pid, pad.
			var fl [32]byte
			binary.LittleEndian.PutUint16(fl[0:], uint16(typ))
			binary.LittleEndian.PutUint16(fl[2:], 0) // SEEK_SET
			binary.LittleEndian.PutUint64(fl[8:], uint64(l.GetStart()))
			binary.LittleEndian.PutUint64(fl[16:], uint64(l.GetLen()))
			p, err := b.put(fl[:])
			if err != nil {
				return err
			}
			what[b.add(unix.SYS_FCNTL, uint64(fd), cmd, p)] = name + desc
		default:
			return corruptf(images.FileLocks.FileName(), "lock kind %d", l.GetFlag())
		}
	}
	if res, err := b.run(); err != nil {
		return fmt.Errorf("%s (someone else holds it now?): %w", what[len(res)], err)
	}
	return nil
}
