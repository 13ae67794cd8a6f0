package criu

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	ghost "github.com/checkpoint-restore/go-criu/v7/crit/images/ghost-file"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/regfile"
	remap "github.com/checkpoint-restore/go-criu/v7/crit/images/remap-file-path"
	timeimg "github.com/checkpoint-restore/go-criu/v7/crit/images/time"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
)

// Ghost files: regular files a task holds open after they were unlinked.
// Their content exists nowhere but in the open file, so, as CRIU does
// (criu/files-reg.c), the dump keeps it: the fd's reg-file entry names
// the path the file had, remap-fpath.img maps that entry to a ghost, and
// ghost-file-ID.img holds the inode's owner, mode, times and size and
// then its data in chunks (holes are not saved), each a ghost_chunk
// entry followed by its bytes.
//
// Restore creates the file at its old path (or beside it, when the name
// was taken since), fills it, opens it, and unlinks it at once: the task
// gets an fd that works as before, with its flags and position, and the
// directory does not show the file again. Every open file description of
// the same ghost is opened from that one inode.
//
// A mapping of an unlinked file (classifyVMA) gets the same: a reg-file
// entry remapped to the ghost, whose content is saved once for every fd
// and mapping of the inode; restore maps the recreated inode, so a
// MAP_SHARED mapping stays shared with the task's fds of that file.

// DefaultGhostLimit is how many bytes of data one unlinked file may hold
// to be kept in the images when DumpOptions.GhostLimit is 0. CRIU's
// --ghost-limit default is 1 MiB; ctcr kept files up to 64 MiB before the
// limit became an option, and keeps that default so that no dump that
// worked fails now.
const DefaultGhostLimit = 64 << 20

func ghostImage(id uint32) images.Kind {
	return images.Kind{Name: fmt.Sprintf("GHOST_FILE %x", id), File: fmt.Sprintf("ghost-file-%x.img", id), Magic: images.GhostFile.Magic, Prefix: images.GhostFile.Prefix}
}

// ghostDumpState maps unlinked inodes (dev, ino) to their ghost id.
type ghostDumpState struct {
	ids map[[2]uint64]uint32
	// limit caps the data bytes (holes left out) of one ghost.
	limit int64
}

func ghostDump(t *fileTable) *ghostDumpState {
	return t.kindState("ghost", func() any {
		return &ghostDumpState{ids: map[[2]uint64]uint32{}, limit: DefaultGhostLimit}
	}).(*ghostDumpState)
}

// setGhostLimit sets the data bytes one unlinked file may hold to be
// kept (DumpOptions.GhostLimit: 0 leaves DefaultGhostLimit, a negative
// one keeps none that holds data).
func setGhostLimit(t *fileTable, limit int64) {
	if limit != 0 {
		ghostDump(t).limit = max(limit, 0)
	}
}

// dumpGhostFile records the unlinked regular file behind d: its
// reg-file entry and, once per inode, its ghost.
func dumpGhostFile(d *fdDump) (*fdinfo.FileEntry, error) {
	path := strings.TrimSuffix(d.link, " (deleted)")
	st := &d.st
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return dumpGhostKindFd(d) // files_ghostkinds.go
	}
	if st.Nlink != 0 {
		return nil, d.unsupported(fmt.Sprintf("file %s was removed but is not an unlinked regular file (mode %#o, %d links)", d.link, st.Mode, st.Nlink))
	}
	gid, err := ghostID(d.files, d.procFile(), path)
	if err != nil {
		return nil, err
	}
	e := d.files.regEntry(path, d.flags, uint64(d.info.Pos), st)
	if err := ghostView(d.files, d.procFile(), e); err != nil {
		return nil, err
	}
	d.files.addImage(images.RemapFpath, &remap.RemapFilePathEntry{
		OrigId: proto.Uint32(e.GetId()), RemapId: proto.Uint32(gid), RemapType: remap.RemapType_GHOST.Enum(),
	}, nil)
	return e, nil
}

// ghostID returns the id of the ghost of the unlinked file src (whose
// path was path), dumping its content the first time: an fd and a
// mapping of one unlinked file share it.
func ghostID(t *fileTable, src procFile, path string) (uint32, error) {
	gs := ghostDump(t)
	key := [2]uint64{src.st.Dev, src.st.Ino}
	if gid, ok := gs.ids[key]; ok {
		return gid, nil
	}
	gid := uint32(len(gs.ids) + 1)
	if err := dumpGhostContent(t, src, path, gid); err != nil {
		return 0, err
	}
	gs.ids[key] = gid
	return gid, nil
}

