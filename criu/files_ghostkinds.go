package criu

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	ghost "github.com/checkpoint-restore/go-criu/v7/crit/images/ghost-file"
	remap "github.com/checkpoint-restore/go-criu/v7/crit/images/remap-file-path"
	timeimg "github.com/checkpoint-restore/go-criu/v7/crit/images/time"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/internal/inroot"
)

// Ghosts of other kinds: removed objects that are not regular files but
// that a task still holds — a FIFO it has open after it was unlinked, a
// directory (an fd, its cwd or its root) that was removed, a device node
// that was unlinked, an O_PATH|O_NOFOLLOW fd on a symlink that was
// removed. Nothing of them is lost with the name but the name: the
// ghost-file entry keeps what makes the object again, as CRIU writes it
// (criu/files-reg.c dump_ghost_file): owner, mode (with the type), times,
// rdev for a device node, symlnk_target for a symlink, and no chunks.
// The reg-file entry keeps the path the object had, remapped to the
// ghost in remap-fpath.img, exactly as for an unlinked regular file
// (files_ghost.go), whose ids these ghosts share.
//
// Restore makes the object again (mkfifo, mkdir, mknod, symlink) under
// a temporary name `.NAME.ctcr-ghost-PID-GID-I` beside its old path
// inside the tree's root (the parent must exist: its absence is an error
// that names it), gives it its owner, mode and times, opens it once and
// holds it, then renames it to its old name unless that was taken since.
// Every fd of it is opened through the holder, and the name is removed at
// once. A directory keeps its name until every task has its cwd and root
// (a task is moved there by path), then it is removed too, before any
// task runs; a failed restore removes it as well. Should ctcr be killed
// while a name is there, the ghost janitor removes it (ghostjanitor.go).

// ghostKindOK reports whether an object of mode st, removed from path,
// can be kept as a ghost of its kind, or why not.
func ghostKindOK(path string, st *unix.Stat_t) error {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO, unix.S_IFDIR, unix.S_IFLNK:
		return nil
	case unix.S_IFCHR:
		// Made again with its numbers, so only a device that means the
		// same on every machine, as for a linked one (files_reg.go).
		maj, min := unix.Major(st.Rdev), unix.Minor(st.Rdev)
		if _, ok := harmlessCharDevs[[2]uint32{maj, min}]; ok {
			return nil
		}
		return fmt.Errorf("character device %s (%d:%d) was removed; only removed nodes of /dev/null, zero, full, random and urandom are kept", path, maj, min)
	case unix.S_IFBLK:
		return fmt.Errorf("block device %s (%d:%d) was removed", path, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	return fmt.Errorf("file %s was removed but is not an unlinked regular file, FIFO, directory, device node or symlink (mode %#o)", path, st.Mode)
}

// deadProcDir refuses a removed directory of a proc file system (magic,
// a /proc link to it, shows which): the /proc/PID directory of a process
// that exited, which no mkdir can make again.
func deadProcDir(magic, path string) error {
	var fs unix.Statfs_t
	if err := unix.Statfs(magic, &fs); err != nil || fs.Type != unix.PROC_SUPER_MAGIC {
		return nil
	}
	return fmt.Errorf("directory %s of a proc file system was removed (the /proc directory of a process that exited): no mkdir makes it again", path)
}

// ghostKindID returns the id of the ghost of the removed object st,
// whose path was path (target: a symlink's), recording it the first
// time: every fd, cwd and root on one inode share it.
func ghostKindID(t *fileTable, path string, st *unix.Stat_t, target string) uint32 {
	gs := t.kindState("ghost", func() any { return &ghostDumpState{ids: map[[2]uint64]uint32{}} }).(*ghostDumpState)
	key := [2]uint64{st.Dev, st.Ino}
	if gid, ok := gs.ids[key]; ok {
		return gid
	}
	gid := uint32(len(gs.ids) + 1)
	ge := &ghost.GhostFileEntry{
		Uid: proto.Uint32(st.Uid), Gid: proto.Uint32(st.Gid), Mode: proto.Uint32(st.Mode),
		// dev in the kernel's encoding (major << 20 | minor), as CRIU
		// writes it and crit reads it; rdev below in the user one.
		Dev: proto.Uint32(unix.Major(st.Dev)<<20 | unix.Minor(st.Dev)&0xfffff), Ino: proto.Uint64(st.Ino),
		Atim: &timeimg.Timeval{TvSec: proto.Uint64(uint64(st.Atim.Sec)), TvUsec: proto.Uint64(uint64(st.Atim.Nsec / 1000))},
		Mtim: &timeimg.Timeval{TvSec: proto.Uint64(uint64(st.Mtim.Sec)), TvUsec: proto.Uint64(uint64(st.Mtim.Nsec / 1000))},
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR, unix.S_IFBLK:
		// The userspace dev_t encoding in 32 bits, as CRIU stores it;
		// ghostKindOK admitted only small numbers.
		ge.Rdev = proto.Uint32(uint32(st.Rdev))
	case unix.S_IFLNK:
		ge.SymlnkTarget = proto.String(target)
	}
	t.addImage(ghostImage(gid), ge, nil)
	gs.ids[key] = gid
	return gid
}

// remapToGhost maps reg-file entry id to ghost gid.
func remapToGhost(t *fileTable, id, gid uint32) {
	t.addImage(images.RemapFpath, &remap.RemapFilePathEntry{
		OrigId: proto.Uint32(id), RemapId: proto.Uint32(gid), RemapType: remap.RemapType_GHOST.Enum(),
	}, nil)
}

// dumpGhostKindFd records fd d on a removed directory, device node or
// symlink (dumpGhostFile sends every removed non-regular file here).
func dumpGhostKindFd(d *fdDump) (*fdinfo.FileEntry, error) {
	path := strings.TrimSuffix(d.link, " (deleted)")
	st := &d.st
	if st.Mode&unix.S_IFMT == unix.S_IFIFO {
		return nil, d.unsupported(fmt.Sprintf("FIFO %s is unlinked but not dumped as a FIFO", d.link))
	}
	if err := ghostKindOK(path, st); err != nil {
		return nil, d.unsupported(err.Error())
	}
	if err := deadProcDir(fmt.Sprintf("/proc/%d/fd/%d", d.pid, d.fd), path); err != nil {
		return nil, d.unsupported(err.Error())
	}
	var target string
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		// The link's own text, read through the task's O_PATH fd: the
		// name it had is gone.
		f, err := d.file()
		if err != nil {
			return nil, err
		}
		buf := make([]byte, unix.PathMax)
		n, err := unix.Readlinkat(int(f.Fd()), "", buf)
		if err != nil {
			return nil, fmt.Errorf("%s: read removed symlink %s: %w", d.where, path, err)
		}
		target = string(buf[:n])
	}
	gid := ghostKindID(d.files, path, st, target)
	pos := uint64(0)
	if st.Mode&unix.S_IFMT == unix.S_IFDIR || st.Mode&unix.S_IFMT == unix.S_IFCHR {
		pos = uint64(d.info.Pos)
	}
	e := d.files.regEntry(path, d.flags, pos, st)
	remapToGhost(d.files, e.GetId(), gid)
	return e, nil
}

