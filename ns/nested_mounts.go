package ns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/mnt"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu"
	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/nsthread"
	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/internal/inroot"
)

// A nested mount namespace (systemd's PrivateTmp=, ProtectSystem=) is
// a copy of the container's, changed by its creator. Its whole table
// goes into mountpoints-ID.img, as CRIU writes it; what the restore
// replays is its difference from the container's (mountpoints-1.img),
// inside a copy of the restored container's namespace made by unshare
// in the first task that had it:
//
//   - mounts of the container the nested namespace no longer has are
//     detached;
//   - mounts of both whose per-mount flags changed are remounted;
//   - mounts only the nested namespace has are made again: a tmpfs of
//     its own with its content (tmpfs-dev-MNTID.tar.gz.img), or a bind
//     of a path of a file system the namespace shows elsewhere (the
//     PrivateTmp directory bound on /tmp, /usr bound read-only on
//     itself), with its flags.
//
// Every path is a mount point the task resolves itself, inside its own
// root, which is the container's: nothing outside the container is
// reached. Each mount's propagation (peer group, master, unbindable) is
// recorded as in the container's table and made again afterwards
// (propagation.go).

// mountKey identifies a mount across the two tables: where, which file
// system, which part of it.
func mountKey(e *mnt.MntEntry) string {
	return fmt.Sprintf("%s\x00%d\x00%s", e.GetMountpoint(), e.GetRootDev(), e.GetRoot())
}

// perMountFlags are the flags a bind remount changes.
const perMountFlags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_NOATIME | unix.MS_NODIRATIME | unix.MS_RELATIME | unix.MS_STRICTATIME

// mountStep is one change of the plan.
type mountStep struct {
	op    string // "umount", "remount", "tmpfs", "bind", "new"
	e     *mnt.MntEntry
	src   string // bind: the path bound
	flags uint64
}

func (s mountStep) String() string {
	switch s.op {
	case "bind":
		return fmt.Sprintf("bind %s on %s", s.src, s.e.GetMountpoint())
	case "tmpfs":
		return "tmpfs at " + s.e.GetMountpoint()
	case "new":
		return "mount " + s.e.GetFsname() + " at " + s.e.GetMountpoint()
	}
	return s.op + " " + s.e.GetMountpoint()
}

// nestedMountPlan returns the steps that turn a copy of the container's
// table into the nested one, or an error naming a mount it cannot make.
func nestedMountPlan(container, nested []*mnt.MntEntry) ([]mountStep, error) {
	inNested := map[string]*mnt.MntEntry{}
	for _, e := range nested {
		inNested[mountKey(e)] = e
	}
	inContainer := map[string]bool{}
	var steps, umounts []mountStep
	// Mounts a bind may take its source from: the container's that
	// stay, then each new one as it is made.
	var sources []*mnt.MntEntry
	for _, c := range container {
		inContainer[mountKey(c)] = true
		n, ok := inNested[mountKey(c)]
		if !ok {
			umounts = append(umounts, mountStep{op: "umount", e: c})
			continue
		}
		sources = append(sources, c)
		if n.GetFlags()&perMountFlags != c.GetFlags()&perMountFlags {
			steps = append(steps, mountStep{op: "remount", e: n, flags: uint64(n.GetFlags() & perMountFlags)})
		}
	}
	// Deepest first, so that nothing is detached from under another.
	sort.SliceStable(umounts, func(i, j int) bool {
		return strings.Count(umounts[i].e.GetMountpoint(), "/") > strings.Count(umounts[j].e.GetMountpoint(), "/")
	})
	steps = append(umounts, steps...)
	for _, n := range nested {
		if inContainer[mountKey(n)] {
			continue
		}
		mp := n.GetMountpoint()
		if !strings.HasPrefix(mp, "/") || strings.Contains(mp, "/../") || strings.HasSuffix(mp, "/..") {
			return nil, fmt.Errorf("mount point %q: %w", mp, images.ErrCorrupt)
		}
		flags := uint64(n.GetFlags() & perMountFlags)
		var src *mnt.MntEntry
		for _, s := range sources {
			if s.GetRootDev() != n.GetRootDev() {
				continue
			}
			if rel, ok := strings.CutPrefix(n.GetRoot(), s.GetRoot()); ok && (s.GetRoot() == "/" || rel == "" || strings.HasPrefix(rel, "/")) {
				src = s
				break
			}
		}
		switch {
		case src != nil:
			rel := strings.TrimPrefix(n.GetRoot(), src.GetRoot())
			if src.GetRoot() == "/" {
				rel = n.GetRoot()
			}
			steps = append(steps, mountStep{op: "bind", e: n, src: filepath.Join(src.GetMountpoint(), rel), flags: flags})
		case n.GetFsname() == "tmpfs" && n.GetRoot() == "/":
			steps = append(steps, mountStep{op: "tmpfs", e: n, flags: flags})
		case isNewFS(n.GetFsname()) && n.GetRoot() == "/":
			// A file system with nothing of its own to save, mounted
			// anew (ProtectProc= gives a service a proc of its own).
			steps = append(steps, mountStep{op: "new", e: n, flags: flags})
		default:
			return nil, fmt.Errorf("mount of %s (%s of device %d) at %s: not a tmpfs nor a bind of a file system the container shows: %w", n.GetFsname(), n.GetRoot(), n.GetRootDev(), mp, ErrUnsupported)
		}
		sources = append(sources, n)
	}
	return steps, nil
}

