package ns

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/mnt"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/internal/inroot"
)

// ErrUnsupported marks a mount ctcr cannot recreate.
var ErrUnsupported = errors.New("not supported")

const mntNsID = 1

// newFS are file systems recreated by mounting them anew inside the
// restored namespaces.
var newFS = map[string]mnt.Fstype{
	"proc": mnt.Fstype_PROC, "sysfs": mnt.Fstype_SYSFS, "tmpfs": mnt.Fstype_TMPFS,
	"devpts": mnt.Fstype_DEVPTS, "mqueue": mnt.Fstype_MQUEUE, "cgroup": mnt.Fstype_CGROUP,
	"cgroup2": mnt.Fstype_CGROUP2,
	// Recreated only while empty (see emptyFS): a file on it holds
	// huge pages ctcr does not save. systemd mounts one on
	// /dev/hugepages in a system container.
	"hugetlbfs": mnt.Fstype_AUTO, "ramfs": mnt.Fstype_AUTO,
	// One instance per kernel (get_tree_single): a new mount shows
	// what the old one showed. systemd mounts them in a system
	// container (sys-kernel-debug.mount, sys-kernel-tracing.mount,
	// sys-fs-fuse-connections.mount, sys-kernel-config.mount).
	"debugfs": mnt.Fstype_DEBUGFS, "tracefs": mnt.Fstype_TRACEFS, "fusectl": mnt.Fstype_FUSECTL,
	"configfs": mnt.Fstype_AUTO, "securityfs": mnt.Fstype_SECURITYFS, "pstore": mnt.Fstype_PSTORE,
}

// withContent are the file systems of newFS whose files are saved, in
// tmpfs-dev-MNTID.tar.gz.img, and put back into the new mount. systemd
// gives each service with credentials a ramfs on
// /run/credentials/UNIT.
var withContent = map[string]bool{"tmpfs": true, "ramfs": true}

// newIfEmpty are the file systems of newFS whose content is not saved:
// a mount of one that holds files is refused.
var newIfEmpty = map[string]bool{"hugetlbfs": true}

// emptyFS reports whether the mount at mp of task pid holds nothing but
// the mount points of other mounts.
func emptyFS(pid int, mp string, mountpoints map[string]bool) (bool, error) {
	root, err := inroot.OfTask(pid)
	if err != nil {
		return false, err
	}
	defer root.Close()
	d, err := root.OpenFile(mp, unix.O_RDONLY|unix.O_DIRECTORY, 0, inroot.NoLinks)
	if err != nil {
		return false, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return false, err
	}
	for _, n := range names {
		if !mountpoints[filepath.Join(mp, n)] {
			return false, nil
		}
	}
	return true, nil
}

// mountFlags maps per-mount options to MS_* flags.
var mountFlags = map[string]uint32{
	"ro": unix.MS_RDONLY, "nosuid": unix.MS_NOSUID, "nodev": unix.MS_NODEV, "noexec": unix.MS_NOEXEC,
	"noatime": unix.MS_NOATIME, "nodiratime": unix.MS_NODIRATIME, "relatime": unix.MS_RELATIME,
	"strictatime": unix.MS_STRICTATIME,
}

func parseFlags(opts string) uint32 {
	var f uint32
	for _, o := range strings.Split(opts, ",") {
		f |= mountFlags[o]
	}
	return f
}

func kdev(major, minor uint32) uint32 { return major<<20 | minor }

