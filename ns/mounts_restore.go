package ns

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/mnt"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu"
	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/nsthread"
	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/internal/inroot"
)

// propagationFlags are the mount(2) flags that change a mount's
// propagation. mount(2) treats a call carrying any of them as a change
// of propagation only, so they never go with a new mount or a remount.
const propagationFlags = unix.MS_SHARED | unix.MS_SLAVE | unix.MS_PRIVATE | unix.MS_UNBINDABLE

// RestoreMounts rebuilds the mount tree recorded in imgDir inside the
// new mount namespace of the restored root task (host PID pid), then
// makes it the task's root with pivot_root, then restores propagation.
//
// Nothing propagates back to ctcr's namespace while the tree is built:
// the new namespace is made private first, every mount is created
// private, and only once all of them exist (and the old root is gone)
// do mounts join their peer groups again (see planPropagation). logf
// (may be nil) hears about propagation that could not be restored.
//
// extSources (CRIU's ext-mount-map at restore, from runc and podman)
// maps a mount point of the checkpoint to the host path to bind there
// instead of the one recorded; "/" maps the root file system.
func RestoreMounts(sc Syscaller, pid int, imgDir string, logf func(format string, args ...any), extSources ...map[string]string) error {
	path := filepath.Join(imgDir, images.Mnts.FileName(mntNsID))
	entries, err := images.ReadAll(path, images.Mnts, func() *mnt.MntEntry { return &mnt.MntEntry{} })
	if err != nil {
		return err
	}
	if len(entries) == 0 || entries[0].GetMountpoint() != "/" || !entries[0].GetExtMount() {
		return fmt.Errorf("%s: the first mount is not the root bind: %w", path, images.ErrCorrupt)
	}
	entries = parentsFirst(entries)
	for _, m := range extSources {
		for _, e := range entries {
			if src, ok := m[e.GetMountpoint()]; ok && e.GetExtMount() {
				e.ExtKey = &src
			}
		}
	}
	uidIn, gidIn, err := criu.InsideIDs(imgDir)
	if err != nil {
		return err
	}
	call := func(what string, nr uintptr, args ...any) (uint64, error) {
		r, err := sc.Call(nr, args...)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
		return r, nil
	}
	if _, err := call("make the mount namespace private", unix.SYS_MOUNT, "none", "/", "", uint64(unix.MS_REC|unix.MS_PRIVATE), nil); err != nil {
		return err
	}
	base := entries[0].GetExtKey()
	// Host paths below the rootfs directory (a host mount there, bound
	// into the container) are hidden once the rootfs is bound on itself:
	// hold them open first and bind them from /proc/self/fd/N.
	srcFds := map[int]uint64{}
	defer func() {
		for _, fd := range srcFds {
			sc.Call(unix.SYS_CLOSE, fd)
		}
	}()
	for i, e := range entries {
		if k := e.GetExtKey(); i > 0 && e.GetExtMount() && strings.HasPrefix(k, strings.TrimSuffix(base, "/")+"/") {
			fd, err := call("open "+k, unix.SYS_OPENAT, unix.AT_FDCWD, k, uint64(unix.O_PATH|unix.O_CLOEXEC), 0)
			if err != nil {
				return err
			}
			srcFds[i] = fd
		}
	}
	extSource := func(i int, rel string) string {
		if fd, ok := srcFds[i]; ok {
			return filepath.Join(fmt.Sprintf("/proc/self/fd/%d", fd), rel)
		}
		return filepath.Join(entries[i].GetExtKey(), rel)
	}
	// Not recursive: every mount the container had below its root is in
	// the image; the host's mounts below the rootfs directory are not
	// the container's.
	if _, err := call("bind the root file system "+base, unix.SYS_MOUNT, base, base, "", uint64(unix.MS_BIND), nil); err != nil {
		return err
	}
	// Mount points and the sources of binds inside the container are
	// paths mountinfo showed, which hold no symlink: each is checked
	// inside the container's root file system, as the root task sees it,
	// before the root task mounts on it by name, so that a symlink the
	// container planted since (/proc -> /etc) cannot put a mount, or bind
	// a source, outside it. Nothing of the container runs meanwhile.
	rootfs, err := inroot.Open(taskPath(pid, base), "the container's root file system "+base)
	if err != nil {
		return err
	}
	defer rootfs.Close()
	inRootfs := func(what, p string) error {
		if _, err := rootfs.Stat(p, inroot.NoLinks); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	// hostSrc[i] is where entry i's content lies in ctcr's namespace,
	// for mounts bound from the host: the source of their propagation.
	hostSrc := make([]string, len(entries))
	hostSrc[0] = base
	byDev := map[uint32]int{entries[0].GetRootDev(): 0}
	var remount []*mnt.MntEntry
	for i, e := range entries[1:] {
		i++
		mp := e.GetMountpoint()
		if !strings.HasPrefix(mp, "/") || strings.Contains(mp, "/../") || strings.HasSuffix(mp, "/..") {
			return fmt.Errorf("%s: mount point %q: %w", path, mp, images.ErrCorrupt)
		}
		target := filepath.Join(base, mp)
		if err := inRootfs("mount point", mp); err != nil {
			return err
		}
		fi, bind := byDev[e.GetRootDev()]
		flags := uint64(e.GetFlags()) &^ propagationFlags
		switch {
		case e.GetExtMount():
			if _, err := call("bind "+e.GetExtKey()+" at "+mp, unix.SYS_MOUNT, extSource(i, ""), target, "", uint64(unix.MS_BIND), nil); err != nil {
				return err
			}
			hostSrc[i] = e.GetExtKey()
			remount = append(remount, e)
		case bind:
			first := entries[fi]
			rel, ok := strings.CutPrefix(e.GetRoot(), first.GetRoot())
			if !ok {
				return fmt.Errorf("%s: %s binds %s, outside what %s shows: %w", path, mp, e.GetRoot(), first.GetMountpoint(), ErrUnsupported)
			}
			src, what := filepath.Join(base, first.GetMountpoint(), rel), ""
			if first.GetExtMount() {
				hostSrc[i] = filepath.Join(first.GetExtKey(), rel)
				src, what = extSource(fi, rel), hostSrc[i]
			}
			if what == "" {
				what = src
			}
			// A pty of a devpts exists only while opened: made first,
			// then checked like any source.
			closePtys, err := devptsEntry(call, first, base, rel)
			if err != nil {
				return fmt.Errorf("%s: %w", mp, err)
			}
			if !first.GetExtMount() {
				if err := inRootfs("source of the bind at "+mp, filepath.Join(first.GetMountpoint(), rel)); err != nil {
					closePtys()
					return err
				}
			}
			_, err = call("bind "+what+" at "+mp, unix.SYS_MOUNT, src, target, "", uint64(unix.MS_BIND), nil)
			closePtys()
			if err != nil {
				return err
			}
			remount = append(remount, e)
		default:
			fstype := e.GetFsname()
			if _, ok := newFS[fstype]; !ok {
				return fmt.Errorf("%s: %s at %s: %w", path, fstype, mp, ErrUnsupported)
			}
			data := insideIDOptions(e.GetOptions(), uidIn, gidIn)
			// Fill a read-only tmpfs first, make it read-only after;
			// anything else is read-only from the start (a remount of
			// the superblock is not allowed to all: sysfs in a user
			// namespace).
			mflags := flags
			if withContent[fstype] {
				mflags &^= unix.MS_RDONLY
			}
			if _, err := call("mount "+fstype+" at "+mp, unix.SYS_MOUNT, e.GetSource(), target, fstype, mflags, data); err != nil {
				return err
			}
			if withContent[fstype] {
				tarPath := filepath.Join(imgDir, fmt.Sprintf("tmpfs-dev-%d.tar.gz.img", e.GetMntId()))
				// As the namespace's root if the tree has a user namespace:
				// its tmpfs takes no file of an id it does not map.
				fsRoot, err := rootfs.Sub(mp, inroot.NoLinks, "the tmpfs at "+mp)
				if err != nil {
					return fmt.Errorf("tmpfs at %s: %w", mp, err)
				}
				err = nsthread.Run(func() error { return criu.AsInsideRoot(imgDir) }, func() error { return extractTree(tarPath, fsRoot) })
				fsRoot.Close()
				if err != nil {
					return fmt.Errorf("tmpfs at %s: %w", mp, err)
				}
			}
			if mflags != flags {
				// The mount's own read-only flag, not the superblock's.
				if _, err := call("make "+mp+" read-only", unix.SYS_MOUNT, "none", target, "", flags|unix.MS_REMOUNT|unix.MS_BIND, nil); err != nil {
					return err
				}
			}
		}
		if !bind {
			byDev[e.GetRootDev()] = i
		}
	}
	for _, e := range remount {
		flags := uint64(e.GetFlags()) &^ propagationFlags
		if flags == 0 {
			continue
		}
		target := filepath.Join(base, e.GetMountpoint())
		if _, err := call("set the flags of "+e.GetMountpoint(), unix.SYS_MOUNT, "none", target, "", flags|unix.MS_REMOUNT|unix.MS_BIND, nil); err != nil {
			return err
		}
	}
	if root := entries[0]; root.GetFlags()&unix.MS_RDONLY != 0 {
		if _, err := call("make the root read-only", unix.SYS_MOUNT, "none", base, "", uint64(root.GetFlags())&^propagationFlags|unix.MS_REMOUNT|unix.MS_BIND, nil); err != nil {
			return err
		}
	}

	hosts, err := hostSources(hostSrc)
	if err != nil {
		return err
	}
	plan, err := planPropagation(entries, hosts)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, w := range plan.warnings {
		if logf != nil {
			logf("mount propagation: %s", w)
		}
	}
	// The host mounts that restored mounts join or follow, held open
	// in the root task across pivot_root: after it, the task sees
	// nothing of ctcr's namespace. /proc here is still the host's, and
	// /proc/PID/root of ctcr leads into ctcr's namespace.
	hostFds := make([]int, len(plan.hostMounts))
	for i := range hostFds {
		hostFds[i] = -1
	}
	closeFds := func() {
		for _, fd := range hostFds {
			if fd >= 0 {
				sc.Call(unix.SYS_CLOSE, fd)
			}
		}
	}
	defer closeFds()
	for i, mp := range plan.hostMounts {
		p := fmt.Sprintf("/proc/%d/root%s", os.Getpid(), mp)
		fd, err := call("open the host mount "+mp, unix.SYS_OPENAT, unix.AT_FDCWD, p, uint64(unix.O_PATH|unix.O_CLOEXEC), 0)
		if err != nil {
			return err
		}
		hostFds[i] = int(fd)
	}

	// pivot_root(".", "."): the old root ends up on top of the new one
	// and is detached at once (runc does the same). The new root may
	// not be shared yet: pivot_root refuses a shared new root, and the
	// detach of the old root would propagate.
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
		if _, err := call(s.what, s.nr, s.args...); err != nil {
			return err
		}
	}
	return runPropSteps(call, plan.steps, hostFds)
}