// isNewFS reports whether a nested namespace's own mount of fstype is
// made again by mounting it anew: a file system of newFS whose content
// is neither saved nor checked.
func isNewFS(fstype string) bool {
	_, ok := newFS[fstype]
	return ok && !withContent[fstype] && !newIfEmpty[fstype]
}

// mountEntries turns a mountinfo table into image entries.
func mountEntries(ms []proc.Mount) []*mnt.MntEntry {
	var out []*mnt.MntEntry
	for _, m := range ms {
		e := &mnt.MntEntry{
			Fstype: proto.Uint32(uint32(mnt.Fstype_AUTO)), MntId: proto.Uint32(uint32(m.ID)), RootDev: proto.Uint32(kdev(m.Major, m.Minor)),
			ParentMntId: proto.Uint32(uint32(m.ParentID)), Flags: proto.Uint32(parseFlags(m.Options)), Root: proto.String(m.Root),
			Mountpoint: proto.String(m.MountPoint), Source: proto.String(m.Source), Options: proto.String(superOptions(m.SuperOptions)),
			Fsname: proto.String(m.FSType),
		}
		if t, ok := newFS[m.FSType]; ok {
			e.Fstype = proto.Uint32(uint32(t))
		}
		// Propagation as DumpMounts records it. The master is kept as
		// mountinfo names it: the nested table and the container's come
		// from the same dump and number groups alike, and the restore
		// finds a nested mount's master among the container's groups.
		p := parsePropagation(m.Optional)
		if p.shared != 0 {
			e.SharedId = proto.Uint32(p.shared)
		}
		if p.master != 0 {
			e.MasterId = proto.Uint32(p.master)
		}
		if p.unbindable {
			e.Flags = proto.Uint32(e.GetFlags() | unix.MS_UNBINDABLE)
		}
		out = append(out, e)
	}
	return out
}

