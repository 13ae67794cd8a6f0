package ns

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	ipcdesc "github.com/checkpoint-restore/go-criu/v7/crit/images/ipc-desc"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/kernel"
	"github.com/ctcr/ctcr/criu/proc"
)

// A process tree that lives in the host's IPC namespace (PostgreSQL run
// on the host, say) may use SysV objects of that namespace, which other
// processes may use too. A container checkpoint saves its namespace
// whole; `dump` of such a tree saves only the objects the tree uses, in
// the same images (ipcshm-1.img, ipcsem-1.img, ipcmsg-1.img), and lists
// them in HostSysVFile. Restore makes each again, with its id, key,
// owner, mode and content, where it is absent; the tree's own object
// left behind when the dump ended the tree (SysV objects outlive their
// users) is replaced by the saved one; an object another process still
// uses is not touched, and the restore is refused naming it.
//
// Used by the tree means: a segment a task maps, or that a task created
// or last attached (shm_cpid, shm_lpid); a semaphore set in which a task
// made the last operation on a semaphore (sempid); a message queue a
// task last sent to or received from (msg_lspid, msg_lrpid).

// HostSysVFile is the list of the host's SysV objects a process
// checkpoint holds:
//
//	{"shm": [{"id": 32768, "key": 5432001}], "sem": [...], "msg": [...]}
const HostSysVFile = "host-sysv.json"

// HostObject names one SysV object.
type HostObject struct {
	ID  uint32 `json:"id"`
	Key uint32 `json:"key"`
}

// HostSysV lists the host's SysV objects a checkpoint holds.
type HostSysV struct {
	Shm []HostObject `json:"shm,omitempty"`
	Sem []HostObject `json:"sem,omitempty"`
	Msg []HostObject `json:"msg,omitempty"`
}

// DumpHostSysV saves the SysV objects of the host's IPC namespace that
// the tree rooted at root uses, and returns what it saved (nothing, and
// no file, when the tree uses none).
func DumpHostSysV(root int, stage *images.Staging) (*HostSysV, error) {
	tree := treePids(root)
	attached := map[uint64]bool{}
	for pid := range tree {
		maps, err := proc.Maps(pid)
		if err != nil {
			continue // gone: the dump notices
		}
		for _, m := range maps {
			if strings.HasPrefix(m.Path, "/SYSV") {
				attached[m.Inode] = true // the inode of a segment's file is its id
			}
		}
	}
	in := func(pid uint64) bool { return tree[int(pid)] }
	var saved HostSysV
	note := func(list *[]HostObject, idCol string) func(map[string]uint64) bool {
		return func(r map[string]uint64) bool {
			*list = append(*list, HostObject{ID: uint32(r[idCol]), Key: uint32(r["key"])})
			return true
		}
	}
	keepShm := func(r map[string]uint64) bool {
		return (attached[r["shmid"]] || in(r["cpid"]) || in(r["lpid"])) && note(&saved.Shm, "shmid")(r)
	}
	keepSem := func(r map[string]uint64) bool {
		for i := 0; i < int(r["nsems"]); i++ {
			pid, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(r["semid"]), uintptr(i), kernel.GETPID, 0, 0, 0)
			if e == 0 && tree[int(pid)] {
				return note(&saved.Sem, "semid")(r)
			}
		}
		return false
	}
	keepMsg := func(r map[string]uint64) bool {
		return (in(r["lspid"]) || in(r["lrpid"])) && note(&saved.Msg, "msqid")(r)
	}
	// Which objects first, so that a tree using none leaves no images.
	for _, k := range []struct {
		name string
		keep func(map[string]uint64) bool
	}{{"shm", keepShm}, {"sem", keepSem}, {"msg", keepMsg}} {
		rows, err := sysvRows(k.name)
		if err != nil {
			return nil, fmt.Errorf("host SysV objects: %w", err)
		}
		keepRows(rows, k.keep)
	}
	if len(saved.Shm)+len(saved.Sem)+len(saved.Msg) == 0 {
		return &saved, nil
	}
	// The same objects again (by id and key) as the images are written.
	ids := func(list []HostObject, idCol string) func(map[string]uint64) bool {
		return func(r map[string]uint64) bool {
			for _, o := range list {
				if uint64(o.ID) == r[idCol] && o.Key == uint32(r["key"]) {
					return true
				}
			}
			return false
		}
	}
	if err := dumpShm(stage, ipcNsID, ids(saved.Shm, "shmid")); err != nil {
		return nil, fmt.Errorf("SysV shared memory of the host: %w", err)
	}
	if err := dumpSem(stage, ipcNsID, ids(saved.Sem, "semid")); err != nil {
		return nil, fmt.Errorf("SysV semaphores of the host: %w", err)
	}
	if err := dumpMsg(stage, ipcNsID, ids(saved.Msg, "msqid")); err != nil {
		return nil, fmt.Errorf("SysV message queues of the host: %w", err)
	}
	b, err := json.MarshalIndent(&saved, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := stage.WriteFile(HostSysVFile, append(b, '\n')); err != nil {
		return nil, err
	}
	return &saved, nil
}