// devptsEntry makes the pty file rel ("/N") exist in the devpts
// instance first mounted (a container's /dev/console is a bind of its
// console, /dev/pts/0): a new instance has no pty until /dev/ptmx is
// opened, and the kernel hands out the lowest free index. The returned
// func closes the masters; the bind keeps the file, though the pty it
// was ends with them (the restored tasks get their terminal elsewhere).
func devptsEntry(call func(string, uintptr, ...any) (uint64, error), first *mnt.MntEntry, base, rel string) (func(), error) {
	n, err := strconv.Atoi(strings.TrimPrefix(rel, "/"))
	if first.GetFsname() != "devpts" || first.GetExtMount() || err != nil || n < 0 || n > 64 {
		return func() {}, nil
	}
	var fds []uint64
	closeAll := func() {
		for _, fd := range fds {
			call("close a pty master", unix.SYS_CLOSE, fd)
		}
	}
	ptmx := filepath.Join(base, first.GetMountpoint(), "ptmx")
	for i := 0; i <= n; i++ {
		fd, err := call("open "+ptmx, unix.SYS_OPENAT, unix.AT_FDCWD, ptmx, uint64(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC), 0)
		if err != nil {
			closeAll()
			return nil, err
		}
		fds = append(fds, fd)
	}
	return closeAll, nil
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

// hostMount is a mount of ctcr's namespace that restored mounts were
// bound from.
type hostMount struct {
	mountpoint string // as ctcr sees it
	dev        uint32
	prop       propagation
}

// hostSources finds the host mount under each host path (nil where
// the path is empty or gone, or the mount is hidden under another):
// the mount statx names, looked up in ctcr's mountinfo.
func hostSources(paths []string) ([]*hostMount, error) {
	out := make([]*hostMount, len(paths))
	var byID map[uint64]proc.Mount
	for i, p := range paths {
		if p == "" {
			continue
		}
		var stx unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &stx); err != nil || stx.Mask&unix.STATX_MNT_ID == 0 {
			continue
		}
		if byID == nil {
			ms, err := proc.ReadMountinfo(os.Getpid())
			if err != nil {
				return nil, err
			}
			byID = map[uint64]proc.Mount{}
			for _, m := range ms {
				byID[uint64(m.ID)] = m
			}
		}
		m, ok := byID[stx.Mnt_id]
		// The restored root task reaches the host mount through its
		// mount point: another mount on top of it would stand in.
		var top unix.Statx_t
		if ok && unix.Statx(unix.AT_FDCWD, m.MountPoint, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &top) == nil && top.Mnt_id == stx.Mnt_id {
			out[i] = &hostMount{mountpoint: m.MountPoint, dev: kdev(m.Major, m.Minor), prop: parsePropagation(m.Optional)}
		}
	}
	return out, nil
}