// dumpNestedMounts saves the mount table of pid's mount namespace, which
// is not the one of the tree's root (host PID root), and the content of
// each tmpfs only it has.
func dumpNestedMounts(pid, root int, stage *images.Staging, id int) error {
	cs, err := proc.ReadMountinfo(root)
	if err != nil {
		return fmt.Errorf("mounts of task %d: %w", root, err)
	}
	ns, err := proc.ReadMountinfo(pid)
	if err != nil {
		return fmt.Errorf("mounts of task %d: %w", pid, err)
	}
	nested := mountEntries(ns)
	steps, err := nestedMountPlan(mountEntries(cs), nested)
	if err != nil {
		return err
	}
	mountpoints := map[string]bool{}
	for _, m := range ns {
		mountpoints[m.MountPoint] = true
	}
	for _, s := range steps {
		if s.op != "tmpfs" {
			continue
		}
		mp := s.e.GetMountpoint()
		name := fmt.Sprintf("tmpfs-dev-%d.tar.gz.img", s.e.GetMntId())
		if err := archiveTree(pid, mp, mountpoints, stage.Path(name)); err != nil {
			return fmt.Errorf("tmpfs at %s: %w", mp, err)
		}
	}
	if err := writeMountTable(stage, id, nested); err != nil {
		return err
	}
	// The restore replays the difference from the root's table. A
	// container's is saved already (DumpOwn); a plain tree's root lives
	// in ctcr's own mount namespace, whose table is saved here as the
	// base, under the id the root's core gives it (1).
	if _, err := os.Lstat(stage.Path(images.Mnts.FileName(mntNsID))); errors.Is(err, os.ErrNotExist) {
		return writeMountTable(stage, mntNsID, mountEntries(cs))
	}
	return nil
}

// writeMountTable writes mountpoints-ID.img.
func writeMountTable(stage *images.Staging, id int, entries []*mnt.MntEntry) error {
	msgs := make([]proto.Message, len(entries))
	for i, e := range entries {
		msgs[i] = e
	}
	return images.WriteFile(stage.Path(images.Mnts.FileName(id)), images.Mnts, msgs...)
}

