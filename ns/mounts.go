package ns

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/mnt"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/proc"
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
	for _, m := range ms {
		mountpoints[m.MountPoint] = true
	}
	for _, m := range ms {
		dev := kdev(m.Major, m.Minor)
		e := &mnt.MntEntry{
			Fstype: proto.Uint32(uint32(mnt.Fstype_AUTO)), MntId: proto.Uint32(uint32(m.ID)), RootDev: proto.Uint32(dev),
			ParentMntId: proto.Uint32(uint32(m.ParentID)), Flags: proto.Uint32(parseFlags(m.Options)), Root: proto.String(m.Root),
			Mountpoint: proto.String(m.MountPoint), Source: proto.String(m.Source), Options: proto.String(superOptions(m.SuperOptions)),
			Fsname: proto.String(m.FSType),
		}
		if t, ok := newFS[m.FSType]; ok {
			e.Fstype = proto.Uint32(uint32(t))
		}
		switch {
		case seen[dev]:
			// A bind of a file system mounted earlier in the tree.
		case hostPath(host, m) != "":
			e.ExtMount = proto.Bool(true)
			e.ExtKey = proto.String(hostPath(host, m))
		case m.MountPoint == "/":
			return fmt.Errorf("task %d: its root file system (%s on device %d:%d) is not mounted in ctcr's namespace: %w", pid, m.FSType, m.Major, m.Minor, ErrUnsupported)
		default:
			if _, ok := newFS[m.FSType]; !ok {
				return fmt.Errorf("task %d: mount of %s at %s: file system not recreatable: %w", pid, m.FSType, m.MountPoint, ErrUnsupported)
			}
			if m.Root != "/" {
				return fmt.Errorf("task %d: mount %s shows only %s of its %s: %w", pid, m.MountPoint, m.Root, m.FSType, ErrUnsupported)
			}
			if m.FSType == "tmpfs" {
				name := fmt.Sprintf("tmpfs-dev-%d.tar.gz.img", m.ID)
				if err := archiveTree(taskPath(pid, m.MountPoint), m.MountPoint, mountpoints, stage.Path(name)); err != nil {
					return fmt.Errorf("task %d: tmpfs at %s: %w", pid, m.MountPoint, err)
				}
			}
		}
		seen[dev] = true
		entries = append(entries, e)
	}
	return images.WriteFile(stage.Path(images.Mnts.FileName(mntNsID)), images.Mnts, entries...)
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

// hostPath returns where m's content is in ctcr's own mount namespace:
// a host mount of the same file system whose root contains m's root.
func hostPath(host []proc.Mount, m proc.Mount) string {
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
		return filepath.Join(h.MountPoint, rel)
	}
	return ""
}

func taskPath(pid int, p string) string { return fmt.Sprintf("/proc/%d/root%s", pid, p) }

// archiveTree writes dir (a tmpfs seen through /proc/PID/root) as a
// gzipped tar, without descending into other mounts below it.
func archiveTree(dir, mountpoint string, mountpoints map[string]bool, out string) error {
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if rel == "." {
			return nil
		}
		if d.IsDir() && mountpoints[filepath.Join(mountpoint, rel)] {
			// Another mount sits here: keep the directory, not what is
			// mounted on it.
			fi, err := d.Info()
			if err != nil {
				return err
			}
			h, err := tar.FileInfoHeader(fi, "")
			if err != nil {
				return err
			}
			h.Name = rel + "/"
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			return fs.SkipDir
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSocket != 0 {
			// A bound unix socket's file: restoring the socket binds
			// it again (tar has no socket files, nor does CRIU's).
			return nil
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		h.Name = rel
		if d.IsDir() {
			h.Name += "/"
		}
		if st, ok := fi.Sys().(*unix.Stat_t); ok {
			h.Uid, h.Gid = int(st.Uid), int(st.Gid)
			if fi.Mode()&(fs.ModeDevice|fs.ModeCharDevice) != 0 {
				h.Devmajor, h.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			src, err := os.Open(path)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, src)
			src.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}
