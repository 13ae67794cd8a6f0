package criu

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/mnt"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/regfile"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/internal/inroot"
)

// Files of a nested mount namespace's own view. A task below the root
// with a mount namespace of its own (systemd's PrivateTmp=, a container
// nested in the container) may hold open, map, or sit in a file that
// only its own view reaches: a file of the tmpfs it mounted on /tmp,
// while the root's /tmp holds another file at the same path. As CRIU
// does (criu/files-reg.c), the file's reg-file entry then names the
// mount it was opened through (RegFileEntry.mnt_id, as fdinfo shows
// it), a mount of that namespace's table (mountpoints-ID.img, which
// ns.DumpNested writes); the restore finds the namespace from the
// mount and opens the file there, through the root of a restored task
// of that namespace, still confined to that root (openInTree).
//
// Only files the root's view does not reach at the same path get a
// mnt_id: every other file keeps its route (the root's view, or the
// host's for a file of no namespace of the tree), and so do images
// written before, whose entries have none (mnt_id -1).

// noMount is the mnt_id of a reg-file entry that names no mount
// (RegFileEntry's default).
const noMount = int32(-1)

// mountViews maps the mounts of every mount namespace of the dumped
// tree to their namespace. Immutable once built.
type mountViews struct {
	rootNS uint64         // inode of the root task's mount namespace
	nsOf   map[int]uint64 // mount id -> inode of its namespace
	taskOf map[uint64]int // namespace inode -> host PID of a task in it
	// err is why the tables could not be read: viewMount fails with it
	// rather than send a file of a nested view to the root's.
	err error
}

// views returns the mount namespaces of the tree t dumps (the root's and
// every nested one), built on first use. A table without a root task
// (a pre-copy's) or without nested namespaces (DumpOptions.NestedNS
// off) has none: every file keeps its route.
func (t *fileTable) views() *mountViews {
	return t.kindState("mount views", func() any {
		v := &mountViews{nsOf: map[int]uint64{}, taskOf: map[uint64]int{}}
		if t.rootPid == 0 || !t.nestedNS {
			return v
		}
		ino, err := nsInode(t.rootPid, "mnt")
		if err != nil {
			v.err = err
			return v
		}
		v.rootNS = ino
		pids := []int{t.rootPid}
		for pid := range t.vpidOf {
			if pid != t.rootPid {
				pids = append(pids, pid)
			}
		}
		for _, pid := range pids {
			ino, err := nsInode(pid, "mnt")
			if err != nil {
				continue // a zombie has no namespaces
			}
			if _, ok := v.taskOf[ino]; ok {
				continue
			}
			ms, err := proc.ReadMountinfo(pid)
			if err != nil {
				v.err = fmt.Errorf("mounts of task %d: %w", pid, err)
				return v
			}
			v.taskOf[ino] = pid
			for _, m := range ms {
				v.nsOf[m.ID] = ino
			}
		}
		return v
	}).(*mountViews)
}

// inTree reports whether mount id belongs to a mount namespace of the
// tree; known is false when the views are not known (no nested
// namespaces saved), and the caller decides as before.
func (v *mountViews) inTree(id int) (in, known bool) {
	if v.err != nil || len(v.taskOf) < 2 {
		return false, false
	}
	_, in = v.nsOf[id]
	return in, true
}

// mountID is the id of the mount the file behind link (a /proc magic
// link: an fd, a map_files entry, cwd) was reached through.
func mountID(link string) (int, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, link, 0, unix.STATX_MNT_ID, &stx); err != nil {
		return 0, &os.PathError{Op: "statx", Path: link, Err: err}
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		return 0, fmt.Errorf("statx %s: the kernel gives no mount id", link)
	}
	return int(stx.Mnt_id), nil
}