// restoreNestedMounts replays, in the task sc (host PID pid) that has
// just made its mount namespace a copy of the restored container's, the
// changes that made the nested namespace id, then its mounts'
// propagation. logf hears about relations that could not be made again.
func restoreNestedMounts(sc Syscaller, pid int, imgDir string, id int, logf func(string, ...any)) error {
	read := func(id int) ([]*mnt.MntEntry, error) {
		return images.ReadAll(filepath.Join(imgDir, images.Mnts.FileName(id)), images.Mnts, func() *mnt.MntEntry { return &mnt.MntEntry{} })
	}
	container, err := read(mntNsID)
	if err != nil {
		return err
	}
	nested, err := read(id)
	if err != nil {
		return err
	}
	steps, err := nestedMountPlan(container, nested)
	if err != nil {
		return fmt.Errorf("%s: %w", images.Mnts.FileName(id), err)
	}
	prop, err := planNestedPropagation(container, nested)
	if errors.Is(err, images.ErrCorrupt) {
		return fmt.Errorf("%s: %w", images.Mnts.FileName(id), err)
	}
	if err != nil {
		// Relations no mount operation makes (a peer group whose
		// members show disjoint parts of a file system): the mounts
		// stay slaves of the container's, as the replay leaves them.
		logf("mount propagation: %s: %v: its mounts are slaves of the container's instead", images.Mnts.FileName(id), err)
	}
	slavesOnly := err != nil
	if slavesOnly {
		prop = &propPlan{}
	}
	// The sources of the container's peer groups, cloned while the copy
	// is still what unshare made; -1 for none (the task's fd 0 may be
	// free, and be one).
	anchors := make([]int, len(prop.hostMounts))
	for k := range anchors {
		anchors[k] = -1
	}
	defer func() {
		for _, fd := range anchors {
			if fd >= 0 {
				sc.Call(unix.SYS_CLOSE, fd)
			}
		}
	}()
	// A container's mount whose propagation its own restore could not
	// make again (a host source no longer shared) is private: its
	// clone is no source, and the mounts that would join it stay
	// private.
	copied, err := proc.ReadMountinfo(pid)
	if err != nil {
		return fmt.Errorf("mounts of task %d: %w", pid, err)
	}
	for k, mp := range prop.hostMounts {
		var top propagation
		for _, m := range copied {
			if m.MountPoint == mp {
				top = parsePropagation(m.Optional)
			}
		}
		if top.shared == 0 && top.master == 0 {
			logf("mount propagation: the container's mount %s is private now: the mounts of the nested namespace that followed it are private too", mp)
			continue
		}
		fd, err := sc.Call(unix.SYS_OPEN_TREE, unix.AT_FDCWD, mp, uint64(unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC))
		if err != nil {
			// Only a plain tree's base, ctcr's own namespace, changes
			// between dump and restore.
			logf("mount propagation: clone %s of the container's namespace to join its peer group: %v: the mounts that follow it are private now", mp, err)
			continue
		}
		anchors[k] = int(fd)
	}
	for _, w := range prop.warnings {
		logf("mount propagation: %s", w)
	}
	// Nothing done here reaches the container's namespace, whose peer
	// groups the copy shares.
	if _, err := sc.Call(unix.SYS_MOUNT, "none", "/", "", uint64(unix.MS_REC|unix.MS_SLAVE), nil); err != nil {
		return fmt.Errorf("make the mount namespace a slave of the container's: %w", err)
	}
	for _, s := range steps {
		mp := s.e.GetMountpoint()
		var err error
		switch s.op {
		case "umount":
			_, err = sc.Call(unix.SYS_UMOUNT2, mp, uint64(unix.MNT_DETACH))
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
				// Not mounted there (any more), or the path is gone: a
				// plain tree's base is ctcr's namespace, whose mounts
				// may have changed since the dump. What the step wants
				// holds.
				err = nil
			}
		case "remount":
			_, err = sc.Call(unix.SYS_MOUNT, "none", mp, "", s.flags|unix.MS_REMOUNT|unix.MS_BIND, nil)
		case "bind":
			if _, err = sc.Call(unix.SYS_MOUNT, s.src, mp, "", uint64(unix.MS_BIND), nil); err == nil && s.flags != 0 {
				_, err = sc.Call(unix.SYS_MOUNT, "none", mp, "", s.flags|unix.MS_REMOUNT|unix.MS_BIND, nil)
			}
		case "tmpfs":
			err = restoreNestedTmpfs(sc, pid, imgDir, s)
		case "new":
			_, err = sc.Call(unix.SYS_MOUNT, s.e.GetSource(), mp, s.e.GetFsname(), s.flags, s.e.GetOptions())
		}
		if err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	if slavesOnly {
		return nil
	}
	// Every mount exists: the relations are made again from private
	// mounts (MOVE_MOUNT_SET_GROUP takes no other).
	if _, err := sc.Call(unix.SYS_MOUNT, "none", "/", "", uint64(unix.MS_REC|unix.MS_PRIVATE), nil); err != nil {
		return fmt.Errorf("make the mount namespace private: %w", err)
	}
	call := func(what string, nr uintptr, args ...any) (uint64, error) {
		r, err := sc.Call(nr, args...)
		if err != nil {
			return 0, fmt.Errorf("mount propagation: %s: %w", what, err)
		}
		return r, nil
	}
	return runPropSteps(call, prop.steps, anchors)
}

// restoreNestedTmpfs mounts a tmpfs of the nested namespace and puts its
// content back, read-only afterwards if it was.
func restoreNestedTmpfs(sc Syscaller, pid int, imgDir string, s mountStep) error {
	mp := s.e.GetMountpoint()
	if _, err := sc.Call(unix.SYS_MOUNT, "tmpfs", mp, "tmpfs", s.flags&^unix.MS_RDONLY, s.e.GetOptions()); err != nil {
		return err
	}
	tarPath := filepath.Join(imgDir, fmt.Sprintf("tmpfs-dev-%d.tar.gz.img", s.e.GetMntId()))
	root, err := inroot.Open(taskPath(pid, mp), "the tmpfs at "+mp)
	if err != nil {
		return err
	}
	defer root.Close()
	if err := nsthread.Run(func() error { return criu.AsInsideRoot(imgDir) }, func() error { return extractTree(tarPath, root) }); err != nil {
		return err
	}
	if s.flags&unix.MS_RDONLY != 0 {
		if _, err := sc.Call(unix.SYS_MOUNT, "none", mp, "", s.flags|unix.MS_REMOUNT|unix.MS_BIND, nil); err != nil {
			return err
		}
	}
	return nil
}