// propStep is one step of restoring propagation, run in the restored
// root task after pivot_root. Either to joins the peer group (and the
// master) of another mount with move_mount(MOVE_MOUNT_SET_GROUP), that
// mount being fromMount inside the container or host mount fromHost
// (an index+1 into propPlan.hostMounts); or mount(2) changes to's
// propagation with change (MS_SHARED, MS_SLAVE, MS_UNBINDABLE).
type propStep struct {
	to        string
	fromMount string
	fromHost  int
	source    string // what fromHost is, for messages
	change    uint64
}

func (s propStep) String() string {
	switch {
	case s.fromHost > 0 && s.source != "":
		return fmt.Sprintf("join %s to the peer group of the %s", s.to, s.source)
	case s.fromHost > 0:
		return fmt.Sprintf("join %s to the peer group of host mount #%d", s.to, s.fromHost)
	case s.fromMount != "":
		return fmt.Sprintf("join %s to the peer group of %s", s.to, s.fromMount)
	}
	name := map[uint64]string{unix.MS_SHARED: "shared", unix.MS_SLAVE: "a slave", unix.MS_UNBINDABLE: "unbindable"}[s.change]
	return fmt.Sprintf("make %s %s", s.to, name)
}

// propPlan is how to restore the propagation of a mount tree.
type propPlan struct {
	steps      []propStep
	hostMounts []string // mount points in ctcr's namespace to hold open
	warnings   []string
}