// dumpRemovedFsDir records the removed directory that is task pid's cwd
// or root (name) and that /proc showed as link: a reg-file entry for its
// old path, remapped to its ghost.
func dumpRemovedFsDir(t *fileTable, pid int, name, link string) (uint32, error) {
	path := strings.TrimSuffix(link, " (deleted)")
	var st unix.Stat_t
	// Through the magic link: the directory itself, which no path
	// reaches any more.
	if err := unix.Stat(fmt.Sprintf("/proc/%d/%s", pid, name), &st); err != nil {
		return 0, fmt.Errorf("task %d %s %s (removed): %w", pid, name, path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return 0, fmt.Errorf("task %d %s %s is not a directory (mode %#o)", pid, name, path, st.Mode)
	}
	if err := deadProcDir(fmt.Sprintf("/proc/%d/%s", pid, name), path); err != nil {
		return 0, fmt.Errorf("task %d %s: %v: %w", pid, name, err, ErrUnsupported)
	}
	gid := ghostKindID(t, path, &st, "")
	ids := t.kindState("removed fs dirs", func() any { return map[uint32]uint32{} }).(map[uint32]uint32)
	if id, ok := ids[gid]; ok {
		return id, nil
	}
	id := t.addIn(path, unix.O_RDONLY|unix.O_DIRECTORY, 0, &st, noMount)
	remapToGhost(t, id, gid)
	ids[gid] = id
	return id, nil
}

// ghostKindInode is a ghost made again: held open, and for a directory
// the name it has until every task's cwd and root are set.
type ghostKindInode struct {
	ge   *ghost.GhostFileEntry
	held *os.File
	dir  *inroot.Dir // a directory's parent and name, until removed
	name string      // where it was made, for errors and chdir
	// jan removes the name should ctcr die while it is there; janID is
	// the name's entry there.
	jan   *ghostJanitor
	janID uint32
}

func ghostKindStates(r *fileRestore) map[uint32]*ghostKindInode {
	m, _ := r.state["ghostkinds"].(map[uint32]*ghostKindInode)
	if m == nil {
		m = map[uint32]*ghostKindInode{}
		r.state["ghostkinds"] = m
	}
	return m
}

// readGhostHeader reads the ghost-file entry of ghost gid.
func readGhostHeader(r *fileRestore, gid uint32) (*ghost.GhostFileEntry, error) {
	img, _, ge, _, err := openGhostImage(r, gid)
	if err != nil {
		return nil, err
	}
	img.Close()
	return ge, nil
}

// openGhostImage opens the image of ghost gid and reads its ghost-file
// entry; a regular file's chunks follow it in rd. The caller closes img.
func openGhostImage(r *fileRestore, gid uint32) (img *os.File, rd *images.Reader, ge *ghost.GhostFileEntry, imgPath string, err error) {
	k := ghostImage(gid)
	imgPath = r.cp.dir.Path(k.FileName())
	img, err = os.Open(imgPath)
	if err != nil {
		return nil, nil, nil, "", err
	}
	rd, err = images.NewReader(img, k, imgPath)
	if err == nil {
		ge = &ghost.GhostFileEntry{}
		err = rd.Next(ge)
	}
	if err != nil {
		img.Close()
		return nil, nil, nil, "", err
	}
	return img, rd, ge, imgPath, nil
}

// ghostKindOf returns the ghost of reg-file entry id made again, or nil
// when id is no ghost or a regular file's (files_ghost.go's).
func ghostKindOf(r *fileRestore, id uint32) (*ghostKindInode, error) {
	gs, err := ghostState(r)
	if err != nil {
		return nil, err
	}
	gid, ok := gs.remaps[id]
	if !ok {
		return nil, nil
	}
	states := ghostKindStates(r)
	if g, ok := states[gid]; ok {
		return g, nil
	}
	ge, err := readGhostHeader(r, gid)
	if err != nil {
		return nil, err
	}
	if ge.GetMode()&unix.S_IFMT == unix.S_IFREG {
		return nil, nil
	}
	path := r.cp.files[id].GetReg().GetName()
	g, err := makeGhostKind(r, gid, ge, path)
	if err != nil {
		return nil, fmt.Errorf("removed %s %s: %w", kindName(ge.GetMode()), path, err)
	}
	states[gid] = g
	return g, nil
}

func kindName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	case unix.S_IFLNK:
		return "symlink"
	}
	return fmt.Sprintf("file of mode %#o", mode)
}

