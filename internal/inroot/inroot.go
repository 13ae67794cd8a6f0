// Package inroot resolves paths inside a root directory that is not
// ctcr's own: a restored container's file system (/proc/PID/root), a
// freshly mounted tmpfs being filled from an archive. Every path that
// comes from an image or is looked up inside a container goes through
// it, so that a symlink the container planted (an absolute `/dd ->
// /host/dir`, a relative `../../..`) never leads out of that root.
//
// It owns openat2(2) for ctcr. Resolution is done by the kernel with
// RESOLVE_IN_ROOT (absolute symlinks and ".." stop at the root, as they
// would for a chrooted process) and RESOLVE_NO_MAGICLINKS (no
// /proc/PID/fd/N jump to an object outside). Paths the kernel itself
// reported at the checkpoint (the d_path of an fd, a mapping, the cwd,
// a mount point in mountinfo) never contain a symlink, so they are
// resolved with RESOLVE_NO_SYMLINKS too: a symlink along such a path was
// planted after the checkpoint, and restore refuses it rather than
// guess what it meant.
//
// Operations that take a path and have no fd-relative form that refuses
// symlinks (bind of a unix socket, chmod) work on an O_PATH fd of the
// parent directory opened here and a single final component checked not
// to be "." or ".."; see Parent.
package inroot

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrSymlink is returned (wrapped) when a path that must not lead
// through a symlink does.
var ErrSymlink = errors.New("leads through a symlink")

// ErrBadName is returned (wrapped) for a path whose last component
// cannot name a new object (empty, ".", "..").
var ErrBadName = errors.New("does not name an entry of a directory")

// Links says which symlinks a resolution may follow.
type Links int

const (
	// InRoot follows symlinks as the root's own processes would: an
	// absolute one starts again at the root, ".." stops there.
	InRoot Links = iota
	// NoLinks follows none: for paths the kernel reported, which never
	// hold one.
	NoLinks
)

func (l Links) resolve() uint64 {
	r := uint64(unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS)
	if l == NoLinks {
		r |= unix.RESOLVE_NO_SYMLINKS
	}
	return r
}

// validOpenFlags are the flags openat2 takes (VALID_OPEN_FLAGS of
// include/linux/fcntl.h).
const validOpenFlags = unix.O_ACCMODE | unix.O_CREAT | unix.O_EXCL | unix.O_NOCTTY | unix.O_TRUNC |
	unix.O_APPEND | unix.O_NONBLOCK | unix.O_DSYNC | unix.O_ASYNC | unix.O_DIRECT | unix.O_LARGEFILE |
	unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_NOATIME | unix.O_CLOEXEC | unix.O_PATH | unix.O_TMPFILE | unix.O_SYNC

// Root is an open directory that paths resolve in. Its fd is O_PATH: it
// grants no access by itself. Immutable once opened.
type Root struct {
	fd   int
	name string // for messages: "the root of task 123", "/proc/1/root/tmp"
}

// Open opens dir as a root. dir itself is resolved normally: it is
// ctcr's choice (a /proc/PID/root, a mount point it just made), not the
// container's.
func Open(dir, name string) (*Root, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s as a root: %w", dir, &os.PathError{Op: "open", Path: dir, Err: err})
	}
	if name == "" {
		name = dir
	}
	return &Root{fd: fd, name: name}, nil
}

// OfTask opens the root directory of task pid, in its mount namespace.
func OfTask(pid int) (*Root, error) {
	return Open(fmt.Sprintf("/proc/%d/root", pid), fmt.Sprintf("the root of task %d", pid))
}

// Close releases the root's fd.
func (r *Root) Close() error {
	if r == nil || r.fd < 0 {
		return nil
	}
	err := unix.Close(r.fd)
	r.fd = -1
	return err
}

// Name is how messages call the root.
func (r *Root) Name() string { return r.name }

// Fd is the root's O_PATH fd, for *at calls relative to it.
func (r *Root) Fd() int { return r.fd }

