package ns

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/nsthread"
	"github.com/ctcr/ctcr/criu/proc"
)

// Nested namespaces are those of a task below the tree's root that are
// not the root's own: a systemd service's PrivateNetwork= netns or
// PrivateTmp= mount namespace (nested_mounts.go), a
// nested container's UTS and IPC namespaces. Each is saved once, in
// images named by its id, and the engine records the same id in the
// task's core (TaskKobjIdsEntry): both take the namespace's inode
// number, which is unique on the host while the tasks are stopped, fits
// in 32 bits (proc inodes do) and is never 1 or 2, the ids of the host's
// and the tree's own namespaces.

// NestedKinds are the namespace kinds a task below the root may have of
// its own.
var NestedKinds = []string{"uts", "ipc", "net", "mnt"}

// NestedID is the image id of pid's namespace of kind.
func NestedID(pid int, kind string) (int, error) {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/%s", pid, kind), &st); err != nil {
		return 0, fmt.Errorf("task %d: %s namespace: %w", pid, kind, err)
	}
	return int(uint32(st.Ino)), nil
}

// DumpNested saves every UTS, IPC, network and mount namespace that a
// task of pids has and the root task does not share: host and domain
// names, SysV objects, lo and the veth pairs between saved namespaces
// with their addresses and routes, the mount table. A network namespace
// holding another device is refused by name.
func DumpNested(root int, pids []int, stage *images.Staging) error {
	sort.Ints(pids)
	for _, kind := range NestedKinds {
		rootID, err := NestedID(root, kind)
		if err != nil {
			return err
		}
		done := map[int]bool{rootID: true}
		for _, pid := range pids {
			id, err := NestedID(pid, kind)
			if err != nil {
				continue // a zombie has no namespaces
			}
			if done[id] {
				continue
			}
			done[id] = true
			switch kind {
			case "uts":
				err = dumpUTSAs(pid, stage, id)
			case "ipc":
				err = dumpNestedIPC(pid, stage, id)
			case "net":
				err = dumpNestedNet(pid, root, pids, stage, id)
			case "mnt":
				err = dumpNestedMounts(pid, root, stage, id)
			}
			if err != nil {
				return fmt.Errorf("task %d: its own %s namespace: %w", pid, kind, err)
			}
		}
	}
	return nil
}

// dumpNestedIPC saves a nested IPC namespace's SysV objects and its
// POSIX queues with their messages (posix-mq-ID.json). Descriptors on
// those queues are refused by the engine: it reopens queues in the
// root's namespace.
func dumpNestedIPC(pid int, stage *images.Staging, id int) error {
	if err := dumpIPCAs(pid, stage, id); err != nil {
		return err
	}
	return dumpMqueuesAs(pid, stage, nestedMqFile(id))
}

// dumpNestedNet saves a nested network namespace: lo, the veth pairs
// whose other end is in a namespace the checkpoint saves (this one,
// another nested one of the tree at root, whose tasks are pids, or the
// root's own), their addresses and routes; any other device, or a veth
// into the host's namespace, is refused by name. Its inet and unix
// sockets are the engine's: their entries name the namespace (ns_id),
// and the restore makes each in it, so abstract names are bound and
// reached there.
func dumpNestedNet(pid, root int, pids []int, stage *images.Staging, id int) error {
	spaces, err := netSpaces(root, pids, netRootSaved(root))
	if err != nil {
		return err
	}
	return dumpNetNS(pid, stage, id, spaces, true)
}

// RestoreNested fills the nested namespace of kind with image id, which
// the engine has just made for the restored task sc (host PID pid):
// names, SysV objects, the loopback device or mounts. logf (optional)
// hears what could not be kept (a mount's propagation).
func RestoreNested(sc Syscaller, pid int, kind string, id int, imgDir string, logf ...func(string, ...any)) error {
	say := func(string, ...any) {}
	if len(logf) > 0 && logf[0] != nil {
		say = logf[0]
	}
	var err error
	switch kind {
	case "uts":
		err = restoreUTSAs(sc, imgDir, id)
	case "ipc":
		err = restoreIPCAs(pid, imgDir, id)
		if _, serr := os.Stat(filepath.Join(imgDir, nestedMqFile(id))); err == nil && serr == nil {
			err = restoreMqueuesAs(pid, imgDir, nestedMqFile(id))
		}
	case "net":
		err = restoreNetAs(pid, imgDir, id)
	case "mnt":
		err = restoreNestedMounts(sc, pid, imgDir, id, say)
	default:
		err = fmt.Errorf("no such kind: %w", ErrUnsupported)
	}
	if err != nil {
		return fmt.Errorf("%s namespace %d: %w", kind, id, err)
	}
	return nil
}