// treePids returns the tree rooted at root: root and its descendants.
func treePids(root int) map[int]bool {
	tree := map[int]bool{root: true}
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		// proc's readers: os.ReadDir and os.ReadFile cost some nine
		// system calls a file, for every thread of a process of 1,000.
		tids, _ := proc.Threads(pid)
		for _, tid := range tids {
			kids, err := proc.Children(pid, tid)
			if err != nil {
				continue
			}
			for _, c := range kids {
				if !tree[c] {
					tree[c] = true
					queue = append(queue, c)
				}
			}
		}
	}
	return tree
}

// RestoreHostSysV makes the host's SysV objects a process checkpoint in
// imgDir holds (see DumpHostSysV); it does nothing for a checkpoint
// without them. It runs once the restored root exists (root: its host
// PID, which the objects may name as their last user) and before the
// other tasks are made; the tasks attach the segments by id.
func RestoreHostSysV(imgDir string, root int) error {
	if _, err := os.Stat(filepath.Join(imgDir, HostSysVFile)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	restoredRoot = root
	return restoreObjects(imgDir, ipcNsID, " of the host", [3]func(*ipcdesc.IpcDescEntry) error{prepareHostShm, prepareHostSem, prepareHostMsg})
}

// RemoveDestroyedHostShm removes again the host's segments that were
// removed while still attached at the checkpoint, once the restored
// tasks attached them.
func RemoveDestroyedHostShm(imgDir string) error {
	if _, err := os.Stat(filepath.Join(imgDir, HostSysVFile)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return RemoveDestroyedShm(os.Getpid(), imgDir)
}

// restoredRoot is the host PID of the root being restored, which is not
// another user of the objects whatever they say.
var restoredRoot int

// alive reports whether pid runs (a zombie does not), other than the
// restored root.
func alive(pid int) bool {
	if pid == restoredRoot {
		return false
	}
	st, err := proc.ReadStat(pid, pid)
	return err == nil && st.State != 'Z' && st.State != 'X'
}

// keyTaken refuses an object whose key another object of the kind
// holds (get: shmget, semget or msgget with the key and no flags).
func keyTaken(what, rm string, d *ipcdesc.IpcDescEntry, get func(key uint32) (uintptr, unix.Errno)) error {
	if d.GetKey() == unix.IPC_PRIVATE {
		return nil
	}
	if id, e := get(d.GetKey()); e == 0 {
		return fmt.Errorf("%s key %#x of the checkpoint is held by id %d: remove that (ipcrm %s %d) to restore", what, d.GetKey(), id, rm, id)
	}
	return nil
}

func prepareHostShm(d *ipcdesc.IpcDescEntry) error {
	var ds unix.SysvShmDesc
	if _, _, e := unix.Syscall(unix.SYS_SHMCTL, uintptr(d.GetId()), unix.IPC_STAT, uintptr(unsafe.Pointer(&ds))); e != 0 {
		return keyTaken("SysV shared memory", "-m", d, func(key uint32) (uintptr, unix.Errno) {
			id, _, e := unix.Syscall(unix.SYS_SHMGET, uintptr(key), 0, 0)
			return id, e
		})
	}
	if ds.Perm.Key != int32(d.GetKey()) {
		return fmt.Errorf("SysV shared memory id %d is taken by a segment with key %#x, not the checkpoint's %#x: remove it (ipcrm -m %d) to restore", d.GetId(), uint32(ds.Perm.Key), d.GetKey(), d.GetId())
	}
	if ds.Nattch > 0 {
		return fmt.Errorf("SysV shared memory segment %d (key %#x) is attached by %d processes (the last: PID %d): stop them, or remove it (ipcrm -m %d), to restore", d.GetId(), d.GetKey(), ds.Nattch, ds.Lpid, d.GetId())
	}
	// The tree's own segment, which outlived it: made again from the image.
	if _, _, e := unix.Syscall(unix.SYS_SHMCTL, uintptr(d.GetId()), unix.IPC_RMID, 0); e != 0 {
		return fmt.Errorf("remove the old SysV shared memory segment %d: %w", d.GetId(), e)
	}
	return nil
}

func prepareHostSem(d *ipcdesc.IpcDescEntry) error {
	var ds [128]byte // struct semid64_ds (x86-64): ipc64_perm first, sem_nsems at 80
	if _, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(d.GetId()), 0, unix.IPC_STAT, uintptr(unsafe.Pointer(&ds[0])), 0, 0); e != 0 {
		return keyTaken("SysV semaphore set", "-s", d, func(key uint32) (uintptr, unix.Errno) {
			id, _, e := unix.Syscall(unix.SYS_SEMGET, uintptr(key), 0, 0)
			return id, e
		})
	}
	perm := (*unix.SysvIpcPerm)(unsafe.Pointer(&ds[0]))
	if perm.Key != int32(d.GetKey()) {
		return fmt.Errorf("SysV semaphore set id %d is taken by a set with key %#x, not the checkpoint's %#x: remove it (ipcrm -s %d) to restore", d.GetId(), uint32(perm.Key), d.GetKey(), d.GetId())
	}
	nsems := min(*(*uint64)(unsafe.Pointer(&ds[80])), maxNsems)
	for i := uint64(0); i < nsems; i++ {
		pid, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(d.GetId()), uintptr(i), kernel.GETPID, 0, 0, 0)
		if e == 0 && pid != 0 && alive(int(pid)) {
			return fmt.Errorf("SysV semaphore set %d (key %#x) was last used by PID %d, which runs: stop it, or remove the set (ipcrm -s %d), to restore", d.GetId(), d.GetKey(), pid, d.GetId())
		}
	}
	if _, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(d.GetId()), 0, unix.IPC_RMID, 0, 0, 0); e != 0 {
		return fmt.Errorf("remove the old SysV semaphore set %d: %w", d.GetId(), e)
	}
	return nil
}

