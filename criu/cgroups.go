package criu

// The cgroups of a plain process tree (CRIU's --manage-cgroups): at dump,
// which cgroup each thread is in, hierarchy by hierarchy, and the
// properties of the tree's own cgroups, in CRIU's cgroup.img; at restore,
// those cgroups made again (as the mode says) and every task and thread
// put back in its own.
//
// cgroup.img (go-criu cgroup.CgroupEntry):
//
//	sets:        id -> [ {name: hierarchy key, path} ... ]   one per
//	             distinct combination of cgroups; core-TID.img's
//	             thread_core.cg_set (and the main thread's tc.cg_set)
//	             name one; inventory.root_cg_set is ctcr's own at dump
//	controllers: cnames (the key split at ","; "unified" for v2)
//	             dirs: a tree of the tree's cgroups, a top entry's
//	             dir_name the whole path ("/a/b"), a child's one
//	             component; properties and dir_perms of each
//
// Where every thread is in ctcr's own cgroups (the common case: the tree
// was started from where ctcr runs) nothing is written and restore is
// unchanged. A hierarchy in which a task sat in ctcr's own cgroup at dump
// leaves it, at restore, in the restoring ctcr's own. The cgroups of
// ctcr and their ancestors are never saved as the tree's.
//
// Every read and write of cgroupfs is the cgroup package's; paths from
// the image are checked there (cgroup.CheckPath, cgroup.Dir) before use.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	cgimg "github.com/checkpoint-restore/go-criu/v7/crit/images/cgroup"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/cgroup"
	"github.com/ctcr/ctcr/criu/images"
)

// cgSets numbers distinct cgroup sets as they are met, from 1.
type cgSets struct {
	byKey map[string]uint32
	sets  []map[string]string
}

func setKey(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "\x00" + m[k] + "\x00")
	}
	return b.String()
}

func (s *cgSets) id(m map[string]string) uint32 {
	k := setKey(m)
	if id, ok := s.byKey[k]; ok {
		return id
	}
	s.sets = append(s.sets, m)
	id := uint32(len(s.sets))
	s.byKey[k] = id
	return id
}

// under says whether cgroup p is q or below it.
func under(p, q string) bool {
	return p == q || q == "/" || strings.HasPrefix(p, q+"/")
}

