package main

import (
	"github.com/ctcr/ctcr/criu"
	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/ns"
)

// saveNestedNS makes a dump of a process tree keep the UTS, IPC, network
// and mount namespaces that tasks below the root made for themselves
// (unshare, or setns into a sibling's), as a container checkpoint does:
// each is saved once (ns.DumpNested) and the tasks' cores name it, so
// restore (restoreNestedNS) makes it again in the first task that had it
// and puts every other one into it.
//
// The UTS, IPC and network namespaces the root has of its own (not
// ctcr's), which restore makes anew for it, are saved too
// (ns.DumpTreeOwn): without them the restored root had the host's names
// and no SysV object in its new namespaces. A root in a mount namespace
// of its own comes back in a copy of ctcr's, as before.
func saveNestedNS(o *criu.DumpOptions) {
	o.NestedNS = true
	own, err := ns.Own(o.Pid)
	if err != nil {
		own = nil // the dump names the task that went away
	}
	// Descriptors on its POSIX queues and mappings of its SysV
	// segments are restorable now.
	o.SavesIPC = own["ipc"]
	extra := o.Extra
	o.Extra = func(root int, stage *images.Staging) error {
		if extra != nil {
			if err := extra(root, stage); err != nil {
				return err
			}
		}
		if err := ns.DumpTreeOwn(root, stage, own); err != nil {
			return err
		}
		return ns.DumpNested(root, treePids(root), stage)
	}
}

// restoreNestedNS fills the root's own namespaces before it forks, and
// each nested namespace the engine makes again.
func restoreNestedNS(o *criu.RestoreOptions) {
	prepare := o.PrepareRoot
	o.PrepareRoot = func(rt *criu.RootTask) error {
		if prepare != nil {
			if err := prepare(rt); err != nil {
				return err
			}
		}
		return ns.RestoreTreeOwn(rt, rt.Pid, o.Dir)
	}
	o.NestedNS = func(kind string, id int, t *criu.RootTask) error {
		return ns.RestoreNested(t, t.Pid, kind, id, o.Dir, o.Log)
	}
}

// treePids lists the tree at root, which the dump holds stopped: it
// cannot change while it is read.
func treePids(root int) []int {
	seen := map[int]bool{}
	var out []int
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, p)
		tids, _ := proc.Threads(p)
		for _, t := range tids {
			kids, _ := proc.Children(p, t)
			queue = append(queue, kids...)
		}
	}
	return out
}