// makeGhostKind makes ghost gid (entry ge) again at path or a free name
// beside it, opens it, and removes the name (a directory's later, by
// removeGhostDirs).
func makeGhostKind(r *fileRestore, gid uint32, ge *ghost.GhostFileEntry, path string) (*ghostKindInode, error) {
	imgName := ghostImage(gid).FileName()
	mode := ge.GetMode()
	perm := mode & 0o7777
	if err := ghostKindOK(path, &unix.Stat_t{Mode: mode, Rdev: uint64(ge.GetRdev())}); err != nil {
		return nil, corruptf(imgName, "%v", err)
	}
	if mode&unix.S_IFMT == unix.S_IFLNK && ge.GetSymlnkTarget() == "" {
		return nil, corruptf(imgName, "symlink without its target")
	}
	dir, err := parentInTree(r.rootPid, path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("its directory %s is gone too: %w", filepath.Dir(path), err)
		}
		return nil, fmt.Errorf("make it again: %w", err)
	}
	want := dir.Base
	jan, err := ghostJanitorOf(r)
	if err != nil {
		dir.Close()
		return nil, err
	}
	// Made under a temporary name first, which the janitor removes
	// should ctcr die before it does: a name with ctcr's PID in it,
	// which nobody else makes.
	var tmpID uint32
	for i := 0; ; i++ {
		dir.Base = ghostTempName(want, gid, i)
		if tmpID, err = jan.add(dir.Fd(), dir.Base, 0, 0); err != nil {
			dir.Close()
			return nil, err
		}
		switch mode & unix.S_IFMT {
		case unix.S_IFIFO:
			err = dir.Mknod(unix.S_IFIFO|0o600, 0)
		case unix.S_IFCHR, unix.S_IFBLK:
			err = dir.Mknod(mode&unix.S_IFMT|0o600, int(ge.GetRdev()))
		case unix.S_IFDIR:
			err = dir.Mkdir(0o700)
		case unix.S_IFLNK:
			err = dir.Symlink(ge.GetSymlnkTarget())
		}
		if err == nil {
			break
		}
		jan.forget(tmpID)
		if !errors.Is(err, os.ErrExist) || i >= 100 {
			dir.Close()
			return nil, fmt.Errorf("make it again: %w", err)
		}
	}
	testKillAtGhostName("made")
	name := filepath.Join(filepath.Dir(path), dir.Base)
	g := &ghostKindInode{ge: ge, name: name, jan: jan, janID: tmpID}
	remove := func() error {
		flags := 0
		if mode&unix.S_IFMT == unix.S_IFDIR {
			flags = unix.AT_REMOVEDIR
		}
		if err := unix.Unlinkat(dir.Fd(), dir.Base, flags); err != nil {
			return fmt.Errorf("remove %s: %w", g.name, err)
		}
		jan.forget(g.janID)
		return nil
	}
	fail := func(err error) (*ghostKindInode, error) {
		if g.held != nil {
			g.held.Close()
		}
		remove()
		dir.Close()
		return nil, err
	}
	// Owner, mode and times of the entry itself; a symlink has no mode
	// of its own.
	if err := dir.Lchown(int(ge.GetUid()), int(ge.GetGid())); err != nil {
		return fail(err)
	}
	if mode&unix.S_IFMT != unix.S_IFLNK {
		if err := dir.Lchmod(perm); err != nil {
			return fail(err)
		}
	}
	// Held: a FIFO read-write and non-blocking (it keeps the pipe and
	// its data alive, and opens without a peer); anything else O_PATH,
	// reopened with each fd's own flags.
	hold := unix.O_PATH
	if mode&unix.S_IFMT == unix.S_IFIFO {
		hold = unix.O_RDWR | unix.O_NONBLOCK
	}
	f, err := dir.Open(hold, 0)
	if err != nil {
		return fail(fmt.Errorf("open %s: %w", name, err))
	}
	g.held = f
	var st unix.Stat_t
	if err := unix.Fstatat(int(f.Fd()), "", &st, unix.AT_EMPTY_PATH); err != nil || st.Mode != mode || (mode&unix.S_IFMT == unix.S_IFCHR && uint32(st.Rdev) != ge.GetRdev()) {
		return fail(fmt.Errorf("%s is not what was made there (mode %#o, want %#o): %v", name, st.Mode, mode, err))
	}
	if ge.Atim != nil && ge.Mtim != nil {
		ts := []unix.Timespec{
			{Sec: int64(ge.Atim.GetTvSec()), Nsec: int64(ge.Atim.GetTvUsec()) * 1000},
			{Sec: int64(ge.Mtim.GetTvSec()), Nsec: int64(ge.Mtim.GetTvUsec()) * 1000},
		}
		if err := dir.Lutimes(ts); err != nil {
			return fail(err)
		}
	}
	// Then under the name it had, if free, which is the name /proc shows
	// (" (deleted)") for it once removed. The janitor removes that name
	// only while it is this inode: a file made there since by someone
	// else stays.
	wantID, err := jan.add(dir.Fd(), want, st.Dev, st.Ino)
	if err != nil {
		return fail(err)
	}
	if err := unix.Renameat2(dir.Fd(), dir.Base, dir.Fd(), want, unix.RENAME_NOREPLACE); err == nil {
		jan.forget(tmpID)
		dir.Base, g.janID = want, wantID
		g.name = path
		testKillAtGhostName("renamed")
	} else {
		// Taken since the dump (or its directory still holds a file
		// of that name): it stays beside it, under the temporary name.
		jan.forget(wantID)
		if !errors.Is(err, unix.EEXIST) {
			return fail(fmt.Errorf("rename %s to %s: %w", name, want, err))
		}
	}
	r.hold(f)
	if mode&unix.S_IFMT == unix.S_IFDIR {
		// A task's cwd and root are set by path (restoreFS): the name
		// stays until they are, and no longer than the restore.
		g.dir = dir
		r.finals = append(r.finals, func() error { return removeGhostDir(g) })
		return g, nil
	}
	if err := remove(); err != nil {
		dir.Close()
		return nil, err
	}
	dir.Close()
	return g, nil
}