// DumpMounts records the mount tree of pid's mount namespace into the
// staging directory, with the content of every tmpfs. A mount of a file
// system that ctcr's own namespace also has is recorded as an external
// bind of the host path (ext_key); the first mount of any other file
// system must be one ctcr can mount anew; later mounts of it are binds.
// Each mount's propagation (its peer group, master, unbindable) goes
// into shared_id, master_id and MS_UNBINDABLE in flags, as CRIU keeps it.
func DumpMounts(pid int, stage *images.Staging) error {
	ms, err := proc.ReadMountinfo(pid)
	if err != nil {
		return fmt.Errorf("mounts of task %d: %w", pid, err)
	}
	host, err := proc.ReadMountinfo(os.Getpid())
	if err != nil {
		return err
	}
	if len(ms) == 0 {
		return fmt.Errorf("task %d has no mounts", pid)
	}
	seen := map[uint32]bool{}
	var entries []proto.Message
	mountpoints := map[string]bool{}
	// Peer groups with a member in the container, and groups with a
	// member in ctcr's namespace (the host's).
	inside, onHost := map[uint32]bool{}, map[uint32]bool{}
	for _, m := range ms {
		mountpoints[m.MountPoint] = true
		if p := parsePropagation(m.Optional); p.shared != 0 {
			inside[p.shared] = true
		}
	}
	for _, h := range host {
		if p := parsePropagation(h.Optional); p.shared != 0 {
			onHost[p.shared] = true
		}
	}
	for _, m := range ms {
		dev := kdev(m.Major, m.Minor)
		p := parsePropagation(m.Optional)
		flags := parseFlags(m.Options)
		if p.unbindable {
			flags |= unix.MS_UNBINDABLE // where CRIU keeps it too
		}
		e := &mnt.MntEntry{
			Fstype: proto.Uint32(uint32(mnt.Fstype_AUTO)), MntId: proto.Uint32(uint32(m.ID)), RootDev: proto.Uint32(dev),
			ParentMntId: proto.Uint32(uint32(m.ParentID)), Flags: proto.Uint32(flags), Root: proto.String(m.Root),
			Mountpoint: proto.String(m.MountPoint), Source: proto.String(m.Source), Options: proto.String(superOptions(m.SuperOptions)),
			Fsname: proto.String(m.FSType),
		}
		if p.shared != 0 {
			e.SharedId = proto.Uint32(p.shared)
		}
		if master := p.dominantMaster(inside, onHost); master != 0 {
			e.MasterId = proto.Uint32(master)
		}
		if t, ok := newFS[m.FSType]; ok {
			e.Fstype = proto.Uint32(uint32(t))
		}
		hp, hm := hostPath(host, m)
		switch {
		case hp != "":
			// Bound from where the host shows the same content, even if
			// an earlier mount of the tree has the file system too: that
			// one may show another part of it (two binds of two host
			// directories), and the host mount is what the restored
			// mount's propagation follows.
			e.ExtMount = proto.Bool(true)
			e.ExtKey = proto.String(hp)
			if p.shared != 0 {
				// Whether its peer group is the host mount's own, in
				// the numbers of this moment: CRIU's internal_sharing
				// (true: the group is the container's alone). Restore
				// goes by this, not by comparing these numbers with the
				// host's then: peer group numbers are reused, and a
				// container group that happened to get the number the
				// host mount has at restore would be joined to it, so
				// that mounts made inside would reach the host.
				e.InternalSharing = proto.Bool(parsePropagation(hm.Optional).shared != p.shared)
			}
		case seen[dev]:
			// A bind of a file system mounted earlier in the tree.
		case m.MountPoint == "/":
			return fmt.Errorf("task %d: its root file system (%s on device %d:%d) is not mounted in ctcr's namespace: %w", pid, m.FSType, m.Major, m.Minor, ErrUnsupported)
		default:
			if _, ok := newFS[m.FSType]; !ok {
				return fmt.Errorf("task %d: mount of %s at %s: file system not recreatable: %w", pid, m.FSType, m.MountPoint, ErrUnsupported)
			}
			if m.Root != "/" {
				return fmt.Errorf("task %d: mount %s shows only %s of its %s: %w", pid, m.MountPoint, m.Root, m.FSType, ErrUnsupported)
			}
			if newIfEmpty[m.FSType] {
				empty, err := emptyFS(pid, m.MountPoint, mountpoints)
				if err != nil {
					return fmt.Errorf("task %d: %s at %s: %w", pid, m.FSType, m.MountPoint, err)
				}
				if !empty {
					return fmt.Errorf("task %d: %s at %s holds files, whose content is not kept: %w", pid, m.FSType, m.MountPoint, ErrUnsupported)
				}
			}
			if withContent[m.FSType] {
				name := fmt.Sprintf("tmpfs-dev-%d.tar.gz.img", m.ID)
				if err := archiveTree(pid, m.MountPoint, mountpoints, stage.Path(name)); err != nil {
					return fmt.Errorf("task %d: tmpfs at %s: %w", pid, m.MountPoint, err)
				}
			}
		}
		seen[dev] = true
		entries = append(entries, e)
	}
	return images.WriteFile(stage.Path(images.Mnts.FileName(mntNsID)), images.Mnts, entries...)
}