// dumpCgroups records the cgroups of every thread of the tree, unless
// all are ctcr's own, and writes cgroup.img. It runs once every thread's
// core entry exists (readStates) and sets their cg_set; d.rootCgSet is
// for the inventory.
func (d *dumpTree) dumpCgroups(stage *images.Staging) error {
	if d.opts.ManageCgroups == cgroup.ModeIgnore {
		return nil
	}
	own, err := cgroup.ThreadCgroups(os.Getpid(), os.Getpid())
	if err != nil {
		return fmt.Errorf("ctcr's own cgroups: %w", err)
	}
	sets := &cgSets{byKey: map[string]uint32{}}
	rootID := sets.id(own)
	ids := map[*dumpThread]uint32{}
	differs := false
	// The threads listed in a cgroup, by hierarchy and path, read once.
	members := map[[2]string]map[int]bool{}
	for _, p := range d.procs {
		if p.zombie {
			continue
		}
		lm, err := cgroup.ThreadCgroups(p.pid, p.pid)
		if err != nil {
			return err
		}
		lid := sets.id(lm)
		for i, th := range p.threads {
			id := lid
			if i > 0 {
				if len(p.threads) < threadListMin || !sameAsLeader(th.tid, lm, members) {
					m, err := cgroup.ThreadCgroups(p.pid, th.tid)
					if err != nil {
						return err
					}
					id = sets.id(m)
				}
			}
			ids[th] = id
			differs = differs || id != rootID
		}
	}
	if !differs {
		return nil
	}
	for th, id := range ids {
		th.core.ThreadCore.CgSet = proto.Uint32(id)
	}
	for _, p := range d.procs {
		if !p.zombie {
			p.leader().core.Tc.CgSet = proto.Uint32(ids[p.leader()])
		}
	}
	d.rootCgSet = rootID

	e := &cgimg.CgroupEntry{}
	paths := map[string]map[string]bool{} // hierarchy key -> cgroups to save
	inUse := map[string]map[string]bool{} // hierarchy key -> cgroups a thread is in
	for i, m := range sets.sets {
		se := &cgimg.CgSetEntry{Id: proto.Uint32(uint32(i + 1))}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := m[k]
			se.Ctls = append(se.Ctls, &cgimg.CgMemberEntry{Name: proto.String(k), Path: proto.String(p)})
			if uint32(i+1) == rootID || p == own[k] || p == "/" {
				continue
			}
			if paths[k] == nil {
				paths[k] = map[string]bool{}
				inUse[k] = map[string]bool{}
			}
			inUse[k][p] = true
			// The cgroup and its ancestors, but for ctcr's own and
			// theirs: those are where ctcr runs, not the tree's.
			for q := p; q != "/"; q = path.Dir(q) {
				if o, ok := own[k]; ok && under(o, q) {
					break
				}
				paths[k][q] = true
			}
		}
		e.Sets = append(e.Sets, se)
	}
	// The cgroups below those of the tree's threads come back too, with
	// their properties, though no task is in them (as CRIU saves every
	// descendant): a service manager moves tasks into empty cgroups
	// later, and their limits must hold then. Only below the threads'
	// own cgroups, not their ancestors': those hold the rest of the
	// system.
	for k, ps := range inUse {
		for p := range ps {
			if err := addDescendants(k, p, own[k], paths[k]); err != nil {
				return err
			}
		}
	}
	keys := make([]string, 0, len(paths))
	for k := range paths {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ce := &cgimg.CgControllerEntry{Cnames: strings.Split(k, ",")}
		var list []string
		for p := range paths[k] {
			list = append(list, p)
		}
		sort.Strings(list) // parents before children
		entries := map[string]*cgimg.CgroupDirEntry{}
		for _, p := range list {
			dir, err := cgroup.Dir(k, p)
			if err != nil {
				return err
			}
			props, err := cgroup.ReadProps(k, dir)
			if err != nil {
				return err
			}
			perms, err := cgroup.DirPerms(dir)
			if err != nil {
				return err
			}
			de := &cgimg.CgroupDirEntry{DirPerms: &cgimg.CgroupPerms{
				Mode: proto.Uint32(perms.Mode), Uid: proto.Uint32(perms.Uid), Gid: proto.Uint32(perms.Gid)}}
			for _, pr := range props {
				de.Properties = append(de.Properties, &cgimg.CgroupPropEntry{Name: proto.String(pr.Name), Value: proto.String(pr.Value)})
				if pr.Name == "cgroup.type" && pr.Value == "threaded" {
					ce.IsThreaded = proto.Bool(true)
				}
			}
			entries[p] = de
			if parent, ok := entries[path.Dir(p)]; ok && path.Dir(p) != "/" {
				de.DirName = proto.String(path.Base(p))
				parent.Children = append(parent.Children, de)
			} else {
				de.DirName = proto.String(p)
				ce.Dirs = append(ce.Dirs, de)
			}
		}
		e.Controllers = append(e.Controllers, ce)
	}
	name := images.Cgroup.FileName()
	if err := images.WriteFile(stage.Path(name), images.Cgroup, e); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	d.opts.logf("cgroups: %d sets, %d hierarchies with the tree's own cgroups", len(e.Sets), len(e.Controllers))
	return nil
}

// addDescendants adds to save the cgroups below cgroup p of hierarchy
// key, but for ctcr's own (own) and its ancestors. A cgroup removed
// during the walk is skipped.
func addDescendants(key, p, own string, save map[string]bool) error {
	dir, err := cgroup.Dir(key, p)
	if err != nil {
		return err
	}
	return filepath.WalkDir(dir, func(sub string, de fs.DirEntry, err error) error {
		if err != nil || !de.IsDir() || sub == dir {
			return nil
		}
		q := path.Join(p, filepath.ToSlash(strings.TrimPrefix(sub, dir)))
		if own != "" && under(own, q) {
			return filepath.SkipDir
		}
		save[q] = true
		return nil
	})
}

