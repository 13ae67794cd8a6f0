package criu

import (
	"fmt"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"golang.org/x/sys/unix"
)

// symlinkFds are fds on a symlink itself, which only
// open(O_PATH|O_NOFOLLOW) gives. The fd names the link, not its
// target, so its reg-file entry is the link's path with its flags
// (O_PATH|O_NOFOLLOW stay in f_flags, fs/open.c do_dentry_open) and
// S_IFLNK in its mode, as CRIU writes it. Restore opens that path with
// those flags, which is what regularFiles does for any reg-file entry:
// this kind is listed after regularFiles, so fileKindOf finds that one
// for REG entries and this kind only dumps.
//
// A symlink that was removed after it was opened is a ghost: its target
// is kept and the link made again (files_ghostkinds.go).
var symlinkFds = fileKind{
	name:   "symlink",
	fdType: fdinfo.FdTypes_REG,
	dump:   dumpSymlinkFd,
	open:   openRegularFile,
}

func dumpSymlinkFd(d *fdDump) (*fdinfo.FileEntry, error) {
	if d.st.Mode&unix.S_IFMT != unix.S_IFLNK {
		return nil, nil
	}
	if d.flags&unix.O_PATH == 0 {
		// Only O_PATH opens a symlink; anything else is a kernel
		// this code does not know.
		return nil, d.unsupported(fmt.Sprintf("symlink %s open without O_PATH (flags %#o)", d.link, d.flags))
	}
	if !strings.HasPrefix(d.link, "/") {
		return nil, d.unsupported(fmt.Sprintf("symlink %s has no path", d.link))
	}
	if strings.HasSuffix(d.link, " (deleted)") {
		// Kept with its target and made again (files_ghostkinds.go).
		return dumpGhostKindFd(d)
	}
	return d.files.regEntry(d.link, d.flags, 0, &d.st), nil
}