// OpenFile opens p (absolute or relative, both taken from the root)
// inside the root with open(2) flags and mode. O_CLOEXEC is always
// added. The error names p and wraps the errno, or ErrSymlink.
func (r *Root) OpenFile(p string, flags int, mode uint32, links Links) (*os.File, error) {
	fd, err := r.openat2(r.fd, p, flags, mode, links)
	if err != nil {
		return nil, r.pathError(p, err)
	}
	return os.NewFile(uintptr(fd), p), nil
}

// openat2 runs openat2 on dirfd, retrying EAGAIN and EINTR: the kernel
// answers EAGAIN to RESOLVE_IN_ROOT when a rename elsewhere raced a ".."
// walk, to be safe rather than wrong.
func (r *Root) openat2(dirfd int, p string, flags int, mode uint32, links Links) (int, error) {
	rel := strings.TrimLeft(p, "/")
	if rel == "" {
		rel = "."
	}
	// open(2) ignores flag bits it does not know (fdinfo shows some,
	// such as FMODE bits); openat2 refuses them with EINVAL.
	flags &= validOpenFlags
	how := &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(mode), Resolve: links.resolve()}
	var err error
	for range 16 {
		var fd int
		fd, err = unix.Openat2(dirfd, rel, how)
		if err == nil {
			return fd, nil
		}
		if err != unix.EAGAIN && err != unix.EINTR {
			break
		}
	}
	if err == unix.ELOOP && links == NoLinks {
		// RESOLVE_NO_SYMLINKS and O_NOFOLLOW both answer ELOOP.
		return -1, ErrSymlink
	}
	if err == unix.ELOOP && flags&unix.O_NOFOLLOW != 0 {
		return -1, ErrSymlink
	}
	return -1, err
}

func (r *Root) pathError(p string, err error) error {
	return fmt.Errorf("%s (in %s): %w", p, r.name, err)
}

// Sub opens directory p inside the root as a root of its own (a mount
// point to fill), named name in messages.
func (r *Root) Sub(p string, links Links, name string) (*Root, error) {
	fd, err := r.openat2(r.fd, p, unix.O_PATH|unix.O_DIRECTORY, 0, links)
	if err != nil {
		return nil, r.pathError(p, err)
	}
	return &Root{fd: fd, name: name}, nil
}

// Stat stats p inside the root, as stat(2) would with the root as "/":
// a final symlink is followed too when links allows it.
func (r *Root) Stat(p string, links Links) (unix.Stat_t, error) {
	var st unix.Stat_t
	f, err := r.OpenFile(p, unix.O_PATH, 0, links)
	if err != nil {
		return st, err
	}
	defer f.Close()
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return st, r.pathError(p, err)
	}
	return st, nil
}

// Dir is a directory inside a root, open O_PATH, and one name in it:
// what a path names once its parent is resolved. Calls on it act on that
// name in that directory and never follow a symlink there.
type Dir struct {
	root *Root
	fd   int
	Base string // the last component of the path: never "", "." or ".."
	Path string // the whole path, for messages
}

// Parent resolves the directory that holds p inside the root (with
// links) and returns it with p's last component. The caller closes it.
func (r *Root) Parent(p string, links Links) (*Dir, error) {
	clean := path.Clean("/" + p)
	dir, base := path.Split(clean)
	if base == "" || base == "." || base == ".." {
		return nil, r.pathError(p, ErrBadName)
	}
	fd, err := r.openat2(r.fd, dir, unix.O_PATH|unix.O_DIRECTORY, 0, links)
	if err != nil {
		return nil, r.pathError(p, err)
	}
	return &Dir{root: r, fd: fd, Base: base, Path: p}, nil
}