// planPropagation turns the shared_id/master_id/MS_UNBINDABLE of the
// image (CRIU's meaning: the peer group a mount belongs to and the one
// it is a slave of, as mountinfo numbered them at dump time) into steps,
// for mounts that all exist and are private. hosts[i] is the host mount
// entry i was bound from, if any.
//
// The numbers are the kernel's and global: a group with members inside
// the container may also have members on the host (a bind with
// "rshared" of a shared host directory), and a master may be a host
// group ("rslave"). So:
//   - A group whose member was bound from a host mount of that same
//     group joins it again. Any other group is new: its leader (the
//     member whose root covers the others': move_mount(SET_GROUP) wants
//     that) first becomes a slave of its master, if any, then shared;
//     the other members join the leader.
//   - A slave of a group inside the container joins a member of it,
//     then becomes a slave (that leaves it a slave of the group).
//   - A slave of a group outside the container is made a slave of the
//     group of the host mount it was bound from, if that mount is still
//     shared (its group number may differ after a reboot: that is
//     reported). Otherwise it stays private, and that is reported too.
//   - Unbindable mounts are made so last: they cannot be slaves.
//
// Groups are done masters first, so a leader's master exists when it
// becomes a slave.
func planPropagation(entries []*mnt.MntEntry, hosts []*hostMount) (*propPlan, error) {
	return planPropagationIn(entries, hosts, containerScope)
}