// threadListMin is the number of threads from which a process's threads
// are checked against its cgroups' thread lists (sameAsLeader) rather
// than read one by one. Measured here: /proc/PID/task/TID/cgroup costs
// 80-120 µs a read, a v1 "tasks" list of the root cgroup with ~500
// threads about 1.4 ms, ten hierarchies 14 ms.
const threadListMin = 64

// sameAsLeader says whether thread tid is in every cgroup of its main
// thread's set lm, from the cgroups' thread lists (members caches them):
// a process's threads are nearly always together, and one list read per
// hierarchy costs less than one /proc/PID/task/TID/cgroup per thread.
func sameAsLeader(tid int, lm map[string]string, members map[[2]string]map[int]bool) bool {
	for k, p := range lm {
		key := [2]string{k, p}
		in, ok := members[key]
		if !ok {
			// A hierarchy not mounted where ctcr looks (nil): the
			// thread's own file answers.
			in, _ = cgroup.ThreadsIn(k, p)
			members[key] = in
		}
		if !in[tid] {
			return false
		}
	}
	return true
}

// cgroupPlan is where restore puts each task and thread, by the cg_set
// of its core image. Immutable once made, but for made.
type cgroupPlan struct {
	// dirs is, by set id, the directory each hierarchy's cgroup of the
	// set is at here. A hierarchy whose task stays where restore makes
	// it (in the restoring ctcr's own cgroup) is there too: a child
	// inherits its parent's cgroup, which may be another.
	dirs map[uint32]map[string]string
	made []string // cgroups restore created, parents first
	logf func(string, ...any)
}

// cgDir is one saved cgroup directory.
type cgDir struct {
	path  string
	props []cgroup.Prop
	perms *cgroup.Perms
}