func prepareHostMsg(d *ipcdesc.IpcDescEntry) error {
	var ds kernel.MsqidDs
	if _, _, e := unix.Syscall(unix.SYS_MSGCTL, uintptr(d.GetId()), unix.IPC_STAT, uintptr(unsafe.Pointer(&ds))); e != 0 {
		return keyTaken("SysV message queue", "-q", d, func(key uint32) (uintptr, unix.Errno) {
			id, _, e := unix.Syscall(unix.SYS_MSGGET, uintptr(key), 0, 0)
			return id, e
		})
	}
	if ds.Perm.Key != int32(d.GetKey()) {
		return fmt.Errorf("SysV message queue id %d is taken by a queue with key %#x, not the checkpoint's %#x: remove it (ipcrm -q %d) to restore", d.GetId(), uint32(ds.Perm.Key), d.GetKey(), d.GetId())
	}
	for _, pid := range []int32{ds.Lspid, ds.Lrpid} {
		if pid != 0 && alive(int(pid)) {
			return fmt.Errorf("SysV message queue %d (key %#x) was last used by PID %d, which runs: stop it, or remove the queue (ipcrm -q %d), to restore", d.GetId(), d.GetKey(), pid, d.GetId())
		}
	}
	if _, _, e := unix.Syscall(unix.SYS_MSGCTL, uintptr(d.GetId()), unix.IPC_RMID, 0); e != 0 {
		return fmt.Errorf("remove the old SysV message queue %d: %w", d.GetId(), e)
	}
	return nil
}