// planPropagationIn is planPropagation with the words of its messages
// for what the mounts are and where their sources lie (scope).
func planPropagationIn(entries []*mnt.MntEntry, hosts []*hostMount, scope propScope) (*propPlan, error) {
	plan := &propPlan{}
	groups := map[uint32][]int{}
	var order []uint32
	for i, e := range entries {
		if g := e.GetSharedId(); g != 0 {
			if groups[g] == nil {
				order = append(order, g)
			}
			groups[g] = append(groups[g], i)
		}
	}
	mp := func(i int) string { return entries[i].GetMountpoint() }
	// covers: mount a shows all that mount b shows.
	covers := func(a, b int) bool {
		ea, eb := entries[a], entries[b]
		if ea.GetRootDev() != eb.GetRootDev() {
			return false
		}
		ra, rb := ea.GetRoot(), eb.GetRoot()
		return ra == "/" || rb == ra || strings.HasPrefix(rb, strings.TrimSuffix(ra, "/")+"/")
	}
	hostRef := func(h *hostMount) int {
		for i, m := range plan.hostMounts {
			if m == h.mountpoint {
				return i + 1
			}
		}
		plan.hostMounts = append(plan.hostMounts, h.mountpoint)
		return len(plan.hostMounts)
	}
	host := func(i int) *hostMount {
		if h := hosts[i]; h != nil && h.dev == entries[i].GetRootDev() {
			return h
		}
		return nil
	}
	warn := func(format string, args ...any) { plan.warnings = append(plan.warnings, fmt.Sprintf(format, args...)) }
	done, visiting := map[uint32]bool{}, map[uint32]bool{}
	leaders := map[uint32]int{}
	var group func(g uint32) error
	// enslave makes private mount i a slave of peer group master.
	enslave := func(i int, master uint32) error {
		if master == 0 {
			return nil
		}
		h := host(i)
		if members := groups[master]; members != nil {
			if err := group(master); err != nil {
				return err
			}
			// The leader first: it shows the most.
			for _, j := range append([]int{leaders[master]}, members...) {
				if covers(j, i) {
					plan.steps = append(plan.steps, propStep{to: mp(i), fromMount: mp(j)}, propStep{to: mp(i), change: unix.MS_SLAVE})
					return nil
				}
			}
			// The group has members on the host too (binds of two
			// directories of a shared host mount, one "rshared", one
			// "rslave"): the host mount shows it all.
			if h == nil || h.prop.shared != master {
				return fmt.Errorf("%s is a slave of peer group %d, but no mount of that group shows its root %s: %w", mp(i), master, entries[i].GetRoot(), ErrUnsupported)
			}
		}
		switch {
		case h == nil:
			warn("%s was a slave of peer group %d outside %s, and was not bound from a %s: it is private now", mp(i), master, scope.inside, scope.source)
		case h.prop.shared != 0:
			if h.prop.shared != master {
				warn("%s was a slave of peer group %d outside %s; its source, the %s %s, is in group %d: it is that group's slave", mp(i), master, scope.inside, scope.source, h.mountpoint, h.prop.shared)
			}
			plan.steps = append(plan.steps, propStep{to: mp(i), fromHost: hostRef(h), source: fmt.Sprintf(scope.anchor, h.mountpoint)}, propStep{to: mp(i), change: unix.MS_SLAVE})
		case h.prop.master == master:
			// The host mount is itself a slave of that group, and only
			// that: joining it copies just the master.
			plan.steps = append(plan.steps, propStep{to: mp(i), fromHost: hostRef(h), source: fmt.Sprintf(scope.anchor, h.mountpoint)})
		default:
			warn("%s was a slave of peer group %d outside %s; its source, the %s %s, is not shared: it is private now", mp(i), master, scope.inside, scope.source, h.mountpoint)
		}
		return nil
	}
	group = func(g uint32) error {
		if done[g] {
			return nil
		}
		if visiting[g] {
			return fmt.Errorf("peer group %d is a slave of itself: %w", g, images.ErrCorrupt)
		}
		visiting[g] = true
		members := groups[g]
		leader := -1
		for _, i := range members {
			all := true
			for _, j := range members {
				all = all && covers(i, j)
			}
			if all {
				leader = i
				break
			}
		}
		if leader < 0 {
			var mps []string
			for _, i := range members {
				mps = append(mps, mp(i)+" ("+entries[i].GetRoot()+")")
			}
			return fmt.Errorf("peer group %d: no member shows all the others show: %s: %w", g, strings.Join(mps, ", "), ErrUnsupported)
		}
		leaders[g] = leader
		if h := host(leader); h != nil && peerOfHost(entries[leader], h, g) {
			// A peer of the host mount it was bound from: join it again.
			plan.steps = append(plan.steps, propStep{to: mp(leader), fromHost: hostRef(h), source: fmt.Sprintf(scope.anchor, h.mountpoint)})
		} else {
			if err := enslave(leader, entries[leader].GetMasterId()); err != nil {
				return err
			}
			plan.steps = append(plan.steps, propStep{to: mp(leader), change: unix.MS_SHARED})
		}
		for _, i := range members {
			if i != leader {
				plan.steps = append(plan.steps, propStep{to: mp(i), fromMount: mp(leader)})
			}
		}
		done[g] = true
		return nil
	}
	for _, g := range order {
		if err := group(g); err != nil {
			return nil, err
		}
	}
	for i, e := range entries {
		if e.GetSharedId() == 0 {
			if err := enslave(i, e.GetMasterId()); err != nil {
				return nil, err
			}
		}
	}
	for i, e := range entries {
		if e.GetFlags()&unix.MS_UNBINDABLE != 0 {
			plan.steps = append(plan.steps, propStep{to: mp(i), change: unix.MS_UNBINDABLE})
		}
	}
	return plan, nil
}

