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
	entries []*fdinfo.FileEntry
	byKey   map[string]uint32 // mapped files and fs paths, deduplicated
	opened  []openFd          // every fd dumped so far, in every task
}

// openFd is one dumped fd, kept to find the same open file description
// in later fds and tasks.
type openFd struct {
	pid, fd  int
	id       uint32
	ino, dev uint64
}

func newFileTable() *fileTable { return &fileTable{byKey: map[string]uint32{}} }

func (t *fileTable) nextID() uint32 { return uint32(len(t.entries) + 1) }

// regFile returns the id of a reg-file entry for path opened with flags,
// sharing one entry between all users of the same path and flags at
// position 0 (mappings, cwd, root, the executable).
func (t *fileTable) regFile(path string, flags uint32, pos uint64, st *unix.Stat_t) uint32 {
	key := fmt.Sprintf("%s\x00%d", path, flags)
	if pos == 0 {
		if id, ok := t.byKey[key]; ok {
			return id
		}
	}
	id := t.add(path, flags, pos, st)
	if pos == 0 {
		t.byKey[key] = id
	}
	return id
}

func (t *fileTable) add(path string, flags uint32, pos uint64, st *unix.Stat_t) uint32 {
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
	t.entries = append(t.entries, &fdinfo.FileEntry{Type: fdinfo.FdTypes_REG.Enum(), Id: proto.Uint32(id), Reg: reg})
	return id
}

// harmlessCharDevs are character devices a task may hold that mean the
// same thing on any Linux machine (major, minor).
var harmlessCharDevs = map[[2]uint32]string{
	{1, 3}: "/dev/null", {1, 5}: "/dev/zero", {1, 7}: "/dev/full",
	{1, 8}: "/dev/random", {1, 9}: "/dev/urandom",
}

func isTTY(st *unix.Stat_t) bool {
	maj := unix.Major(st.Rdev)
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && (maj == 4 || maj == 5 || (maj >= 136 && maj <= 143))
}

// dumpFds records every open fd of pid. Each fd whose file description
// is shared with an earlier fd (dup, or inherited) gets the same id, found
// with kcmp(KCMP_FILE).
func dumpFds(pid int, files *fileTable, shellJob bool) ([]*fdinfo.FdinfoEntry, error) {
	fds, err := proc.Fds(pid)
	if err != nil {
		return nil, fmt.Errorf("task %d: list fds: %w", pid, err)
	}
	var out []*fdinfo.FdinfoEntry
	for _, fd := range fds {
		where := fmt.Sprintf("task %d fd %d", pid, fd)
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		info, err := proc.ReadFdinfo(pid, fd)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", pid, fd), &st); err != nil {
			return nil, fmt.Errorf("%s (%s): %w", where, link, err)
		}
		fdFlags := uint32(0)
		if info.Flags&unix.O_CLOEXEC != 0 {
			fdFlags = unix.FD_CLOEXEC
		}
		fileFlags := info.Flags &^ unix.O_CLOEXEC
		// Same open file description as an earlier fd, here or in an
		// earlier task (dup, or inherited across fork)?
		var id uint32
		for _, p := range files.opened {
			if p.ino == st.Ino && p.dev == st.Dev && sameFile(p.pid, p.fd, pid, fd) {
				id = p.id
				break
			}
		}
		if id == 0 {
			if id, err = dumpFile(where, link, fileFlags, info, &st, files, shellJob); err != nil {
				return nil, err
			}
		}
		files.opened = append(files.opened, openFd{pid: pid, fd: fd, id: id, ino: st.Ino, dev: st.Dev})
		out = append(out, &fdinfo.FdinfoEntry{Id: proto.Uint32(id), Flags: proto.Uint32(fdFlags), Type: fdinfo.FdTypes_REG.Enum(), Fd: proto.Uint32(uint32(fd))})
	}
	return out, nil
}

// dumpFile records one open file description and returns its id, or says
// which kind of file is not supported.
func dumpFile(where, link string, flags uint32, info *proc.Fdinfo, st *unix.Stat_t, files *fileTable, shellJob bool) (uint32, error) {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFDIR:
		if strings.HasSuffix(link, " (deleted)") {
			return 0, fmt.Errorf("%s: file %s is unlinked: open unlinked files: %w", where, link, ErrUnsupported)
		}
		if !strings.HasPrefix(link, "/") {
			return 0, fmt.Errorf("%s: %s: %w", where, fdKind(link), ErrUnsupported)
		}
		return files.add(link, flags, uint64(info.Pos), st), nil
	case unix.S_IFCHR:
		if name, ok := harmlessCharDevs[[2]uint32{unix.Major(st.Rdev), unix.Minor(st.Rdev)}]; ok {
			return files.add(name, flags, uint64(info.Pos), st), nil
		}
		if isTTY(st) {
			if !shellJob {
				return 0, fmt.Errorf("%s: terminal %s (use --shell-job to restore it on ctcr's own terminal): %w", where, link, ErrUnsupported)
			}
			return files.add(link, flags, 0, st), nil
		}
		return 0, fmt.Errorf("%s: character device %s (%d:%d): %w", where, link, unix.Major(st.Rdev), unix.Minor(st.Rdev), ErrUnsupported)
	}
	return 0, fmt.Errorf("%s: %s: %w", where, fdKind(link), ErrUnsupported)
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
