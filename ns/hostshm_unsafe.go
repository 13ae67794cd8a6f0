package ns

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"unsafe"

	ipcshm "github.com/checkpoint-restore/go-criu/v7/crit/images/ipc-shm"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/images"
)

// A process of the host's IPC namespace may attach SysV shared memory
// (PostgreSQL's interlock segment). A process dump cannot save the
// host's namespace, nor recreate it, but it can save the segments the
// tree attaches, by id and key, and bring them back at restore: created
// again with their id, key, owner and content when they are gone, given
// the checkpoint's content when the segment is still there and nobody
// has it attached (the dump ended the only processes that did), and
// refused by name when another process holds it or another segment took
// its id or key. They go in CRIU's ipcns-shm image, as a container's do.

// DumpHostShm saves the SysV shared memory segments ids of ctcr's own
// IPC namespace, with their content, into stage.
func DumpHostShm(ids []uint32, stage *images.Staging) error {
	keep := map[uint32]bool{}
	for _, id := range ids {
		keep[id] = true
	}
	if err := dumpShmOf(stage, keep); err != nil {
		return fmt.Errorf("SysV shared memory of the host's IPC namespace: %w", err)
	}
	return nil
}

// HasHostShm says whether the checkpoint in imgDir holds SysV segments.
func HasHostShm(imgDir string) bool {
	r, done, err := openImage(filepath.Join(imgDir, images.IpcShm.FileName(ipcNsID)), images.IpcShm)
	if r == nil || err != nil {
		return false
	}
	done()
	return true
}

// RestoreHostShm brings back, in ctcr's own IPC namespace, the segments
// DumpHostShm saved in imgDir, before the restored tasks attach them.
func RestoreHostShm(imgDir string) error {
	path := filepath.Join(imgDir, images.IpcShm.FileName(ipcNsID))
	r, done, err := openImage(path, images.IpcShm)
	if err != nil || r == nil {
		return err
	}
	defer done()
	rows, err := sysvRows("shm")
	if err != nil {
		return fmt.Errorf("SysV shared memory of the host: %w", err)
	}
	byID, byKey := map[uint32]map[string]uint64{}, map[uint32]map[string]uint64{}
	for _, row := range rows {
		byID[uint32(row["shmid"])] = row
		if row["key"] != 0 {
			byKey[uint32(row["key"])] = row
		}
	}
	for {
		e := &ipcshm.IpcShmEntry{}
		if err := r.Next(e); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		size := e.GetSize()
		if size > maxShmSize {
			return fmt.Errorf("%s: segment of %d bytes: %w", path, size, images.ErrCorrupt)
		}
		data, err := r.ReadPayload(int64((size + 3) &^ 3))
		if err != nil {
			return err
		}
		d := e.GetDesc()
		id, key := d.GetId(), d.GetKey()
		if row := byID[id]; row != nil {
			switch {
			case uint32(row["key"]) != key || row["size"] != size:
				return fmt.Errorf("SysV shared memory segment %d (key %#x, %d bytes) of the checkpoint: another segment (key %#x, %d bytes) has its id now: remove it (ipcrm -m %d) to restore",
					id, key, size, row["key"], row["size"], id)
			case row["nattch"] > 0:
				return fmt.Errorf("SysV shared memory segment %d (key %#x) of the checkpoint is attached by %d processes now (the last to attach: PID %d): stop them, or remove it (ipcrm -m %d), to restore",
					id, key, row["nattch"], row["lpid"], id)
			}
			// Still there, unattached since the dump ended its users:
			// it gets the checkpoint's content back.
			if err := fillShm(int(id), data, d.GetUid(), d.GetGid(), d.GetMode()); err != nil {
				return err
			}
			continue
		}
		if row := byKey[key]; key != 0 && row != nil {
			return fmt.Errorf("SysV shared memory segment %d (key %#x) of the checkpoint is gone and segment %d has its key now: remove it (ipcrm -m %d) to restore",
				id, key, row["shmid"], row["shmid"])
		}
		if err := nextID("shm", id); err != nil {
			return fmt.Errorf("SysV shared memory segment %d: %w", id, err)
		}
		got, _, errno := unix.Syscall(unix.SYS_SHMGET, uintptr(key), uintptr(size), uintptr(d.GetMode()&0o777|unix.IPC_CREAT|unix.IPC_EXCL))
		if errno != 0 {
			return fmt.Errorf("create SysV shared memory segment %d (key %#x): %w", id, key, errno)
		}
		if uint32(got) != id {
			// Another process made a segment in between: ours got
			// its next id.
			unix.Syscall(unix.SYS_SHMCTL, got, unix.IPC_RMID, 0)
			return fmt.Errorf("create SysV shared memory segment %d (key %#x): it got id %d (another segment was made meanwhile): restore again", id, key, got)
		}
		if err := fillShm(int(id), data, d.GetUid(), d.GetGid(), d.GetMode()); err != nil {
			unix.Syscall(unix.SYS_SHMCTL, got, unix.IPC_RMID, 0)
			return err
		}
	}
}

// fillShm writes data into segment id and gives it its owner and mode.
func fillShm(id int, data []byte, uid, gid, mode uint32) error {
	seg, err := unix.SysvShmAttach(id, 0, 0)
	if err != nil {
		return fmt.Errorf("attach SysV shared memory segment %d: %w", id, err)
	}
	copy(seg, data)
	unix.SysvShmDetach(seg)
	var ds unix.SysvShmDesc
	if _, _, e := unix.Syscall(unix.SYS_SHMCTL, uintptr(id), unix.IPC_STAT, uintptr(unsafe.Pointer(&ds))); e != 0 {
		return fmt.Errorf("SysV shared memory segment %d: %w", id, e)
	}
	ds.Perm.Uid, ds.Perm.Gid, ds.Perm.Mode = uid, gid, mode&0o777
	if _, _, e := unix.Syscall(unix.SYS_SHMCTL, uintptr(id), unix.IPC_SET, uintptr(unsafe.Pointer(&ds))); e != 0 {
		return fmt.Errorf("owner of SysV shared memory segment %d: %w", id, e)
	}
	return nil
}

// RemoveDestroyedHostShm removes again, in ctcr's own IPC namespace, the
// segments of imgDir that were removed while attached; run it once the
// restored tasks have attached them.
func RemoveDestroyedHostShm(imgDir string) error {
	dest, err := destroyedShm(imgDir)
	if err != nil {
		return err
	}
	return removeShm(dest)
}