// peerOfHost reports whether mount e, of peer group g at the dump, was
// a peer of h, the host mount it was bound from, which is to be joined
// again. The image says so in internal_sharing (false: the group had
// the host mount in it), whatever the host's numbers are now (a reboot
// renumbers groups, and a number the dump's group had may now be
// another group's). An image without it (an older ctcr's, a nested
// namespace's table, in the same numbers as its container's) is judged
// by the numbers; h must be shared either way.
func peerOfHost(e *mnt.MntEntry, h *hostMount, g uint32) bool {
	if h.prop.shared == 0 {
		return false
	}
	if e.InternalSharing != nil {
		return !e.GetInternalSharing()
	}
	return h.prop.shared == g
}

// extractTree unpacks a tmpfs archive into root, the tmpfs just
// mounted. Names must stay inside it, and no entry is reached through a
// symlink: every entry is created, chowned and chmodded by *at calls on
// its parent directory, resolved inside root with no symlink followed,
// and never through the entry if it is a symlink itself. An archive
// holding `esc -> /host/dir` and then `esc/x` fails; one holding a
// symlink and then a directory of the same name fails too. Sizes come
// from the archive, which is read as a stream.
func extractTree(archive string, root *inroot.Root) error {
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
	// attrs gives the entry its owner, mode and times, on the entry
	// itself (a symlink's own owner and times; no mode).
	attrs := func(d *inroot.Dir, h *tar.Header, mode uint32) error {
		if err := d.Lchown(h.Uid, h.Gid); err != nil {
			return err
		}
		if h.Typeflag != tar.TypeSymlink {
			if err := d.Lchmod(mode); err != nil {
				return err
			}
		}
		ts := unix.NsecToTimespec(h.ModTime.UnixNano())
		d.Lutimes([]unix.Timespec{ts, ts})
		return nil
	}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w (%w)", archive, err, images.ErrCorrupt)
		}
		name := filepath.Clean(h.Name)
		if name == "." {
			continue // the tmpfs itself: its mode is a mount option
		}
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("%s: entry %q leaves the tmpfs: %w", archive, h.Name, images.ErrCorrupt)
		}
		d, err := root.Parent(name, inroot.NoLinks)
		if err != nil {
			return fmt.Errorf("%s: entry %q: %w", archive, h.Name, err)
		}
		err = extractEntry(tr, d, h)
		if err == nil && h.Typeflag != tar.TypeDir {
			err = attrs(d, h, uint32(h.Mode&07777))
		}
		d.Close()
		if err != nil {
			return fmt.Errorf("%s: entry %q: %w", archive, h.Name, err)
		}
		if h.Typeflag == tar.TypeDir {
			dirs = append(dirs, h)
		}
	}
	// Directories last: their modes may forbid writing into them.
	for i := len(dirs) - 1; i >= 0; i-- {
		h := dirs[i]
		d, err := root.Parent(filepath.Clean(h.Name), inroot.NoLinks)
		if err == nil {
			err = attrs(d, h, uint32(h.Mode&07777))
			d.Close()
		}
		if err != nil {
			return fmt.Errorf("%s: entry %q: %w", archive, h.Name, err)
		}
	}
	return nil
}

