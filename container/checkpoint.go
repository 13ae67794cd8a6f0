package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/cgroup"
	"github.com/ctcr/ctcr/criu"
	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/ns"
)

// CheckpointOptions says which container to checkpoint and where.
type CheckpointOptions struct {
	ID           string
	Pid          int // init PID, for containers of other runtimes
	Dir          string
	LeaveRunning bool
	FileLocks    bool // keep the file locks tasks hold (else a held lock fails the checkpoint)
	ExtUnixSk    bool // keep unix sockets whose peer is outside the container
	TCPClose     bool // established TCP connections come back as ended instead of failing the checkpoint
	// TCPEstablished moves connections with an end outside the container
	// too, holding their segments still until the restore.
	TCPEstablished bool
	// GhostLimit caps the data bytes of one unlinked file kept
	// (criu.DumpOptions.GhostLimit; 0: criu.DefaultGhostLimit).
	GhostLimit int64
	// Stage "dump": the container is suspended already and stays so.
	Stage         Stage
	FreezeTimeout time.Duration
	Log           func(format string, args ...any)
	// Progress, if set, hears the bytes of memory dumped so far.
	Progress func(bytes uint64)
	// PreCopy copies the memory while the container runs, before it is
	// frozen: the dump then copies only what was written since.
	PreCopy bool
	// PreCopyProgress, if set, hears the bytes pre-copied so far.
	PreCopyProgress func(bytes uint64)
	// Compress is how the pages images are stored (criu.CompressZstd).
	Compress string
	// Parent is the checkpoint directory of a pre-dump of the container
	// (PreDump): only the pages written since are copied, the rest is
	// taken from it at restore.
	Parent string
	// Without Dir, the checkpoint is a new generation in the
	// container's home (Home), which latest then names; Keep > 0
	// removes the oldest complete ones beyond Keep after it.
	Keep int
	// Force lets a checkpoint into a Dir that holds one already: the
	// new one is written beside it and replaces it once complete.
	Force bool
	// NoSnapshot: with LeaveRunning, copy the memory while the
	// container is stopped, not from copy-on-write snapshots.
	NoSnapshot bool
	// AfterCommit, if set, runs once the bundle in Dir is complete,
	// before the tasks are killed or let go; an error fails the
	// checkpoint and the container runs on (checkpoint -D - sends the
	// bundle here).
	AfterCommit func() error
}

// PreDump copies the memory of the running container into DIR/images
// (a pre-dump: DIR/images/pre-dump.json) and leaves its writes tracked
// for the next pre-dump or checkpoint with o.Parent = DIR. It neither
// freezes nor stops the container, but for the moment each process
// gets its write tracker.
func PreDump(o CheckpointOptions) (*criu.PreDumpStats, error) {
	unlock, err := Lock(o.ID, false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	c, err := Resolve(o.ID, o.Pid)
	if err != nil {
		return nil, err
	}
	if err := refusePlantedSubdirs(o.Dir); err != nil {
		return nil, err
	}
	prev, err := parentImages(o.Dir, o.Parent)
	if err != nil {
		return nil, err
	}
	st, err := criu.PreDump(criu.PreDumpOptions{Pid: c.Pid, Dir: ImagesDir(o.Dir), PrevDir: prev, Log: o.Log, Progress: o.Progress, Compress: o.Compress})
	if err != nil {
		return nil, fmt.Errorf("pre-dump of container %s: %w", o.ID, err)
	}
	return st, nil
}

// parentImages returns the images of the checkpoint directory parent as
// the images of dir see them (a relative path, so that both can move
// together), or "" for no parent.
func parentImages(dir, parent string) (string, error) {
	if parent == "" {
		return "", nil
	}
	from, err := filepath.Abs(ImagesDir(dir))
	if err != nil {
		return "", err
	}
	to, err := filepath.Abs(ImagesDir(parent))
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(to, images.PreDumpFile)); err != nil {
		return "", fmt.Errorf("%s holds no pre-dump (%s): %w", parent, filepath.Join(to, images.PreDumpFile), err)
	}
	return filepath.Rel(from, to)
}

func (o *CheckpointOptions) logf(format string, args ...any) {
	if o.Log != nil {
		o.Log(format, args...)
	}
}

