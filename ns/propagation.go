package ns

import (
	"fmt"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/mnt"
	"golang.org/x/sys/unix"
)

// Propagation of a nested mount namespace's mounts.
//
// A nested namespace starts, at restore as at its creation, as a copy
// made by unshare(CLONE_NEWNS) of the restored container's namespace,
// whose propagation RestoreMounts has set up before any task forked:
// each copy is a peer of the container mount it copies if that one is
// shared, and a slave of the same master. systemd then makes the copy
// a slave (MS_SLAVE|MS_REC) and mounts its own things; a plain
// `unshare -m` leaves the copies peers. The nested table records what
// came of it (shared_id, master_id, MS_UNBINDABLE), in the same global
// numbering as the container's table of the same dump.
//
// The restore (restoreNestedMounts):
//  1. clones, right after the unshare, each copy whose peer group or
//     master a nested mount needs (open_tree(OPEN_TREE_CLONE)): a
//     detached clone is a peer of what it clones and a slave of the same
//     master, and stays so whatever happens to the copy next;
//  2. makes every mount a slave, so that nothing the replay does
//     reaches the container's namespace, and replays the changes;
//  3. makes every mount private, and builds the recorded relations
//     again with planPropagationIn: a mount whose group is one of the
//     container's joins it through the clone (MOVE_MOUNT_SET_GROUP), a
//     slave of one of the container's groups joins it and becomes a
//     slave, groups of the nested namespace alone are made anew.
//
// A relation with a group that no mount of the container's namespace
// shows (the host's, or another nested namespace's) cannot be made
// again from here: the mount comes back private, and the restore log
// says so.

// propScope gives planPropagationIn the words of its messages: what
// the planned mounts are (inside), what their sources are (source), and
// how a step names one (anchor).
type propScope struct {
	inside string
	source string
	anchor string // names the source mount at mount point %s
}

var (
	containerScope = propScope{inside: "the container", source: "host mount", anchor: "host mount %s"}
	nestedScope    = propScope{inside: "the nested mount namespace", source: "mount of the container's namespace", anchor: "container's mount %s"}
)

// runPropSteps runs the steps of a propagation plan through call, in
// the task whose namespace holds the mounts; fds[k] is the descriptor
// (in that task) of plan.hostMounts[k], -1 where none could be had:
// the steps that need it are skipped (their mount stays private), the
// caller having said so.
func runPropSteps(call func(string, uintptr, ...any) (uint64, error), steps []propStep, fds []int) error {
	for _, s := range steps {
		var err error
		switch {
		case s.fromHost > 0:
			if fds[s.fromHost-1] < 0 {
				continue
			}
			_, err = call(s.String(), unix.SYS_MOVE_MOUNT, fds[s.fromHost-1], "", unix.AT_FDCWD, s.to, uint64(unix.MOVE_MOUNT_SET_GROUP|unix.MOVE_MOUNT_F_EMPTY_PATH))
		case s.fromMount != "":
			_, err = call(s.String(), unix.SYS_MOVE_MOUNT, unix.AT_FDCWD, s.fromMount, unix.AT_FDCWD, s.to, uint64(unix.MOVE_MOUNT_SET_GROUP))
		default:
			_, err = call(s.String(), unix.SYS_MOUNT, "none", s.to, "", s.change, nil)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// planNestedPropagation plans the propagation of the nested table's
// mounts, to be run once they all exist and are private. The plan's
// hostMounts are mount points of the container's table (base), to be
// cloned in the nested namespace right after the unshare, before
// anything changes there: the sources of the container's groups.
func planNestedPropagation(base, nested []*mnt.MntEntry) (*propPlan, error) {
	baseGroups := map[uint32]bool{}
	for _, b := range base {
		if g := b.GetSharedId(); g != 0 {
			baseGroups[g] = true
		}
	}
	hosts := make([]*hostMount, len(nested))
	var warnings []string
	for i, n := range nested {
		b := anchorFor(base, n)
		if b != nil {
			hosts[i] = &hostMount{mountpoint: b.GetMountpoint(), dev: b.GetRootDev(), prop: propagation{shared: b.GetSharedId(), master: b.GetMasterId()}}
		}
		if g := n.GetSharedId(); baseGroups[g] && (b == nil || b.GetSharedId() != g) {
			warnings = append(warnings, fmt.Sprintf("%s was a peer of the container's peer group %d, but no mount of that group in the container shows its root %s: it is in a group of its own now", n.GetMountpoint(), g, n.GetRoot()))
		}
	}
	plan, err := planPropagationIn(nested, hosts, nestedScope)
	if err != nil {
		return nil, err
	}
	plan.warnings = append(warnings, plan.warnings...)
	return plan, nil
}

// anchorFor picks the mount of the container's table (base) whose copy
// gives nested mount n its peer group or master: one of the same file
// system that shows all n shows (MOVE_MOUNT_SET_GROUP wants that) and
// that nothing covers at its mount point (the clone is made by path).
// Best is a member of n's own group, then of its master, then a slave
// of its master, then the mount n is a copy of.
func anchorFor(base []*mnt.MntEntry, n *mnt.MntEntry) *mnt.MntEntry {
	var cands []*mnt.MntEntry
	for _, b := range base {
		if b.GetRootDev() != n.GetRootDev() || !rootCovers(b.GetRoot(), n.GetRoot()) || covered(base, b) {
			continue
		}
		cands = append(cands, b)
	}
	for _, better := range []func(*mnt.MntEntry) bool{
		func(b *mnt.MntEntry) bool { return n.GetSharedId() != 0 && b.GetSharedId() == n.GetSharedId() },
		func(b *mnt.MntEntry) bool { return n.GetMasterId() != 0 && b.GetSharedId() == n.GetMasterId() },
		func(b *mnt.MntEntry) bool {
			return n.GetMasterId() != 0 && b.GetSharedId() == 0 && b.GetMasterId() == n.GetMasterId()
		},
		func(b *mnt.MntEntry) bool { return mountKey(b) == mountKey(n) },
	} {
		for _, b := range cands {
			if better(b) {
				return b
			}
		}
	}
	return nil
}

// rootCovers reports whether a mount whose root is outer shows the
// directory inner of the same file system.
func rootCovers(outer, inner string) bool {
	return outer == "/" || inner == outer || strings.HasPrefix(inner, strings.TrimSuffix(outer, "/")+"/")
}

// covered reports whether another mount of the table sits on b's mount
// point, on top of it.
func covered(table []*mnt.MntEntry, b *mnt.MntEntry) bool {
	for _, o := range table {
		if o != b && o.GetMountpoint() == b.GetMountpoint() && o.GetParentMntId() == b.GetMntId() {
			return true
		}
	}
	return false
}