// planCgroups reads cgroup.img and works out, without changing anything,
// the cgroup each set's tasks go into and the directories to make. It
// returns nil if there is nothing to do.
func planCgroups(cp *checkpoint, opts *RestoreOptions) (*cgroupPlan, map[string][]cgDir, error) {
	if opts.ManageCgroups == cgroup.ModeIgnore {
		return nil, nil, nil
	}
	name := images.Cgroup.FileName()
	e := &cgimg.CgroupEntry{}
	err := images.ReadOne(cp.dir.Path(name), images.Cgroup, e)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	sets := map[uint32]map[string]string{}
	for _, se := range e.GetSets() {
		id := se.GetId()
		if id == 0 || sets[id] != nil {
			return nil, nil, corruptf(name, "cgroup set id %d twice or zero", id)
		}
		m := map[string]string{}
		for _, c := range se.GetCtls() {
			k, p := c.GetName(), c.GetPath()
			if err := cgroup.CheckKey(k); err != nil {
				return nil, nil, corruptf(name, "set %d: %v", id, err)
			}
			if err := cgroup.CheckPath(p); err != nil {
				return nil, nil, corruptf(name, "set %d, %s: %v", id, k, err)
			}
			m[k] = p
		}
		sets[id] = m
	}
	dumpOwn := sets[cp.inventory.GetRootCgSet()] // nil: none was ctcr's
	rootSet := sets[cp.tasks[0].core.GetTc().GetCgSet()]
	used := map[uint32]bool{} // the sets of tasks and threads, not ctcr's own
	for _, t := range cp.tasks {
		if t.zombie {
			continue
		}
		ids := []uint32{t.core.GetTc().GetCgSet()}
		for _, c := range t.threads {
			ids = append(ids, c.GetThreadCore().GetCgSet())
		}
		for _, id := range ids {
			if id != 0 && sets[id] == nil {
				return nil, nil, corruptf(name, "task %d: no cgroup set %d", t.pstree.GetPid(), id)
			}
			used[id] = true
		}
	}
	here, err := cgroup.ThreadCgroups(os.Getpid(), os.Getpid())
	if err != nil {
		return nil, nil, fmt.Errorf("ctcr's own cgroups: %w", err)
	}

	// target is where cgroup p of hierarchy k goes here, and whether it
	// is one of the tree's (made if missing) rather than where ctcr runs.
	target := func(k, p string) (string, bool, error) {
		if nr, ok := opts.CgroupRoots.Of(k); ok {
			base, ok := rootSet[k]
			if !ok || !under(p, base) {
				return "", false, fmt.Errorf("%s cgroup %s is not below the root task's (%s): --cgroup-root cannot place it", k, p, base)
			}
			return path.Join(nr, strings.TrimPrefix(p, base)), true, nil
		}
		if o, ok := dumpOwn[k]; ok && o == p {
			h, ok := here[k]
			if !ok {
				return "", false, fmt.Errorf("cgroup hierarchy %s: ctcr is in none", k)
			}
			return h, false, nil
		}
		return p, true, nil
	}

	pl := &cgroupPlan{dirs: map[uint32]map[string]string{}, logf: opts.logf}
	ensure := map[string]map[string]bool{} // hierarchy -> the tree's cgroups that must exist
	for id, m := range sets {
		if !used[id] {
			continue
		}
		pl.dirs[id] = map[string]string{}
		for k, p := range m {
			t, mine, err := target(k, p)
			if err != nil {
				return nil, nil, err
			}
			if !mine && t == here[k] {
				if _, err := cgroup.Mount(k); err != nil {
					// Not mounted here, and nothing to move: ctcr's own
					// set may name hierarchies a restoring host lacks.
					continue
				}
			}
			d, err := cgroup.Dir(k, t)
			if err != nil {
				return nil, nil, fmt.Errorf("cgroup set %d: %w", id, err)
			}
			pl.dirs[id][k] = d
			if mine {
				if ensure[k] == nil {
					ensure[k] = map[string]bool{}
				}
				ensure[k][t] = true
			}
		}
	}

	// The saved directories, moved as the sets are.
	dirs := map[string][]cgDir{}
	for _, ce := range e.GetControllers() {
		k := strings.Join(ce.GetCnames(), ",")
		var walk func(parent string, des []*cgimg.CgroupDirEntry) error
		walk = func(parent string, des []*cgimg.CgroupDirEntry) error {
			for _, de := range des {
				n := de.GetDirName()
				var p string
				if parent == "" {
					p = n
				} else {
					if n == "" || n == "." || n == ".." || strings.Contains(n, "/") {
						return corruptf(name, "%s cgroup %s: child %q", k, parent, n)
					}
					p = parent + "/" + n
				}
				if err := cgroup.CheckPath(p); err != nil || p == "/" {
					return corruptf(name, "%s cgroup %q: not a cgroup below the hierarchy's root", k, p)
				}
				if t, mine, err := target(k, p); err == nil && mine {
					cd := cgDir{path: t}
					for _, pe := range de.GetProperties() {
						if !cgroup.KnownProp(k, pe.GetName()) {
							opts.logf("cgroups: %s cgroup %s: property %s is not one ctcr restores; left out", k, p, pe.GetName())
							continue
						}
						cd.props = append(cd.props, cgroup.Prop{Name: pe.GetName(), Value: pe.GetValue()})
					}
					if dp := de.GetDirPerms(); dp != nil {
						cd.perms = &cgroup.Perms{Mode: dp.GetMode() & 0o7777, Uid: dp.GetUid(), Gid: dp.GetGid()}
					}
					dirs[k] = append(dirs[k], cd)
					if ensure[k] == nil {
						ensure[k] = map[string]bool{}
					}
					ensure[k][t] = true
				}
				if err := walk(p, de.GetChildren()); err != nil {
					return err
				}
			}
			return nil
		}
		if err := walk("", ce.GetDirs()); err != nil {
			return nil, nil, err
		}
	}
	// Cgroups a set names with no saved directory (a --cgroup-root, or a
	// task's cgroup an image from elsewhere did not describe) are made
	// bare.
	for k, ps := range ensure {
		have := map[string]bool{}
		for _, d := range dirs[k] {
			have[d.path] = true
		}
		for p := range ps {
			if !have[p] {
				dirs[k] = append(dirs[k], cgDir{path: p})
			}
		}
		sort.Slice(dirs[k], func(i, j int) bool { return dirs[k][i].path < dirs[k][j].path })
	}
	return pl, dirs, nil
}