// Checkpoint freezes the container, seizes every task, thaws it (the
// tasks stay stopped under ptrace), dumps the process tree and its
// namespaces into DIR, then kills the container (or lets it run on). If
// anything fails, the container is thawed and runs on untouched.
//
// Errors found before the checkpoint begins (an unknown container, one
// not running, its lock held, a Dir holding a checkpoint, a process
// without a cgroup of its own) are returned as they are; those of the
// checkpoint itself carry ErrAttempted.
func Checkpoint(o CheckpointOptions) (*Meta, *Stats, error) {
	return CheckpointTo(&o)
}

// CheckpointTo is Checkpoint that leaves in o.Dir the checkpoint it
// wrote (a new generation when o.Dir was empty).
func CheckpointTo(o *CheckpointOptions) (*Meta, *Stats, error) {
	criu.Begin() // a signal to ctcr rolls the whole checkpoint back
	defer criu.End()
	// Found before locking, so that an unknown id leaves no lock file.
	c0, err := Resolve(o.ID, o.Pid)
	if err != nil {
		return nil, nil, err
	}
	if c0.Runtime == "pid" {
		cg, err := cgroup.ForPid(c0.Pid)
		if err != nil {
			return nil, nil, err
		}
		if err := ownCgroup(c0, cg); err != nil {
			return nil, nil, err
		}
	}
	unlock, err := Lock(o.ID, false)
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	c, err := Resolve(o.ID, o.Pid)
	if err != nil {
		return nil, nil, err
	}
	cg, err := containerCgroups(c)
	if err != nil {
		return nil, nil, err
	}
	final, home := o.Dir, ""
	if o.Dir == "" {
		home = Home(o.ID)
		if o.Dir, err = newGeneration(home); err != nil {
			return nil, nil, attempted(err)
		}
		final = o.Dir
	} else if m, _, err := ReadBundle(o.Dir); err == nil {
		if !o.Force {
			return nil, nil, fmt.Errorf("%s already holds a checkpoint (of container %s, %s): give --force to replace it once the new one is complete, or choose another -D",
				o.Dir, m.ID, m.Created.Format(time.RFC3339))
		}
		// Written beside it and swapped in once whole: a failure keeps
		// the old checkpoint.
		if o.Dir, err = os.MkdirTemp(filepath.Dir(filepath.Clean(o.Dir)), "."+filepath.Base(o.Dir)+".ctcr-new-"); err != nil {
			return nil, nil, attempted(fmt.Errorf("checkpoint directory: %w", err))
		}
	}
	m, stats, err := checkpoint(*o, c, cg)
	if err != nil {
		if o.Dir != final || home != "" {
			os.RemoveAll(o.Dir)
		}
		o.Dir = final
		return nil, nil, attempted(err)
	}
	// The checkpoint is complete (and the container may be gone): what
	// fails from here on is a warning, never a loss of the checkpoint.
	if o.Dir != final {
		if err := replaceDir(o.Dir, final); err != nil {
			stats.Warnings = append(stats.Warnings, fmt.Sprintf("the new checkpoint stays in %s: %v", o.Dir, err))
			return m, stats, nil
		}
		o.Dir = final
	}
	if home != "" {
		if err := setLatest(home, filepath.Base(final)); err != nil {
			stats.Warnings = append(stats.Warnings, fmt.Sprintf("%s is complete, but %s still names the one before: %v", final, LatestLink, err))
			return m, stats, nil
		}
		removed, err := prune(home, o.Keep)
		for _, d := range removed {
			o.logf("removed the old checkpoint %s (--keep %d)", d, o.Keep)
		}
		if err != nil {
			stats.Warnings = append(stats.Warnings, fmt.Sprintf("--keep %d: %v", o.Keep, err))
		}
	}
	return m, stats, nil
}