// DumpTreeOwn saves the UTS, IPC and network namespaces that the root
// (host PID pid) of a plain process tree has of its own (own, from Own),
// which the restore makes anew for it: the names; SysV objects and POSIX
// queues; lo and the veth pairs into the tree's nested namespaces with
// their addresses and routes, any other device being refused by name,
// as in a nested one. A mount namespace
// of its own is accepted only with ctcr's mounts (the restore gives the
// root a copy of ctcr's). (A container's are DumpOwn's, with its mounts.)
func DumpTreeOwn(pid int, stage *images.Staging, own map[string]bool) error {
	if own["uts"] {
		if err := DumpUTS(pid, stage); err != nil {
			return fmt.Errorf("the root's own UTS namespace: %w", err)
		}
	}
	if own["ipc"] {
		if err := DumpIPC(pid, stage); err != nil {
			return fmt.Errorf("the root's own IPC namespace: %w", err)
		}
		if err := DumpMqueues(pid, stage); err != nil {
			return fmt.Errorf("the root's own IPC namespace: %w", err)
		}
	}
	if own["mnt"] {
		// The restored root gets a copy of ctcr's mount namespace: a
		// root whose own mounts differ from it is refused, not restored
		// without them.
		cs, err := proc.ReadMountinfo(os.Getpid())
		if err != nil {
			return fmt.Errorf("ctcr's mounts: %w", err)
		}
		rs, err := proc.ReadMountinfo(pid)
		if err != nil {
			return fmt.Errorf("mounts of task %d: %w", pid, err)
		}
		steps, err := nestedMountPlan(mountEntries(cs), mountEntries(rs))
		if err != nil {
			return fmt.Errorf("task %d: its own mount namespace: %w", pid, err)
		}
		if len(steps) > 0 {
			return fmt.Errorf("task %d: its own mount namespace differs from ctcr's (%s, %d change(s) in all), which a plain dump does not keep (checkpoint it as a container instead): %w", pid, steps[0], len(steps), ErrUnsupported)
		}
	}
	if own["net"] {
		spaces, err := netSpaces(pid, treePidList(pid), true)
		if err != nil {
			return err
		}
		if err := dumpNetNS(pid, stage, netNsID, spaces, true); err != nil {
			return fmt.Errorf("task %d: its own network namespace: %w", pid, err)
		}
	}
	return nil
}

// RestoreTreeOwn fills the namespaces DumpTreeOwn saved, which the
// engine made anew for the restored root sc (host PID pid) before it
// forks: each that the root is in of its own (the engine made those the
// image asks for) and whose images are there. (A root in ctcr's IPC
// namespace has ipcns-*-1.img too: the host's objects it uses, which
// RestoreHostSysV makes.)
func RestoreTreeOwn(sc Syscaller, pid int, imgDir string) error {
	exists := func(name string) bool {
		_, err := os.Stat(filepath.Join(imgDir, name))
		return err == nil
	}
	var own uint64
	for _, k := range []struct {
		kind string
		flag uint64
	}{{"uts", unix.CLONE_NEWUTS}, {"ipc", unix.CLONE_NEWIPC}, {"net", unix.CLONE_NEWNET}} {
		same, err := nsthread.Same(pid, k.kind)
		if err != nil {
			return err
		}
		if !same {
			own |= k.flag
		}
	}
	if own&unix.CLONE_NEWUTS != 0 && exists(images.Utsns.FileName(utsNsID)) {
		if err := RestoreUTS(sc, imgDir); err != nil {
			return err
		}
	}
	if own&unix.CLONE_NEWIPC != 0 && (exists(images.IpcShm.FileName(ipcNsID)) || exists(images.IpcSem.FileName(ipcNsID)) || exists(images.IpcMsg.FileName(ipcNsID))) {
		if err := RestoreIPC(pid, imgDir); err != nil {
			return err
		}
	}
	if own&unix.CLONE_NEWIPC != 0 && exists(PosixMqFile) {
		if err := RestoreMqueues(pid, imgDir); err != nil {
			return err
		}
	}
	if own&unix.CLONE_NEWNET != 0 && exists(images.Netdev.FileName(netNsID)) {
		if err := RestoreNet(pid, imgDir); err != nil {
			return err
		}
	}
	return nil
}