// propagation is what the optional fields of a mountinfo line say
// about a mount's propagation (Documentation/filesystems/sharedsubtree.rst,
// proc_pid_mountinfo(5)). Zero means none.
type propagation struct {
	shared     uint32 // shared:N, the peer group the mount belongs to
	master     uint32 // master:N, the peer group it is a slave of
	from       uint32 // propagate_from:N, the closest group it receives from that the reader can see
	unbindable bool
}

func parsePropagation(optional []string) propagation {
	var p propagation
	num := func(s string) uint32 {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return 0
		}
		return uint32(n)
	}
	for _, o := range optional {
		switch k, v, _ := strings.Cut(o, ":"); k {
		case "shared":
			p.shared = num(v)
		case "master":
			p.master = num(v)
		case "propagate_from":
			p.from = num(v)
		case "unbindable":
			p.unbindable = true
		}
	}
	return p
}

// dominantMaster is the group to record as the mount's master. The
// kernel shows propagate_from when the master group has no member in
// the container's view; the mount then receives from that dominating
// group. Keep the master itself when it is inside the container or
// visible on the host (restore makes the mount its slave again); else
// the dominating group is the one a restore can recreate.
func (p propagation) dominantMaster(inside, onHost map[uint32]bool) uint32 {
	if p.master == 0 || inside[p.master] || onHost[p.master] || p.from == 0 {
		return p.master
	}
	return p.from
}

// superOptions drops rw/ro, which are per-mount flags.
func superOptions(s string) string {
	var out []string
	for _, o := range strings.Split(s, ",") {
		if o != "rw" && o != "ro" && o != "" {
			out = append(out, o)
		}
	}
	return strings.Join(out, ",")
}

// hostPath returns where m's content is in ctcr's own mount namespace,
// and the host mount that shows it there: a host mount of the same file
// system whose root contains m's root. The path is "" if there is none.
func hostPath(host []proc.Mount, m proc.Mount) (string, proc.Mount) {
	for _, h := range host {
		if h.Major != m.Major || h.Minor != m.Minor {
			continue
		}
		rel, ok := strings.CutPrefix(m.Root, h.Root)
		if !ok || (rel != "" && !strings.HasPrefix(rel, "/") && h.Root != "/") {
			continue
		}
		if h.Root == "/" {
			rel = m.Root
		}
		return filepath.Join(h.MountPoint, rel), h
	}
	return "", proc.Mount{}
}

func taskPath(pid int, p string) string { return fmt.Sprintf("/proc/%d/root%s", pid, p) }

// gzipWriters keeps the gzip writers of archiveTree for the next one: a
// new writer allocates its compressor (about 1 ms here), a container's
// few small tmpfs mounts are archived while it is stopped, and a Reset
// one costs 10-50 µs.
var gzipWriters = sync.Pool{New: func() any { return gzip.NewWriter(nil) }}