// replaceDir puts the complete checkpoint tmp in place of the one in
// final: the old one is renamed away first, then removed.
// If it cannot, both stay where they were.
func replaceDir(tmp, final string) error {
	old := tmp + ".old"
	if err := os.Rename(final, old); err != nil {
		return fmt.Errorf("replace %s: %w", final, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		os.Rename(old, final)
		return fmt.Errorf("replace %s: %w", final, err)
	}
	if err := os.RemoveAll(old); err != nil {
		return fmt.Errorf("replace %s: the old checkpoint stays in %s: %w", final, old, err)
	}
	return nil
}

// ownCgroup refuses to checkpoint a process given by --pid that has no
// cgroup of its own: freezing the cgroup it shares (the root, a login
// session's) would stop other programs, or cannot be done at all.
func ownCgroup(c *Container, cg *cgroup.Set) error {
	how := fmt.Sprintf("move it into one before it starts children, e.g. mkdir /sys/fs/cgroup/freezer/NAME && echo %d > /sys/fs/cgroup/freezer/NAME/cgroup.procs (or start it with systemd-run --scope), then checkpoint --pid %d", c.Pid, c.Pid)
	if cg.V1["freezer"] == "/" || (cg.V1["freezer"] == "" && (cg.V2 == "/" || cg.V2 == "")) {
		return fmt.Errorf("process %d has no cgroup of its own (it is in the root cgroup, which cannot be frozen): %s", c.Pid, how)
	}
	pids, err := cg.Tasks()
	if err != nil {
		return fmt.Errorf("process %d: %w", c.Pid, err)
	}
	tree := treeOf(c.Pid)
	var others []int
	for _, p := range pids {
		// A process forked after the tree was read descends from it
		// all the same; one gone since is no other process.
		if !tree[p] && !descendsFrom(p, c.Pid, tree) {
			others = append(others, p)
		}
	}
	if len(others) > 0 {
		return fmt.Errorf("process %d has no cgroup of its own: its cgroup (%s) holds %d other processes (%v), which a checkpoint would freeze too: %s",
			c.Pid, filepath.Dir(cg.FreezerPath()), len(others), others[:min(len(others), 5)], how)
	}
	return nil
}

// descendsFrom reports whether process p, read from a cgroup after the
// tree was, is a child of a process of tree (or of init) now, following
// its parents up; a process that is gone counts as one, being no other
// process to freeze.
func descendsFrom(p, init int, tree map[int]bool) bool {
	for depth := 0; depth < 64; depth++ {
		st, err := proc.ReadStat(p, p)
		if err != nil {
			return errors.Is(err, os.ErrNotExist)
		}
		if st.PPid == init || tree[st.PPid] {
			return true
		}
		if st.PPid <= 1 {
			return false
		}
		p = st.PPid
	}
	return false
}

// treeOf returns the PIDs of the process tree rooted at init.
func treeOf(init int) map[int]bool {
	tree := map[int]bool{}
	queue := []int{init}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if tree[p] {
			continue
		}
		tree[p] = true
		tids, _ := proc.Threads(p)
		for _, t := range tids {
			kids, _ := proc.Children(p, t)
			queue = append(queue, kids...)
		}
	}
	return tree
}