// dumpMappedGhost records the unlinked regular file that mapping src
// maps (path is where it was): its ghost once, and a reg-file entry
// remapped to it to map it from at restore, read-write for a shared
// mapping and read-only for a private one. It returns the entry's id.
func dumpMappedGhost(t *fileTable, src procFile, path string, shared bool) (uint32, error) {
	st := src.st
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 0 {
		return 0, src.unsupported(fmt.Sprintf("file %s was removed but is not an unlinked regular file (mode %#o, %d links)", path, st.Mode, st.Nlink))
	}
	gid, err := ghostID(t, src, path)
	if err != nil {
		return 0, err
	}
	flags := uint32(unix.O_RDONLY)
	if shared {
		flags = unix.O_RDWR
	}
	key := fmt.Sprintf("\x00ghost\x00%d\x00%d", gid, flags)
	if id, ok := t.byKey[key]; ok {
		return id, nil
	}
	e := t.regEntry(path, flags, 0, st)
	if err := ghostView(t, src, e); err != nil {
		return 0, err
	}
	t.entries = append(t.entries, e)
	t.addImage(images.RemapFpath, &remap.RemapFilePathEntry{
		OrigId: proto.Uint32(e.GetId()), RemapId: proto.Uint32(gid), RemapType: remap.RemapType_GHOST.Enum(),
	}, nil)
	t.byKey[key] = e.GetId()
	return e.GetId(), nil
}

// ghostView names in e the mount of the unlinked file src if it is one
// of a nested mount namespace (files_mntview.go): the restore makes it
// again in its old directory in that namespace's view.
func ghostView(t *fileTable, src procFile, e *fdinfo.FileEntry) error {
	id, err := t.viewMount(src.path, e.GetReg().GetName(), src.st, true)
	if err != nil {
		return fmt.Errorf("%s: %w", src.where, err)
	}
	if id != noMount {
		e.Reg.MntId = proto.Int32(id)
	}
	return nil
}

func dumpGhostContent(t *fileTable, src procFile, path string, gid uint32) error {
	// The inode's attributes, then its data extents only (SEEK_DATA/
	// SEEK_HOLE, as for memfds): a sparse file costs its data, not its
	// size, in the images and comes back with its holes. The limit caps
	// the data bytes, as CRIU's --ghost-limit does.
	limit := ghostDump(t).limit
	st := src.st
	f, err := src.openForRead()
	if err != nil {
		return err
	}
	defer f.Close()
	runs, err := dataRuns(f, st.Size, 1)
	if err != nil {
		return fmt.Errorf("%s: unlinked file %s: %w", src.where, path, err)
	}
	var data int64
	for _, r := range runs {
		data += r.len
	}
	if data > limit {
		return src.unsupported(fmt.Sprintf("unlinked file %s holds %d bytes of data (size %d), over the ghost limit of %d: raise it with --ghost-limit", path, data, st.Size, limit))
	}
	k := ghostImage(gid)
	t.addImage(k, &ghost.GhostFileEntry{
		Uid: proto.Uint32(st.Uid), Gid: proto.Uint32(st.Gid), Mode: proto.Uint32(st.Mode),
		Dev: proto.Uint32(uint32(st.Dev)), Ino: proto.Uint64(st.Ino),
		Atim:   &timeimg.Timeval{TvSec: proto.Uint64(uint64(st.Atim.Sec)), TvUsec: proto.Uint64(uint64(st.Atim.Nsec / 1000))},
		Mtim:   &timeimg.Timeval{TvSec: proto.Uint64(uint64(st.Mtim.Sec)), TvUsec: proto.Uint64(uint64(st.Mtim.Nsec / 1000))},
		Chunks: proto.Bool(true), Size: proto.Uint64(uint64(st.Size)),
	}, nil)
	for _, r := range runs {
		buf := make([]byte, r.len)
		n, err := f.ReadAt(buf, r.off)
		if err != nil && !(errors.Is(err, io.EOF) && int64(n) == r.len) {
			return fmt.Errorf("%s: unlinked file %s: read %d bytes at %d: %w", src.where, path, r.len, r.off, err)
		}
		t.addImage(k, &ghost.GhostChunkEntry{Len: proto.Uint64(uint64(r.len)), Off: proto.Uint64(uint64(r.off))}, buf)
	}
	return nil
}

// ghostRestoreState: which file ids are ghosts (from remap-fpath.img),
// and the ghosts created so far.
type ghostRestoreState struct {
	remaps  map[uint32]uint32 // reg-file id -> ghost id
	created map[uint32]*os.File
}

