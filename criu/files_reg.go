package criu

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/proc"
)

// outsideMountNamespace reports whether the fd's mount is not one of
// its task's mount namespace (fdinfo mnt_id against mountinfo), nor,
// where the tree has nested ones, of any mount namespace of the tree (a
// task of a nested one holds a file it opened before it made its own).
func (d *fdDump) outsideMountNamespace() bool {
	if in, known := d.files.views().inTree(d.info.MntID); known {
		return !in
	}
	ids := d.files.kindState("mount ids of "+strconv.Itoa(d.pid), func() any {
		m := map[int]bool{}
		ms, err := proc.ReadMountinfo(d.pid)
		if err != nil {
			return m
		}
		for _, x := range ms {
			m[x.ID] = true
		}
		return m
	}).(map[int]bool)
	return len(ids) > 0 && !ids[d.info.MntID]
}

// regularFiles are files with a path: regular files, directories, and
// character devices that mean the same on every machine (/dev/null...).
// With --shell-job, a terminal other than a pty (tty.go) is one too:
// restore gives the task ctcr's.
var regularFiles = fileKind{
	name:   "regular file",
	fdType: fdinfo.FdTypes_REG,
	dump:   dumpRegularFile,
	open:   openRegularFile,
	fixup:  restoreFileLocks,
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

func dumpRegularFile(d *fdDump) (*fdinfo.FileEntry, error) {
	st := &d.st
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFDIR:
		if !strings.HasPrefix(d.link, "/") {
			return nil, nil // an anonymous inode or the like: another kind's
		}
		if strings.HasSuffix(d.link, " (deleted)") {
			return dumpGhostFile(d) // files_ghost.go
		}
		e := d.files.regEntry(d.link, d.flags, uint64(d.info.Pos), st)
		mntID, err := d.files.viewMount(d.procFile().path, d.link, st, false)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.where, err)
		}
		if mntID != noMount {
			// A file of a nested mount namespace's own view: opened
			// there at restore, whichever task holds it.
			e.Reg.MntId = proto.Int32(mntID)
		} else if d.outsideMountNamespace() {
			// A file the task's mount namespace does not have (a
			// container's stdout that its runtime opened on the host):
			// its path is the host's, and restore opens it there.
			e.Reg.Ext = proto.Bool(true)
		}
		return e, nil
	case unix.S_IFCHR:
		if strings.HasSuffix(d.link, " (deleted)") && strings.HasPrefix(d.link, "/") && !isTTY(st) {
			return dumpGhostFile(d) // a removed device node: files_ghostkinds.go
		}
		if name, ok := harmlessCharDevs[[2]uint32{unix.Major(st.Rdev), unix.Minor(st.Rdev)}]; ok {
			return d.files.regEntry(name, d.flags, uint64(d.info.Pos), st), nil
		}
		if ttyKindOwns(d) {
			return nil, nil // tty.go's
		}
		if isTTY(st) {
			if !d.shellJob {
				return nil, d.unsupported(fmt.Sprintf("terminal %s (use --shell-job to restore it on ctcr's own terminal)", d.link))
			}
			return d.files.regEntry(d.link, d.flags, 0, st), nil
		}
		return nil, d.unsupported(fmt.Sprintf("character device %s (%d:%d)", d.link, unix.Major(st.Rdev), unix.Minor(st.Rdev)))
	case unix.S_IFBLK:
		if strings.HasSuffix(d.link, " (deleted)") && strings.HasPrefix(d.link, "/") {
			return dumpGhostFile(d) // refused with its numbers: files_ghostkinds.go
		}
	}
	return nil, nil
}

func openRegularFile(r *fileRestore, e *fdinfo.FileEntry) (*os.File, error) {
	reg := e.GetReg()
	if reg == nil {
		return nil, corruptf("files.img", "regular file id %d without its entry", e.GetId())
	}
	if f, ok, err := openGhostFile(r, e); ok {
		return f, err
	}
	name := reg.GetName()
	mode := reg.GetMode()
	if r.opts.ShellJob && mode&unix.S_IFMT == unix.S_IFCHR && strings.HasPrefix(name, "/dev/") {
		// --shell-job: the task's terminal becomes ctcr's own.
		fd, err := unix.FcntlInt(0, unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("--shell-job: ctcr's stdin: %w", err)
		}
		return os.NewFile(uintptr(fd), "/dev/stdin"), nil
	}
	flags := int(reg.GetFlags()) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC | unix.O_NOCTTY)
	// Resolved inside the restored tree's root and through no symlink:
	// one planted along the path since the checkpoint must not hand the
	// task a file of the host.
	open := openInTree
	if reg.GetExt() {
		open = func(_ int, p string, flags int) (*os.File, error) { return openOnHost(p, flags) }
	}
	// In the view of the mount namespace the file was of, if a nested
	// one's (files_mntview.go), else the root's.
	view, err := r.viewPid(reg, r.rootPid)
	if err != nil {
		return nil, err
	}
	f, err := open(view, name, flags)
	if err != nil {
		return nil, fmt.Errorf("open %w", err)
	}
	if mode&unix.S_IFMT == unix.S_IFREG && reg.GetPos() != 0 {
		if _, err := f.Seek(int64(reg.GetPos()), 0); err != nil {
			f.Close()
			return nil, fmt.Errorf("seek %s to %d: %w", name, reg.GetPos(), err)
		}
	}
	if mode != 0 && reg.Mode != nil {
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err == nil && st.Mode&unix.S_IFMT != mode&unix.S_IFMT {
			f.Close()
			return nil, fmt.Errorf("%s is no longer the same kind of file", name)
		}
	}
	return f, nil
}
