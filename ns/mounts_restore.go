package ns

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/mnt"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/images"
)

// RestoreMounts rebuilds the mount tree recorded in imgDir inside the
// new mount namespace of the restored root task (host PID pid), then
// makes it the task's root with pivot_root. Nothing propagates back to
// ctcr's namespace: the new namespace is made private first.
func RestoreMounts(sc Syscaller, pid int, imgDir string) error {
	path := filepath.Join(imgDir, images.Mnts.FileName(mntNsID))
	entries, err := images.ReadAll(path, images.Mnts, func() *mnt.MntEntry { return &mnt.MntEntry{} })
	if err != nil {
		return err
	}
	if len(entries) == 0 || entries[0].GetMountpoint() != "/" || !entries[0].GetExtMount() {
		return fmt.Errorf("%s: the first mount is not the root bind: %w", path, images.ErrCorrupt)
	}
	entries = parentsFirst(entries)
	call := func(what string, nr uintptr, args ...any) error {
		if _, err := sc.Call(nr, args...); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	if err := call("make the mount namespace private", unix.SYS_MOUNT, "none", "/", "", uint64(unix.MS_REC|unix.MS_PRIVATE), nil); err != nil {
		return err
	}
	base := entries[0].GetExtKey()
	if err := call("bind the root file system "+base, unix.SYS_MOUNT, base, base, "", uint64(unix.MS_BIND|unix.MS_REC), nil); err != nil {
		return err
	}
	byDev := map[uint32]*mnt.MntEntry{entries[0].GetRootDev(): entries[0]}
	var remount []*mnt.MntEntry
	for _, e := range entries[1:] {
		mp := e.GetMountpoint()
		if !strings.HasPrefix(mp, "/") || strings.Contains(mp, "/../") || strings.HasSuffix(mp, "/..") {
			return fmt.Errorf("%s: mount point %q: %w", path, mp, images.ErrCorrupt)
		}
		target := filepath.Join(base, mp)
		first, bind := byDev[e.GetRootDev()]
		flags := uint64(e.GetFlags())
		switch {
		case e.GetExtMount():
			if err := call("bind "+e.GetExtKey()+" at "+mp, unix.SYS_MOUNT, e.GetExtKey(), target, "", uint64(unix.MS_BIND), nil); err != nil {
				return err
			}
			remount = append(remount, e)
		case bind:
			rel, ok := strings.CutPrefix(e.GetRoot(), first.GetRoot())
			if !ok {
				return fmt.Errorf("%s: %s binds %s, outside what %s shows: %w", path, mp, e.GetRoot(), first.GetMountpoint(), ErrUnsupported)
			}
			src := filepath.Join(base, first.GetMountpoint(), rel)
			if first.GetExtMount() {
				src = filepath.Join(first.GetExtKey(), rel)
			}
			if err := call("bind "+src+" at "+mp, unix.SYS_MOUNT, src, target, "", uint64(unix.MS_BIND), nil); err != nil {
				return err
			}
			remount = append(remount, e)
		default:
			fstype := e.GetFsname()
			if _, ok := newFS[fstype]; !ok {
				return fmt.Errorf("%s: %s at %s: %w", path, fstype, mp, ErrUnsupported)
			}
			data := e.GetOptions()
			// Fill a read-only tmpfs first, make it read-only after.
			if err := call("mount "+fstype+" at "+mp, unix.SYS_MOUNT, e.GetSource(), target, fstype, flags&^unix.MS_RDONLY, data); err != nil {
				return err
			}
			if fstype == "tmpfs" {
				tarPath := filepath.Join(imgDir, fmt.Sprintf("tmpfs-dev-%d.tar.gz.img", e.GetMntId()))
				if err := extractTree(tarPath, taskPath(pid, target)); err != nil {
					return fmt.Errorf("tmpfs at %s: %w", mp, err)
				}
			}
			if flags&unix.MS_RDONLY != 0 {
				if err := call("make "+mp+" read-only", unix.SYS_MOUNT, "none", target, "", flags|unix.MS_REMOUNT, data); err != nil {
					return err
				}
			}
		}
		byDev[e.GetRootDev()] = firstOf(byDev[e.GetRootDev()], e)
	}
	for _, e := range remount {
		flags := uint64(e.GetFlags())
		if flags == 0 {
			continue
		}
		target := filepath.Join(base, e.GetMountpoint())
		if err := call("set the flags of "+e.GetMountpoint(), unix.SYS_MOUNT, "none", target, "", flags|unix.MS_REMOUNT|unix.MS_BIND, nil); err != nil {
			return err
		}
	}
	if root := entries[0]; root.GetFlags()&unix.MS_RDONLY != 0 {
		if err := call("make the root read-only", unix.SYS_MOUNT, "none", base, "", uint64(root.GetFlags())|unix.MS_REMOUNT|unix.MS_BIND, nil); err != nil {
			return err
		}
	}
	// pivot_root(".", "."): the old root ends up on top of the new one
	// and is detached at once (runc does the same).
	steps := []struct {
		what string
		nr   uintptr
		args []any
	}{
		{"enter the new root", unix.SYS_CHDIR, []any{base}},
		{"pivot_root", unix.SYS_PIVOT_ROOT, []any{".", "."}},
		{"detach the old root", unix.SYS_UMOUNT2, []any{".", uint64(unix.MNT_DETACH)}},
		{"chdir /", unix.SYS_CHDIR, []any{"/"}},
	}
	for _, s := range steps {
		if err := call(s.what, s.nr, s.args...); err != nil {
			return err
		}
	}
	return nil
}

// parentsFirst orders the mounts so that each comes after the mount it
// sits on, moving a mount no further than that: of the mounts whose
// parent is placed, the earliest recorded goes next. mountinfo lists a
// namespace's mounts in the order of its mount list, which is not always
// parents first: LXC binds /proc/sys/net onto itself and then /proc/sys,
// and the older bind ends up on top of the newer one, so /proc/sys/net
// is listed before the /proc/sys it sits on. Mounted in that order, the
// later /proc/sys would hide it. The recorded order is otherwise kept
// because a bind must come after the first mount of its file system.
func parentsFirst(entries []*mnt.MntEntry) []*mnt.MntEntry {
	ids := map[uint32]bool{}
	for _, e := range entries {
		ids[e.GetMntId()] = true
	}
	out := make([]*mnt.MntEntry, 0, len(entries))
	placed := map[uint32]bool{}
	ready := func(e *mnt.MntEntry) bool {
		p := e.GetParentMntId()
		return !ids[p] || p == e.GetMntId() || placed[p]
	}
	for len(out) < len(entries) {
		next := -1
		for i, e := range entries {
			if !placed[e.GetMntId()] && ready(e) {
				next = i
				break
			}
		}
		if next < 0 {
			// A cycle of parent ids (only in a corrupt image): keep
			// the rest in recorded order; mounting them will fail.
			for _, e := range entries {
				if !placed[e.GetMntId()] {
					placed[e.GetMntId()] = true
					out = append(out, e)
				}
			}
			break
		}
		placed[entries[next].GetMntId()] = true
		out = append(out, entries[next])
	}
	return out
}

func firstOf(a, b *mnt.MntEntry) *mnt.MntEntry {
	if a != nil {
		return a
	}
	return b
}

// extractTree unpacks a tmpfs archive into dir. Names must stay inside
// dir; sizes come from the archive, which is read as a stream.
func extractTree(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s: %w (%w)", archive, err, images.ErrCorrupt)
	}
	tr := tar.NewReader(gz)
	var dirs []*tar.Header
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w (%w)", archive, err, images.ErrCorrupt)
		}
		name := filepath.Clean(h.Name)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("%s: entry %q leaves the tmpfs: %w", archive, h.Name, images.ErrCorrupt)
		}
		p := filepath.Join(dir, name)
		mode := uint32(h.Mode & 07777)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(p, 0o700); err != nil && !os.IsExist(err) {
				return err
			}
			dirs = append(dirs, h)
			continue
		case tar.TypeReg:
			out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			out.Close()
			if err != nil {
				return fmt.Errorf("%s: %s: %w", archive, h.Name, err)
			}
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				return err
			}
			os.Lchown(p, h.Uid, h.Gid)
			continue
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			kind := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[h.Typeflag]
			if err := unix.Mknod(p, kind|mode, int(unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor)))); err != nil {
				return fmt.Errorf("mknod %s: %w", h.Name, err)
			}
		default:
			return fmt.Errorf("%s: %s: entry type %c: %w", archive, h.Name, h.Typeflag, ErrUnsupported)
		}
		if err := os.Lchown(p, h.Uid, h.Gid); err != nil {
			return err
		}
		if err := unix.Fchmodat(unix.AT_FDCWD, p, mode, 0); err != nil {
			return err
		}
		os.Chtimes(p, h.ModTime, h.ModTime)
	}
	// Directories last: their modes may forbid writing into them.
	for i := len(dirs) - 1; i >= 0; i-- {
		h := dirs[i]
		p := filepath.Join(dir, filepath.Clean(h.Name))
		os.Lchown(p, h.Uid, h.Gid)
		unix.Fchmodat(unix.AT_FDCWD, p, uint32(h.Mode&07777), 0)
		os.Chtimes(p, h.ModTime, h.ModTime)
	}
	return nil
}