// viewMount returns the mnt_id to record for the file behind link
// (what /proc calls path, with st its stat) if it is a file of a nested
// mount namespace's own view: reached through a mount of that
// namespace, and not the file at that path in the root task's view.
// Otherwise it returns noMount and the file keeps its route. A deleted
// file (ghost) is named by its mount alone: its content is restored,
// and only the directory it is made again in is the view's.
func (t *fileTable) viewMount(link, path string, st *unix.Stat_t, deleted bool) (int32, error) {
	v := t.views()
	if v.err != nil {
		return noMount, v.err
	}
	if len(v.taskOf) < 2 || !strings.HasPrefix(path, "/") {
		return noMount, nil
	}
	id, err := mountID(link)
	if err != nil {
		return noMount, err
	}
	ns, ok := v.nsOf[id]
	if !ok || ns == v.rootNS {
		return noMount, nil
	}
	if deleted {
		return int32(id), nil
	}
	same := func(pid int) bool {
		root, err := reportedRoot(pid)
		if err != nil {
			return false
		}
		defer root.Close()
		got, err := root.Stat(path, inroot.NoLinks)
		return err == nil && got.Dev == st.Dev && got.Ino == st.Ino
	}
	if same(t.rootPid) {
		return noMount, nil // both views reach it: the root's route
	}
	if !same(v.taskOf[ns]) {
		// Its own view does not find it at that path either (renamed
		// across a mount, or covered since): the root's route, as
		// before, which finds whatever is there at restore.
		return noMount, nil
	}
	return int32(id), nil
}

// mountNamespaces maps each mount of a nested mount namespace, as the
// checkpoint's mountpoints-ID.img tables list them, to that
// namespace's image id (its MntNsId in the tasks' cores), read on first
// use. Mounts of the root's namespace are not in it.
func (r *fileRestore) mountNamespaces() (map[int32]uint32, error) {
	if m, ok := r.state["mount views"].(map[int32]uint32); ok {
		return m, nil
	}
	m := map[int32]uint32{}
	rootNS := r.cp.tasks[0].core.GetIds().GetMntNsId()
	done := map[uint32]bool{rootNS: true}
	for _, ti := range r.cp.tasks {
		ns := ti.core.GetIds().GetMntNsId()
		if ti.zombie || ns == 0 || done[ns] {
			continue
		}
		done[ns] = true
		name := images.Mnts.FileName(int(ns))
		es, err := images.ReadAll(r.cp.dir.Path(name), images.Mnts, func() *mnt.MntEntry { return &mnt.MntEntry{} })
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // saved by no caller: its files have no mnt_id
			}
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		for _, e := range es {
			m[int32(e.GetMntId())] = ns
		}
	}
	r.state["mount views"] = m
	return m, nil
}

// mountNamespace returns the image id of the nested mount namespace
// whose mount reg names, or ok false for an entry that names none, or
// a mount of the root's table.
func (r *fileRestore) mountNamespace(reg *regfile.RegFileEntry) (ns uint32, ok bool, err error) {
	id := reg.GetMntId()
	if id < 0 {
		return 0, false, nil
	}
	m, err := r.mountNamespaces()
	if err != nil {
		return 0, false, err
	}
	ns, ok = m[id]
	return ns, ok, nil
}

// viewPid returns the host PID of the restored task in whose root, and
// mount namespace, reg's path is opened: for an entry that names a
// mount of a nested namespace, the first restored task of that
// namespace (which made it, and replayed its mounts, as it was
// created); for any other, def.
func (r *fileRestore) viewPid(reg *regfile.RegFileEntry, def int) (int, error) {
	ns, ok, err := r.mountNamespace(reg)
	if err != nil || !ok {
		return def, err
	}
	for _, ti := range r.cp.tasks {
		if ti.zombie || ti.core.GetIds().GetMntNsId() != ns {
			continue
		}
		if pid, ok := r.hostPid(int(ti.pstree.GetPid())); ok {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("%s is a file of mount namespace %d, of which no task is restored yet", reg.GetName(), ns)
}