func ghostState(r *fileRestore) (*ghostRestoreState, error) {
	if st, ok := r.state["ghost"].(*ghostRestoreState); ok {
		return st, nil
	}
	st := &ghostRestoreState{remaps: map[uint32]uint32{}, created: map[uint32]*os.File{}}
	x, err := r.readExtra(images.RemapFpath, func() proto.Message { return &remap.RemapFilePathEntry{} }, nil)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if x != nil {
		for _, m := range x.entries {
			e := m.(*remap.RemapFilePathEntry)
			if e.GetRemapType() != remap.RemapType_GHOST {
				return nil, fmt.Errorf("%s: file id %d: remap type %v: %w", images.RemapFpath.FileName(), e.GetOrigId(), e.GetRemapType(), ErrUnsupported)
			}
			st.remaps[e.GetOrigId()] = e.GetRemapId()
		}
	}
	r.state["ghost"] = st
	return st, nil
}

// openGhostFile opens the reg-file entry e if it is a ghost; ok is false
// when it is not one.
func openGhostFile(r *fileRestore, e *fdinfo.FileEntry) (f *os.File, ok bool, err error) {
	st, err := ghostState(r)
	if err != nil {
		return nil, true, err
	}
	gid, ok := st.remaps[e.GetId()]
	if !ok {
		return nil, false, nil
	}
	if f, ok, err := openGhostKind(r, e); ok { // files_ghostkinds.go
		return f, true, err
	}
	reg := e.GetReg()
	inode, ok := st.created[gid]
	if !ok {
		if inode, err = createGhost(r, gid, reg); err != nil {
			return nil, true, fmt.Errorf("unlinked file %s: %w", reg.GetName(), err)
		}
		st.created[gid] = inode
		// Kept open until restore ends, like every restored file.
		r.files[^uint32(0)-(1<<16)-gid] = inode
	}
	flags := int(reg.GetFlags()) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC | unix.O_NOCTTY)
	f, err = os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", inode.Fd()), flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, true, fmt.Errorf("unlinked file %s: open with flags %#o: %w", reg.GetName(), flags, err)
	}
	if _, err := f.Seek(int64(reg.GetPos()), io.SeekStart); err != nil {
		f.Close()
		return nil, true, fmt.Errorf("unlinked file %s: seek to %d: %w", reg.GetName(), reg.GetPos(), err)
	}
	return f, true, nil
}

