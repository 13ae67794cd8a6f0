package main

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu"
	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/ns"
)

// A process dump of a tree in the host's IPC namespace that attaches
// SysV shared memory (PostgreSQL's interlock segment) saves those
// segments and a restore brings them back (ns.DumpHostShm,
// ns.RestoreHostShm). The host's semaphores and message queues are not
// saved: nothing shows which of them a process uses.

// hostShmIDs returns the SysV shared memory segments the tree rooted at
// pid has attached, if the tree is in ctcr's own IPC namespace (a tree
// in another is a container's: checkpoint saves its namespace whole).
func hostShmIDs(pid int) ([]uint32, error) {
	self, err := os.Readlink("/proc/self/ns/ipc")
	if err != nil {
		return nil, err
	}
	seen := map[uint32]bool{}
	var ids []uint32
	queue, done := []int{pid}, map[int]bool{}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if done[p] {
			continue
		}
		done[p] = true
		if n, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/ipc", p)); err != nil || n != self {
			continue // gone, or in an IPC namespace of its own
		}
		maps, err := proc.Maps(p)
		if err != nil {
			continue // gone since it was listed
		}
		for _, m := range maps {
			if strings.HasPrefix(m.Path, "/SYSV") && !seen[uint32(m.Inode)] {
				seen[uint32(m.Inode)] = true
				ids = append(ids, uint32(m.Inode)) // the segment's inode is its id
			}
		}
		tids, _ := proc.Threads(p)
		for _, t := range tids {
			kids, _ := proc.Children(p, t)
			queue = append(queue, kids...)
		}
	}
	return ids, nil
}

// saveHostShm sets o up to save the host SysV segments its tree
// attaches, if any: their ids are read again once the tree is stopped.
func saveHostShm(o *criu.DumpOptions) error {
	ids, err := hostShmIDs(o.Pid)
	if err != nil || len(ids) == 0 {
		return err
	}
	o.SavesIPC = true
	o.Extra = func(root int, stage *images.Staging) error {
		ids, err := hostShmIDs(root)
		if err != nil {
			return err
		}
		return ns.DumpHostShm(ids, stage)
	}
	return nil
}

// restoreHostShm sets o up to bring back the host SysV segments the
// checkpoint in o.Dir saved, before the tasks attach them, and to remove
// again those that were removed while attached.
func restoreHostShm(o *criu.RestoreOptions) error {
	if !ns.HasHostShm(o.Dir) {
		return nil
	}
	flags, err := criu.ImageNamespaces(o.Dir)
	if err != nil || flags&unix.CLONE_NEWIPC != 0 {
		return err // a tree with an IPC namespace of its own is a container's
	}
	made := false
	o.PrepareRoot = func(*criu.RootTask) error {
		made = true
		return ns.RestoreHostShm(o.Dir)
	}
	o.PlaceTasks = func(map[int]int) error {
		if !made {
			return nil
		}
		return ns.RemoveDestroyedHostShm(o.Dir)
	}
	return nil
}