// checkpoint is Checkpoint of running container c, whose cgroups are cg,
// into o.Dir, with its lock held.
func checkpoint(o CheckpointOptions, c *Container, cg *cgroup.Set) (_ *Meta, _ *Stats, err error) {
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("checkpoint directory: %w", err)
	}
	if err := refusePlantedSubdirs(o.Dir); err != nil {
		return nil, nil, err
	}
	// A failed checkpoint leaves nothing of its own in DIR.
	saved := filepath.Join(o.Dir, runtimeStateDir)
	if _, serr := os.Lstat(saved); errors.Is(serr, os.ErrNotExist) {
		defer func() {
			if err != nil {
				os.RemoveAll(saved)
			}
		}()
	}
	if err := saveRuntimeState(o.Dir, c); err != nil {
		return nil, nil, err
	}
	limits := cg.SaveLimits()
	own, err := ns.Own(c.Pid)
	if err != nil {
		return nil, nil, err
	}
	if o.FreezeTimeout == 0 {
		o.FreezeTimeout = 10 * time.Second
	}
	prev, err := parentImages(o.Dir, o.Parent)
	if err != nil {
		return nil, nil, err
	}
	if prev != "" && o.PreCopy {
		return nil, nil, fmt.Errorf("a checkpoint is on top of a pre-dump or of its own pre-copy, not both")
	}
	var pc *criu.PreCopy
	if o.PreCopy {
		if o.Stage == StageDump {
			return nil, nil, fmt.Errorf("container %s is suspended: it cannot be pre-copied while it runs", o.ID)
		}
		if pc, err = criu.StartPreCopy(criu.PreCopyOptions{Pid: c.Pid, Dir: ImagesDir(o.Dir), Log: o.Log, Progress: o.PreCopyProgress}); err != nil {
			return nil, nil, fmt.Errorf("pre-copy of container %s: %w", o.ID, err)
		}
		defer pc.Close()
	}
	freezeStart := time.Now()
	if o.Stage != StageDump {
		// Thaws the container if ctcr dies while it is frozen.
		guard, err := startThawGuard(cg.FreezerPath())
		if err != nil {
			return nil, nil, fmt.Errorf("container %s: %w", o.ID, err)
		}
		defer guard.release()
	}
	if o.Stage == StageDump {
		if !frozen(cg) {
			return nil, nil, fmt.Errorf("container %s is not suspended (%s): run the suspend stage first", o.ID, cg.FreezerPath())
		}
		o.LeaveRunning = true
	} else if err := freeze(cg, o.FreezeTimeout, o.logf); err != nil {
		return nil, nil, fmt.Errorf("container %s: %w", o.ID, err)
	}
	isFrozen := true
	defer func() {
		// A failed dump stage leaves the container as it found it:
		// suspended. Anything else runs on.
		if isFrozen && o.Stage != StageDump {
			cg.Thaw()
		}
	}()
	o.logf("container %s frozen (%s) in %v", o.ID, cg.FreezerPath(), time.Since(freezeStart))
	testKillWhileFrozen()
	subs, err := checkTasks(c.Pid, cg)
	if err != nil {
		return nil, nil, fmt.Errorf("container %s: %w", o.ID, err)
	}
	m := &Meta{ID: c.ID, Runtime: c.Runtime, Bundle: c.Bundle, Rootfs: c.Rootfs, StateDir: c.StateDir,
		Cgroups: cg, Limits: limits, SubCgroups: subs, InitPid: c.Pid, Created: time.Now().UTC(), CtcrVersion: Version}
	dopts := criu.DumpOptions{
		Pid: c.Pid, Dir: ImagesDir(o.Dir), LeaveRunning: o.LeaveRunning, NoSnapshot: o.NoSnapshot, Log: o.Log,
		// The bundle is complete before the tasks are ended: a ctcr
		// that dies while it ends them leaves a checkpoint that
		// restores, not a dead container and half a bundle. Its
		// stats.json, which the manifest leaves out, is written again
		// with the final figures below.
		AfterCommit: func() error {
			if err := WriteBundle(o.Dir, c, m, &Stats{}); err != nil {
				return err
			}
			if o.AfterCommit != nil {
				return o.AfterCommit()
			}
			return nil
		},
		FileLocks: o.FileLocks, ExtUnixSk: o.ExtUnixSk, TCPClose: o.TCPClose, TCPEstablished: o.TCPEstablished, Progress: o.Progress, SavesIPC: own["ipc"], Compress: o.Compress,
		GhostLimit: o.GhostLimit, Thaw: func() error { isFrozen = false; return cg.Thaw() },
		PreCopy:  pc,
		PrevDir:  prev,
		NestedNS: true,
		Extra: func(pid int, stage *images.Staging) error {
			if err := ns.DumpOwn(pid, stage, own, false); err != nil {
				return err
			}
			var pids []int
			for p := range treeOf(pid) {
				pids = append(pids, p)
			}
			return ns.DumpNested(pid, pids, stage)
		},
	}
	if o.Stage == StageDump {
		dopts.BeforeResume = func() error {
			// Tasks stopped under ptrace freeze at once and stay
			// frozen when let go. (Set only here: a dump with it
			// copies the memory while stopped, as a suspended
			// container's snapshot children could not be reaped.)
			return cg.Freeze(o.FreezeTimeout)
		}
	}
	st, err := criu.Dump(dopts)
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint of container %s: %w", o.ID, err)
	}
	stats := &Stats{Tasks: st.Tasks, PagesBytes: st.PagesBytes, FrozenSeconds: time.Since(freezeStart).Seconds() - (st.Total - st.Frozen).Seconds(),
		DumpSeconds: st.Total.Seconds(), MemorySeconds: st.Memory.Seconds(), SnapshotCopySeconds: st.SnapshotCopy.Seconds(), Warnings: st.Warnings}
	if stats.FrozenSeconds < st.Frozen.Seconds() {
		stats.FrozenSeconds = st.Frozen.Seconds()
	}
	if pc != nil {
		stats.PreCopyBytes, stats.PreCopyRounds, stats.PreCopySeconds = pc.Bytes, pc.Rounds, pc.Time.Seconds()
	}
	if err := WriteStats(o.Dir, stats); err != nil {
		return nil, nil, fmt.Errorf("write the figures in %s: %w", o.Dir, err)
	}
	return m, stats, nil
}