// removeGhostDir removes the name of a directory ghost, once.
func removeGhostDir(g *ghostKindInode) error {
	if g.dir == nil {
		return nil
	}
	d := g.dir
	g.dir = nil
	defer d.Close()
	if err := unix.Unlinkat(d.Fd(), d.Base, unix.AT_REMOVEDIR); err != nil {
		return fmt.Errorf("removed directory %s: remove it again: %w", g.name, err)
	}
	g.jan.forget(g.janID)
	return nil
}

// removeGhostDirs removes the names of directory ghosts still there
// (a restore that failed before its finals), then stops the janitor:
// nothing is left for it to do.
func removeGhostDirs(r *fileRestore) {
	for _, g := range ghostKindStates(r) {
		removeGhostDir(g)
	}
	if j, ok := r.state["ghost janitor"].(*ghostJanitor); ok {
		j.stop()
		delete(r.state, "ghost janitor")
	}
}

// ghostJanitorOf returns the janitor of restore r, started on first use.
func ghostJanitorOf(r *fileRestore) (*ghostJanitor, error) {
	if j, ok := r.state["ghost janitor"].(*ghostJanitor); ok {
		return j, nil
	}
	j, err := startGhostJanitor()
	if err != nil {
		return nil, err
	}
	r.state["ghost janitor"] = j
	return j, nil
}