// prepare makes the cgroups the plan needs, as mode says, and
// writes their properties. On failure what it made is removed.
func (pl *cgroupPlan) prepare(mode cgroup.Mode, dirs map[string][]cgDir) error {
	keys := make([]string, 0, len(dirs))
	for k := range dirs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		mnt, err := cgroup.Mount(k)
		if err != nil {
			return err
		}
		for _, d := range dirs[k] {
			dir, err := cgroup.Dir(k, d.path)
			if err != nil {
				return err
			}
			_, statErr := os.Stat(dir)
			exists := statErr == nil
			made := false
			switch {
			case exists && mode == cgroup.ModeStrict:
				return fmt.Errorf("%s cgroup %s exists, and --manage-cgroups=strict restores only into cgroups it makes", k, d.path)
			case !exists && !mode.Creates():
				return fmt.Errorf("%s cgroup %s does not exist, and --manage-cgroups=%s does not make it", k, d.path, mode)
			case !exists:
				// Parents first: a --cgroup-root's may be missing too.
				var missing []string
				for q := dir; q != mnt; q = path.Dir(q) {
					if _, err := os.Stat(q); err == nil {
						break
					}
					missing = append([]string{q}, missing...)
				}
				for _, q := range missing {
					perms := d.perms
					if q != dir {
						perms = nil
					}
					ok, err := cgroup.MakeDir(q, perms)
					if ok {
						pl.made = append(pl.made, q)
					}
					if err != nil {
						return err
					}
				}
				made = true
			}
			if made || mode == cgroup.ModeProps || mode == cgroup.ModeFull || mode == cgroup.ModeStrict {
				if err := cgroup.WriteProps(k, dir, d.props); err != nil {
					return err
				}
			}
		}
	}
	if len(pl.made) > 0 {
		pl.logf("cgroups: made %d", len(pl.made))
	}
	return nil
}

// removeMade removes the cgroups restore made, children first, once
// the tasks it put there are gone.
func (pl *cgroupPlan) removeMade() {
	if pl == nil {
		return
	}
	for i := len(pl.made) - 1; i >= 0; i-- {
		if err := cgroup.RemoveDir(pl.made[i], 2*time.Second); err != nil {
			pl.logf("cgroups: %v", err)
		}
	}
	pl.made = nil
}

// move puts thread tid of pid (the whole process if tid is pid) into
// the cgroups of set id, in each hierarchy where it is elsewhere.
func (pl *cgroupPlan) move(pid, tid int, id uint32) error {
	want := pl.dirs[id]
	if len(want) == 0 {
		return nil
	}
	cur, err := cgroup.ThreadCgroups(pid, tid)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if c, ok := cur[k]; ok {
			if d, err := cgroup.Dir(k, c); err == nil && d == want[k] {
				continue
			}
		}
		if tid == pid {
			err = cgroup.MoveProcess(want[k], pid)
		} else {
			err = cgroup.MoveThread(want[k], tid)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// placeProcess moves a freshly cloned task into its cgroups, before its
// memory is filled (charged to them, as it was) and before it clones its
// children and threads (which are born there). Nil-safe.
func (pl *cgroupPlan) placeProcess(t *restoringTask) error {
	if pl == nil || t.helper || t.img.zombie {
		return nil
	}
	if err := pl.move(t.pid, t.pid, t.img.core.GetTc().GetCgSet()); err != nil {
		return fmt.Errorf("%s: %w", t.where(), err)
	}
	return nil
}

// placeThreads moves each thread that was in another cgroup than its
// main thread there. Nil-safe.
func (pl *cgroupPlan) placeThreads(procs []*restoringTask) error {
	if pl == nil {
		return nil
	}
	for _, t := range procs {
		if t.helper || t.img.zombie {
			continue
		}
		main := t.img.core.GetTc().GetCgSet()
		for _, th := range t.threads {
			id := th.core.GetThreadCore().GetCgSet()
			if id == 0 || id == main {
				continue
			}
			if err := pl.move(t.pid, th.tid, id); err != nil {
				return fmt.Errorf("%s: thread %d: %w", t.where(), th.vtid, err)
			}
		}
	}
	return nil
}