// runtimeNetns returns the network namespace the container's OCI config
// (dir/config.json) names by path, if it still exists: the runtime (or
// CNI) made and configured it, its interfaces and addresses outlive the
// container, and the restored tree joins it again. Without one, or if
// it is gone, the restore makes a new namespace with the loopback device
// of the checkpoint.
func runtimeNetns(dir string, logf func(string, ...any)) string {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return ""
	}
	var spec specs.Spec
	if json.Unmarshal(b, &spec) != nil || spec.Linux == nil {
		return ""
	}
	for _, n := range spec.Linux.Namespaces {
		if n.Type != specs.NetworkNamespace || n.Path == "" {
			continue
		}
		var st unix.Statfs_t
		if err := unix.Statfs(n.Path, &st); err != nil || (st.Type != unix.NSFS_MAGIC && st.Type != unix.PROC_SUPER_MAGIC) {
			if logf != nil {
				logf("the network namespace %s of the container's config is gone: the restore makes a new one", n.Path)
			}
			return ""
		}
		return n.Path
	}
	return ""
}

// vforkSettle bounds how long a container runs on, once frozen, for its
// tasks waiting in vfork to be let go.
const vforkSettle = 2 * time.Second

// freeze freezes the cgroup of a container for its dump. A thread that
// waits in vfork cannot be seized (ptrace cannot stop it there), and
// frozen, its child cannot let it go: the container is thawed until every
// such wait ends, and frozen again, for up to vforkSettle. posix_spawn's
// and Go's children exec at once, so a freeze rarely catches one.
func freeze(cg *cgroup.Set, timeout time.Duration, logf func(string, ...any)) error {
	deadline := time.Now().Add(vforkSettle)
	for {
		if err := cg.Freeze(timeout); err != nil {
			return err
		}
		pids, err := cg.Tasks()
		if err != nil {
			cg.Thaw()
			return err
		}
		var waiting []int
		for _, p := range pids {
			if criu.InVfork(p) != 0 {
				waiting = append(waiting, p)
			}
		}
		if len(waiting) == 0 {
			return nil
		}
		if err := cg.Thaw(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("task %d waits in vfork for its child (for over %v): %w", waiting[0], vforkSettle, criu.ErrUnsupported)
		}
		logf("tasks %v wait in vfork: the container runs on until their children exec or exit", waiting)
		for _, p := range waiting {
			for criu.InVfork(p) != 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
}

// checkTasks makes sure every task in the container's cgroup belongs to
// the tree of its init (a stray task would be left out of the dump),
// and returns the cgroups below the container's, with the tasks each
// holds.
func checkTasks(init int, cg *cgroup.Set) ([]*SubCgroup, error) {
	pids, err := cg.Tasks()
	if err != nil {
		return nil, err
	}
	tree := treeOf(init)
	// Tasks in cgroups below the container's come back in the same
	// ones, made again with their limits.
	byRel := map[string]*SubCgroup{}
	var subs []*SubCgroup
	for _, p := range pids {
		if !tree[p] {
			continue
		}
		set, err := cgroup.ForPid(p)
		if err != nil {
			continue // gone: the freezer holds the rest
		}
		rel, same, err := cg.Below(set)
		if err != nil {
			return nil, fmt.Errorf("task %d: %w", p, err)
		}
		if same {
			continue
		}
		st, err := proc.ReadStatus(p, p)
		if err != nil {
			continue
		}
		vpid := p
		if n := len(st.NSpid); n > 0 {
			vpid = st.NSpid[n-1]
		}
		b, _ := json.Marshal(rel)
		sub := byRel[string(b)]
		if sub == nil {
			sub = &SubCgroup{Rel: rel, Limits: set.SaveLimits()}
			byRel[string(b)] = sub
			subs = append(subs, sub)
		}
		sub.Pids = append(sub.Pids, vpid)
	}
	// The cgroups no task is in come back too, empty, with their limits:
	// systemd watches those of its units (cgroup.events) and moves
	// processes into them, which must then be held as before.
	for _, rel := range cg.Descendants() {
		b, _ := json.Marshal(rel)
		if byRel[string(b)] == nil {
			byRel[string(b)] = &SubCgroup{Rel: rel, Limits: cg.Join(rel).SaveLimits()}
			subs = append(subs, byRel[string(b)])
		}
	}
	var stray []string
	for _, p := range pids {
		if !tree[p] {
			comm := "?"
			if st, err := proc.ReadStat(p, p); err == nil {
				comm = st.Comm
			}
			stray = append(stray, fmt.Sprintf("%d (%s)", p, comm))
		}
	}
	if len(stray) > 0 {
		return nil, fmt.Errorf("tasks in its cgroup outside the tree of init %d: %s", init, strings.Join(stray, ", "))
	}
	return subs, nil
}

// RestoreOptions says which checkpoint to restore.
type RestoreOptions struct {
	ID string
	// Dir is a checkpoint, or a container's home of generations ("":
	// the home of ID); Name picks a generation in it (FindCheckpoint).
	Dir  string
	Name string
	// Stage "undump": the restored container is left suspended.
	Stage Stage
	// ExtUnixSk connects unix sockets whose peer was outside the
	// container to that peer's name again.
	ExtUnixSk bool
	// VdsoProxy: as criu.RestoreOptions.VdsoProxy.
	VdsoProxy bool
	Log       func(format string, args ...any)
	// Progress, if set, hears the bytes of memory restored so far.
	Progress func(bytes uint64)
}

// Restore recreates the container from its bundle: its cgroups with
// their limits, its namespaces and mounts, its process tree; then points
// the runtime's state at the new init. If anything fails, nothing of it
// is left. Errors found before it begins (no checkpoint, the container
// running, its lock held) are returned as they are; those of the restore
// itself carry ErrAttempted. o.Dir on return is the checkpoint used.
func Restore(o *RestoreOptions) (*criu.Restored, *Meta, error) {
	criu.Begin() // a signal to ctcr rolls the whole restore back
	defer criu.End()
	dir, err := FindCheckpoint(o.ID, o.Dir, o.Name)
	if err != nil {
		return nil, nil, err
	}
	o.Dir = dir
	// Every file of the bundle is checked before anything is created.
	warnings, err := VerifyBundle(o.Dir)
	if err != nil {
		return nil, nil, err
	}
	m, _, err := ReadBundle(o.Dir)
	if err != nil {
		return nil, nil, err
	}
	if m.ID != o.ID {
		return nil, nil, fmt.Errorf("%s holds a checkpoint of container %s, not %s", o.Dir, m.ID, o.ID)
	}
	// Locked once there is a checkpoint: a restore of an unknown id
	// leaves no lock file.
	unlock, err := Lock(o.ID, false)
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	lxcpath := ""
	if m.Runtime == "lxc" && m.StateDir != "" {
		lxcpath = filepath.Dir(m.StateDir) // where it was, with or without --lxcpath
	}
	if c, err := resolve(o.ID, 0, lxcpath); err == nil {
		return nil, nil, fmt.Errorf("container %s: init %d: %w", o.ID, c.Pid, ErrRunning)
	} else if !errors.Is(err, ErrNotRunning) && !errors.Is(err, ErrUnknown) {
		return nil, nil, err
	}
	if m.Runtime == "pid" && m.Cgroups != nil && alive(m.InitPid) {
		// A container given by --pid has no record until ctcr restores
		// it: its checkpointed init, still in its cgroup, is it running.
		if cg, err := cgroup.ForPid(m.InitPid); err == nil && cg.FreezerPath() == m.Cgroups.FreezerPath() {
			return nil, nil, fmt.Errorf("container %s: init %d: %w", o.ID, m.InitPid, ErrRunning)
		}
	}
	if m.Cgroups == nil {
		return nil, nil, fmt.Errorf("%s: no cgroups recorded", filepath.Join(o.Dir, "ctcr.json"))
	}
	r, err := restore(*o, m)
	if err != nil {
		return nil, nil, attempted(err)
	}
	r.Warnings = append(warnings, r.Warnings...)
	return r, m, nil
}

// restore is Restore of checkpoint m in o.Dir, with the lock held.
func restore(o RestoreOptions, m *Meta) (*criu.Restored, error) {
	undo, err := m.Cgroups.Create(m.Limits)
	if err != nil {
		return nil, err
	}
	for _, sub := range m.SubCgroups {
		undoSub, err := m.Cgroups.Join(sub.Rel).Create(sub.Limits)
		if err != nil {
			undo()
			return nil, err
		}
		undoParent := undo
		undo = func() { undoSub(); undoParent() }
	}
	imgDir := ImagesDir(o.Dir)
	nsFlags, err := criu.ImageNamespaces(imgDir)
	if err != nil {
		undo()
		return nil, err
	}
	exists := func(name string) bool {
		_, err := os.Stat(filepath.Join(imgDir, name))
		return err == nil
	}
	joinNet := ""
	if nsFlags&unix.CLONE_NEWNET != 0 {
		joinNet = runtimeNetns(o.Dir, o.Log)
	}
	rootPid := 0 // the restored init's host PID, once it exists
	r, err := criu.Restore(criu.RestoreOptions{
		Dir: imgDir, Log: o.Log, ExtUnixSk: o.ExtUnixSk, VdsoProxy: o.VdsoProxy, JoinNet: joinNet, Progress: o.Progress,
		// A container's init outlives this ctcr, its new parent.
		DropRootPdeathsig: true,
		NestedNS: func(kind string, id int, t *criu.RootTask) error {
			return ns.RestoreNested(t, t.Pid, kind, id, imgDir, o.Log)
		},
		PlaceTasks: func(pids map[int]int) error {
			if rootPid != 0 && exists(images.IpcShm.FileName(1)) {
				// Every task has attached its segments by now.
				if err := ns.RemoveDestroyedShm(rootPid, imgDir); err != nil {
					return err
				}
			}
			for _, sub := range m.SubCgroups {
				set := m.Cgroups.Join(sub.Rel)
				for _, vpid := range sub.Pids {
					if pid, ok := pids[vpid]; ok {
						if err := set.Enter(pid); err != nil {
							return err
						}
					}
				}
			}
			return nil
		},
		BeforeResume: func() error {
			if o.Stage == StageUndump {
				return m.Cgroups.Freeze(10 * time.Second)
			}
			return nil
		},
		PrepareRoot: func(rt *criu.RootTask) error {
			rootPid = rt.Pid
			// Before it forks: every task it creates inherits them.
			if err := m.Cgroups.Enter(rt.Pid); err != nil {
				return err
			}
			if err := ns.RestoreOwn(rt, rt.Pid, imgDir, o.Log); err != nil {
				return err
			}
			if nsFlags&unix.CLONE_NEWNET != 0 && joinNet == "" {
				if err := ns.RestoreNet(rt.Pid, imgDir); err != nil {
					return err
				}
			} else if joinNet != "" {
				// veth ends that were in the container's namespace and
				// whose peers are in nested ones are made in the
				// runtime's, when those are.
				if err := ns.NoteJoinedNet(rt.Pid, imgDir); err != nil {
					return err
				}
			}
			return nil
		},
	})
	if err != nil {
		undo()
		return nil, fmt.Errorf("restore of container %s: %w", o.ID, err)
	}
	if m.StateDir != "" || m.Runtime == "pid" {
		// The runtime's record may be gone (runc delete after a
		// --leave-running checkpoint): written back, the restored
		// container is the runtime's to list, exec, kill and delete.
		if made, err := recreateRuntimeState(o.Dir, m); err != nil && o.Log != nil {
			o.Log("%s state of %s not recreated (the runtime's tools will not see it): %v", m.Runtime, o.ID, err)
		} else if made && o.Log != nil {
			o.Log("%s state of %s recreated in %s", m.Runtime, o.ID, m.StateDir)
		}
		if err := UpdateRuntimeState(m.Runtime, m.ID, m.StateDir, r.Pid); err != nil && o.Log != nil {
			o.Log("%s state of %s not updated (the runtime's tools will not see it running): %v", m.Runtime, o.ID, err)
		}
	}
	return r, nil
}

// refusePlantedSubdirs refuses a bundle directory dir (given with -D, so
// possibly shared) in which images/ or runtime/, the directories ctcr
// makes there and writes into, is something else than a directory: a
// symlink would send the checkpoint's files wherever it points.
func refusePlantedSubdirs(dir string) error {
	for _, name := range []string{filepath.Base(ImagesDir(dir)), runtimeStateDir} {
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return fmt.Errorf("checkpoint directory: %w", err)
		}
		if !fi.IsDir() {
			what := "a file"
			if fi.Mode()&os.ModeSymlink != 0 {
				what = "a symlink"
			}
			return fmt.Errorf("checkpoint directory %s: %s is not a directory but %s: ctcr makes it itself and does not write through it; remove it or choose another -D", dir, name, what)
		}
	}
	return nil
}