// createGhost makes the file of ghost gid at reg's path (or a free name
// beside it), in the view of the mount namespace reg names (the root's
// if none), fills it, and unlinks it; it returns the file open O_RDWR.
func createGhost(r *fileRestore, gid uint32, reg *regfile.RegFileEntry) (*os.File, error) {
	path := reg.GetName()
	view, err := r.viewPid(reg, r.rootPid)
	if err != nil {
		return nil, err
	}
	img, rd, ge, imgPath, err := openGhostImage(r, gid)
	if err != nil {
		return nil, err
	}
	defer img.Close()
	// No cap on the size: the dump's --ghost-limit capped the data, a
	// chunk is capped like any image entry (ReadPayload), and holes cost
	// nothing to make.
	if ge.GetMode()&unix.S_IFMT != unix.S_IFREG || !ge.GetChunks() || ge.GetSize() > math.MaxInt64 {
		return nil, corruptf(imgPath, "not a regular file in chunks (mode %#o, size %d)", ge.GetMode(), ge.GetSize())
	}
	// Created in its old directory as the tree sees it, resolved inside
	// the tree's root through no symlink, and by *at calls on that
	// directory only: a symlink planted since cannot make it land, or be
	// unlinked, on the host.
	dir, err := parentInTree(view, path)
	if err != nil {
		return nil, fmt.Errorf("create it again: %w", err)
	}
	defer dir.Close()
	// Made under a temporary name with ctcr's PID in it, then renamed to
	// its old name if free (the name /proc shows as deleted), then
	// unlinked: the janitor removes either name should ctcr die while it
	// is there (ghostjanitor.go).
	jan, err := ghostJanitorOf(r)
	if err != nil {
		return nil, err
	}
	var f *os.File
	var tmpID uint32
	want := dir.Base
	for i := 0; ; i++ {
		dir.Base = ghostTempName(want, gid, i)
		if tmpID, err = jan.add(dir.Fd(), dir.Base, 0, 0); err != nil {
			return nil, err
		}
		f, err = dir.Open(os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			break
		}
		jan.forget(tmpID)
		if !errors.Is(err, os.ErrExist) || i >= 100 {
			return nil, fmt.Errorf("create it again: %w", err)
		}
	}
	testKillAtGhostName("made")
	nameID := tmpID
	var st unix.Stat_t
	err = unix.Fstat(int(f.Fd()), &st)
	if err == nil {
		var wantID uint32
		if wantID, err = jan.add(dir.Fd(), want, st.Dev, st.Ino); err == nil {
			if unix.Renameat2(dir.Fd(), dir.Base, dir.Fd(), want, unix.RENAME_NOREPLACE) == nil {
				jan.forget(tmpID)
				dir.Base, nameID = want, wantID
				testKillAtGhostName("renamed")
			} else {
				// Taken since the dump: unlinked under the
				// temporary name all the same.
				jan.forget(wantID)
			}
		}
	}
	name := filepath.Join(filepath.Dir(path), dir.Base)
	// Unlinked before anything else can fail or see it.
	if uerr := dir.Unlink(); uerr != nil {
		f.Close()
		return nil, fmt.Errorf("unlink %s: %w", name, uerr)
	}
	jan.forget(nameID)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("create %s again: %w", name, err)
	}
	fail := func(err error) (*os.File, error) {
		f.Close()
		return nil, err
	}
	for {
		var c ghost.GhostChunkEntry
		if err := rd.Next(&c); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fail(err)
		}
		if c.GetOff() > ge.GetSize() || c.GetLen() > ge.GetSize()-c.GetOff() {
			return fail(corruptf(imgPath, "chunk of %d bytes at %d past the size %d", c.GetLen(), c.GetOff(), ge.GetSize()))
		}
		data, err := rd.ReadPayload(int64(c.GetLen()))
		if err != nil {
			return fail(err)
		}
		if _, err := f.WriteAt(data, int64(c.GetOff())); err != nil {
			return fail(err)
		}
	}
	fd := int(f.Fd())
	if err := f.Truncate(int64(ge.GetSize())); err != nil {
		return fail(err)
	}
	if err := unix.Fchown(fd, int(ge.GetUid()), int(ge.GetGid())); err != nil {
		return fail(fmt.Errorf("chown %d:%d: %w", ge.GetUid(), ge.GetGid(), err))
	}
	if err := unix.Fchmod(fd, ge.GetMode()&0o7777); err != nil {
		return fail(fmt.Errorf("chmod %#o: %w", ge.GetMode()&0o7777, err))
	}
	if ge.Atim != nil && ge.Mtim != nil {
		ts := []unix.Timespec{
			{Sec: int64(ge.Atim.GetTvSec()), Nsec: int64(ge.Atim.GetTvUsec()) * 1000},
			{Sec: int64(ge.Mtim.GetTvSec()), Nsec: int64(ge.Mtim.GetTvUsec()) * 1000},
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), ts, 0); err != nil {
			return fail(fmt.Errorf("times: %w", err))
		}
	}
	// Returned read-only (not O_RDWR): while ctcr holds a writer, the
	// kernel refuses the inode as a task's executable (PR_SET_MM_MAP's
	// exe_fd denies write access, EACCES). openGhostFile reopens it with
	// each description's flags.
	ro, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd), os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(fmt.Errorf("reopen %s read-only: %w", name, err))
	}
	f.Close()
	return ro, nil
}

// dumpExeGhost records the executable of task pid, deleted (or replaced
// by another file, as an upgrade does) while the task runs; link is its
// /proc/PID/exe. As CRIU does, it is kept as a ghost, the one its
// mappings share, and restore sets the recreated inode as the task's
// executable, which /proc/PID/exe then shows " (deleted)" again. It
// returns the id of the reg-file entry that mm.img's exe_file_id names.
func dumpExeGhost(t *fileTable, pid int, link string) (uint32, error) {
	src := procFile{where: fmt.Sprintf("task %d executable", pid), path: fmt.Sprintf("/proc/%d/exe", pid), st: &unix.Stat_t{}}
	if err := unix.Stat(src.path, src.st); err != nil {
		return 0, fmt.Errorf("%s %s: %w", src.where, link, err)
	}
	return dumpMappedGhost(t, src, strings.TrimSuffix(link, " (deleted)"), false)
}

// ghostInode says whether reg-file entry e is a ghost and, once restore
// made it again, its device and inode (0, 0 before).
func ghostInode(r *fileRestore, e *fdinfo.FileEntry) (dev, ino uint64, ok bool) {
	st, err := ghostState(r)
	if err != nil {
		return 0, 0, false
	}
	gid, ok := st.remaps[e.GetId()]
	if !ok {
		return 0, 0, false
	}
	var s unix.Stat_t
	if f := st.created[gid]; f != nil && unix.Fstat(int(f.Fd()), &s) == nil {
		return s.Dev, s.Ino, true
	}
	return 0, 0, true
}