// Close releases the directory's fd.
func (d *Dir) Close() error {
	if d == nil || d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

// Fd is the directory's O_PATH fd.
func (d *Dir) Fd() int { return d.fd }

func (d *Dir) err(op string, err error) error {
	return d.root.pathError(d.Path, fmt.Errorf("%s: %w", op, err))
}

// Open opens the entry; a symlink there fails with ErrSymlink.
func (d *Dir) Open(flags int, mode uint32) (*os.File, error) {
	fd, err := unix.Openat(d.fd, d.Base, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err == unix.ELOOP {
		err = ErrSymlink
	}
	if err != nil {
		return nil, d.root.pathError(d.Path, err)
	}
	return os.NewFile(uintptr(fd), d.Path), nil
}

// Lstat stats the entry itself.
func (d *Dir) Lstat() (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(d.fd, d.Base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, d.err("stat", err)
	}
	return st, nil
}

// Mkdir creates the entry as a directory.
func (d *Dir) Mkdir(mode uint32) error {
	if err := unix.Mkdirat(d.fd, d.Base, mode); err != nil {
		return d.err("mkdir", err)
	}
	return nil
}

// Mknod creates the entry as a device node or FIFO.
func (d *Dir) Mknod(mode uint32, dev int) error {
	if err := unix.Mknodat(d.fd, d.Base, mode, dev); err != nil {
		return d.err("mknod", err)
	}
	return nil
}

// Symlink creates the entry as a symlink to target, which is stored,
// never followed here.
func (d *Dir) Symlink(target string) error {
	if err := unix.Symlinkat(target, d.fd, d.Base); err != nil {
		return d.err("symlink", err)
	}
	return nil
}

// Unlink removes the entry (not a directory).
func (d *Dir) Unlink() error {
	if err := unix.Unlinkat(d.fd, d.Base, 0); err != nil {
		return d.err("unlink", err)
	}
	return nil
}

// Lchown changes the owner of the entry itself, a symlink included.
func (d *Dir) Lchown(uid, gid int) error {
	if err := unix.Fchownat(d.fd, d.Base, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return d.err(fmt.Sprintf("chown %d:%d", uid, gid), err)
	}
	return nil
}

// Lchmod changes the mode of the entry itself with fchmodat2's
// AT_SYMLINK_NOFOLLOW (Linux 6.6): on a symlink it fails (EOPNOTSUPP)
// instead of changing what the link points at.
func (d *Dir) Lchmod(mode uint32) error {
	if err := unix.Fchmodat(d.fd, d.Base, mode, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return d.err(fmt.Sprintf("chmod %#o", mode), err)
	}
	return nil
}

// Lutimes sets the entry's access and modification times, a symlink's
// own included.
func (d *Dir) Lutimes(ts []unix.Timespec) error {
	if err := unix.UtimesNanoAt(d.fd, d.Base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return d.err("set times", err)
	}
	return nil
}

// MkdirAll makes directory p and any missing parent inside the root,
// each with mode, and returns p open O_PATH. Existing components are
// resolved with links; each one created is made by mkdirat in the
// directory resolved just before, so a symlink cannot redirect it.
func (r *Root) MkdirAll(p string, mode uint32, links Links) (*os.File, error) {
	clean := path.Clean("/" + p)
	fd, err := r.openat2(r.fd, clean, unix.O_PATH|unix.O_DIRECTORY, 0, links)
	if err == nil {
		return os.NewFile(uintptr(fd), clean), nil
	}
	if err != unix.ENOENT || clean == "/" {
		return nil, r.pathError(p, err)
	}
	parent, err := r.MkdirAll(path.Dir(clean), mode, links)
	if err != nil {
		return nil, err
	}
	defer parent.Close()
	base := path.Base(clean)
	if err := unix.Mkdirat(int(parent.Fd()), base, mode); err != nil && err != unix.EEXIST {
		return nil, r.pathError(p, fmt.Errorf("mkdir: %w", err))
	}
	fd, err = unix.Openat(int(parent.Fd()), base, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ELOOP {
			err = ErrSymlink
		}
		return nil, r.pathError(p, err)
	}
	return os.NewFile(uintptr(fd), clean), nil
}