// testKillAtGhostName is a test hook: CTCR_TEST_KILL_AT_GHOST_NAME=made
// (or renamed) makes ctcr kill itself with SIGKILL right after it made a
// ghost under its temporary name (or renamed it to its old one), before
// it removes the name: the janitor must remove it.
func testKillAtGhostName(at string) {
	if os.Getenv("CTCR_TEST_KILL_AT_GHOST_NAME") == at {
		unix.Kill(os.Getpid(), unix.SIGKILL)
	}
}

// openGhostKind opens reg-file entry e if it is the ghost of a removed
// directory, device node or symlink; ok is false when it is not one.
func openGhostKind(r *fileRestore, e *fdinfo.FileEntry) (f *os.File, ok bool, err error) {
	g, err := ghostKindOf(r, e.GetId())
	if err != nil {
		return nil, true, err
	}
	if g == nil {
		return nil, false, nil
	}
	reg := e.GetReg()
	mode := g.ge.GetMode()
	switch mode & unix.S_IFMT {
	case unix.S_IFLNK:
		// Only O_PATH|O_NOFOLLOW opens a symlink, and a reopen through
		// /proc/self/fd would open the magic link: the held description.
		fd, err := unix.FcntlInt(g.held.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, true, fmt.Errorf("removed symlink %s: %w", reg.GetName(), err)
		}
		return os.NewFile(uintptr(fd), reg.GetName()), true, nil
	case unix.S_IFIFO:
		return nil, true, corruptf("files.img", "file id %d is a reg-file entry of an unlinked FIFO, which only a FIFO entry opens", e.GetId())
	}
	flags := int(reg.GetFlags()) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC | unix.O_NOCTTY)
	f, err = os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", g.held.Fd()), flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, true, fmt.Errorf("removed %s %s: open with flags %#o: %w", kindName(mode), reg.GetName(), flags, err)
	}
	if pos := reg.GetPos(); pos != 0 && flags&unix.O_PATH == 0 {
		if _, err := f.Seek(int64(pos), 0); err != nil {
			f.Close()
			return nil, true, fmt.Errorf("removed %s %s: seek to %d: %w", kindName(mode), reg.GetName(), pos, err)
		}
	}
	return f, true, nil
}

// ghostFifoHolder returns the FIFO of reg-file entry id made again, held
// read-write, or nil when id is no ghost.
func ghostFifoHolder(r *fileRestore, id uint32) (*os.File, error) {
	g, err := ghostKindOf(r, id)
	if err != nil || g == nil {
		return nil, err
	}
	if g.ge.GetMode()&unix.S_IFMT != unix.S_IFIFO {
		return nil, corruptf(images.RemapFpath.FileName(), "the ghost of FIFO file id %d is a %s", id, kindName(g.ge.GetMode()))
	}
	return g.held, nil
}

// fsDirPath returns the path a task is moved to for its cwd or root,
// file id: the reg-file entry's, or where its removed directory was made
// again.
func fsDirPath(r *fileRestore, id uint32) (string, error) {
	g, err := ghostKindOf(r, id)
	if err != nil {
		return "", err
	}
	if g == nil {
		return r.cp.files[id].GetReg().GetName(), nil
	}
	if g.ge.GetMode()&unix.S_IFMT != unix.S_IFDIR || g.dir == nil {
		return "", fmt.Errorf("file id %d: a cwd or root that is a removed %s: %w", id, kindName(g.ge.GetMode()), ErrUnsupported)
	}
	return g.name, nil
}
