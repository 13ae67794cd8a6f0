package main

import (
	"fmt"
	"os"

	"github.com/ctcr/ctcr/criu"
	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/ns"
)

// saveHostSysV makes a dump of a tree that lives in ctcr's own IPC
// namespace (the host's) save the SysV objects of that namespace the
// tree uses (ns.DumpHostSysV), and restore makes them again
// (restoreHostSysV). A tree in an IPC namespace of its own is a
// container's business: its segments stay refused by name.
func saveHostSysV(o *criu.DumpOptions) {
	mine, err1 := os.Readlink("/proc/self/ns/ipc")
	theirs, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/ipc", o.Pid))
	if err1 != nil || err2 != nil || mine != theirs {
		return
	}
	o.HostSysV = true
	extra := o.Extra
	o.Extra = func(root int, stage *images.Staging) error {
		if extra != nil {
			if err := extra(root, stage); err != nil {
				return err
			}
		}
		saved, err := ns.DumpHostSysV(root, stage)
		if err != nil {
			return err
		}
		if n := len(saved.Shm) + len(saved.Sem) + len(saved.Msg); n > 0 && o.Log != nil {
			o.Log("saved %d SysV objects of the host's IPC namespace the tree uses: %d segments, %d semaphore sets, %d message queues",
				n, len(saved.Shm), len(saved.Sem), len(saved.Msg))
		}
		return nil
	}
}

// restoreHostSysV has restore make again the host's SysV objects a
// process checkpoint holds, once its images are read and checked, before
// its tasks (which attach the segments) are made; afterRestoreHostSysV
// removes again those that were removed while attached.
func restoreHostSysV(o *criu.RestoreOptions) {
	prepare := o.PrepareRoot
	o.PrepareRoot = func(rt *criu.RootTask) error {
		if prepare != nil {
			if err := prepare(rt); err != nil {
				return err
			}
		}
		return ns.RestoreHostSysV(o.Dir, rt.Pid)
	}
}

func afterRestoreHostSysV(dir string) error { return ns.RemoveDestroyedHostShm(dir) }