// archiveTree writes the tmpfs mounted at mp in task pid's mount
// namespace as a gzipped tar, without descending into other mounts below
// it. It walks by directory fds: mp is opened inside the task's root
// with no symlink followed (a mount point the kernel reported holds
// none), and every entry below is opened from its directory's fd with
// O_NOFOLLOW. No path string through the container's tree is ever
// resolved again, so a directory swapped for a symlink while the walk
// runs cannot lead it out of the tmpfs: it is archived as the symlink.
func archiveTree(pid int, mp string, mountpoints map[string]bool, out string) error {
	root, err := inroot.OfTask(pid)
	if err != nil {
		return err
	}
	defer root.Close()
	top, err := root.OpenFile(mp, unix.O_RDONLY|unix.O_DIRECTORY, 0, inroot.NoLinks)
	if err != nil {
		return err
	}
	defer top.Close()
	f, err := images.CreateFile(out, os.O_WRONLY)
	if err != nil {
		return err
	}
	defer f.Close()
	gz := gzipWriters.Get().(*gzip.Writer)
	defer gzipWriters.Put(gz)
	gz.Reset(f)
	tw := tar.NewWriter(gz)
	a := &archiver{tw: tw, mp: mp, mountpoints: mountpoints}
	if err := a.dir(top, ""); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

// archiver is one archiveTree walk.
type archiver struct {
	tw          *tar.Writer
	mp          string          // the tmpfs's mount point, for mountpoints
	mountpoints map[string]bool // other mounts: kept as directories, not entered
}

// dir archives the entries of d, the directory at rel ("" for the top),
// in lexical order (as filepath.WalkDir gives them).
func (a *archiver) dir(d *os.File, rel string) error {
	names, err := d.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("%s: %w", a.show(rel), err)
	}
	slices.Sort(names)
	for _, name := range names {
		if err := a.entry(d, path.Join(rel, name), name); err != nil {
			return err
		}
	}
	return nil
}

func (a *archiver) show(rel string) string { return path.Join(a.mp, rel) }

// entry archives name in directory d (rel from the top). Its file is
// opened O_PATH|O_NOFOLLOW from d and stat'ed through that fd; content
// is read through a second open from d that must find the same inode.
func (a *archiver) entry(d *os.File, rel, name string) error {
	pfd, err := unix.Openat(int(d.Fd()), name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT {
		return nil // gone since the listing, as WalkDir skips it
	}
	if err != nil {
		return fmt.Errorf("%s: %w", a.show(rel), err)
	}
	pf := os.NewFile(uintptr(pfd), name)
	fi, err := pf.Stat()
	pf.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", a.show(rel), err)
	}
	mode := fi.Mode()
	if mode&fs.ModeSocket != 0 {
		// A bound unix socket's file: restoring the socket binds
		// it again (tar has no socket files, nor does CRIU's).
		return nil
	}
	link := ""
	if mode&fs.ModeSymlink != 0 {
		// readlinkat never follows the link it reads.
		if link, err = readlinkAt(int(d.Fd()), name); err != nil {
			return fmt.Errorf("%s: %w", a.show(rel), err)
		}
	}
	h, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return fmt.Errorf("%s: %w", a.show(rel), err)
	}
	h.Name = rel
	if mode.IsDir() {
		h.Name += "/"
	}
	if err := a.tw.WriteHeader(h); err != nil {
		return err
	}
	switch {
	case mode.IsDir() && a.mountpoints[path.Join(a.mp, rel)]:
		// Another mount sits here: keep the directory, not what is
		// mounted on it.
		return nil
	case mode.IsDir():
		sub, err := a.reopen(d, rel, name, fi, unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		defer sub.Close()
		return a.dir(sub, rel)
	case mode.IsRegular():
		src, err := a.reopen(d, rel, name, fi, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY)
		if err != nil {
			return err
		}
		defer src.Close()
		if _, err := io.Copy(a.tw, src); err != nil {
			return fmt.Errorf("%s: %w", a.show(rel), err)
		}
	}
	return nil
}

// reopen opens name in d with flags and O_NOFOLLOW, and checks that it
// is the file fi described: an entry replaced since is refused, not
// archived in its place.
func (a *archiver) reopen(d *os.File, rel, name string, fi fs.FileInfo, flags int) (*os.File, error) {
	fd, err := unix.Openat(int(d.Fd()), name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a.show(rel), err)
	}
	f := os.NewFile(uintptr(fd), name)
	now, err := f.Stat()
	if err == nil && !os.SameFile(fi, now) {
		err = errors.New("replaced while the tmpfs was archived")
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", a.show(rel), err)
	}
	return f, nil
}

// readlinkAt reads the symlink name in directory dirfd.
func readlinkAt(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		b := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, b)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(b[:n]), nil
		}
	}
}