// extractEntry creates the entry h names in directory d, and writes a
// regular file's content from tr.
func extractEntry(tr *tar.Reader, d *inroot.Dir, h *tar.Header) error {
	mode := uint32(h.Mode & 07777)
	switch h.Typeflag {
	case tar.TypeDir:
		if err := d.Mkdir(0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
		// What is there now must be a directory, not a symlink the
		// archive made before under that name.
		if st, err := d.Lstat(); err != nil {
			return err
		} else if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("a directory entry where the archive made another kind of file (mode %#o)", st.Mode)
		}
		return nil
	case tar.TypeReg:
		out, err := d.Open(os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(out, tr)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		return err
	case tar.TypeSymlink:
		return d.Symlink(h.Linkname)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		kind := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[h.Typeflag]
		return d.Mknod(kind|mode, int(unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor))))
	default:
		return fmt.Errorf("entry type %c: %w", h.Typeflag, ErrUnsupported)
	}
}

// insideIDOptions rewrites the uid= and gid= of mount options, which
// mountinfo shows with host ids, as the restored tree's user namespace
// has them (nil functions: the host's namespace, nothing to do).
func insideIDOptions(opts string, uidIn, gidIn func(uint32) uint32) string {
	if uidIn == nil {
		return opts
	}
	parts := strings.Split(opts, ",")
	for i, p := range parts {
		k, v, ok := strings.Cut(p, "=")
		if !ok || (k != "uid" && k != "gid") {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			continue
		}
		in := uidIn
		if k == "gid" {
			in = gidIn
		}
		parts[i] = fmt.Sprintf("%s=%d", k, in(uint32(n)))
	}
	return strings.Join(parts, ",")
}
