package ns

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	ipcdesc "github.com/checkpoint-restore/go-criu/v7/crit/images/ipc-desc"
	ipcmsg "github.com/checkpoint-restore/go-criu/v7/crit/images/ipc-msg"
	ipcsem "github.com/checkpoint-restore/go-criu/v7/crit/images/ipc-sem"
	ipcshm "github.com/checkpoint-restore/go-criu/v7/crit/images/ipc-shm"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/kernel"
)

// SysV IPC objects are read and recreated from a thread that joined the
// container's IPC namespace: /proc/sysvipc/* and the *_next_id sysctls
// answer for the namespace of the thread that reads them.

const ipcNsID = 1

// Caps on what an image may ask restore to allocate.
const (
	maxShmSize = 1 << 30
	maxMsgSize = 1 << 20
	maxNsems   = 32000
)

// sysvRows reads /proc/sysvipc/NAME into maps keyed by column header.
func sysvRows(name string) ([]map[string]uint64, error) {
	f, err := os.Open("/proc/sysvipc/" + name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return nil, nil
	}
	cols := strings.Fields(sc.Text())
	var out []map[string]uint64
	for sc.Scan() {
		v := strings.Fields(sc.Text())
		if len(v) < len(cols) {
			continue
		}
		row := map[string]uint64{}
		for i, c := range cols {
			base := 10
			if c == "perms" {
				base = 8 // printed with %o
			}
			n, err := strconv.ParseInt(v[i], base, 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/sysvipc/%s: %s %q", name, c, v[i])
			}
			row[c] = uint64(n)
		}
		out = append(out, row)
	}
	return out, sc.Err()
}

func desc(r map[string]uint64, id string) *ipcdesc.IpcDescEntry {
	return &ipcdesc.IpcDescEntry{
		Key: proto.Uint32(uint32(r["key"])), Uid: proto.Uint32(uint32(r["uid"])), Gid: proto.Uint32(uint32(r["gid"])),
		Cuid: proto.Uint32(uint32(r["cuid"])), Cgid: proto.Uint32(uint32(r["cgid"])), Mode: proto.Uint32(uint32(r["perms"]) & 0o777),
		Id: proto.Uint32(uint32(r[id])),
	}
}

// keepRows returns the rows keep accepts (all if keep is nil).
func keepRows(rows []map[string]uint64, keep func(map[string]uint64) bool) []map[string]uint64 {
	if keep == nil {
		return rows
	}
	var out []map[string]uint64
	for _, r := range rows {
		if keep(r) {
			out = append(out, r)
		}
	}
	return out
}

func pad(b []byte, to int) []byte {
	if n := len(b) % to; n != 0 {
		b = append(b, make([]byte, to-n)...)
	}
	return b
}

// DumpIPC records the SysV shared memory segments (with content),
// semaphore sets (with values) and message queues (with messages, read
// with MSG_COPY so the queue is left as it was) of pid's IPC namespace.
func DumpIPC(pid int, stage *images.Staging) error {
	return dumpIPCAs(pid, stage, ipcNsID)
}

// dumpIPCAs is DumpIPC into the images of namespace id.
func dumpIPCAs(pid int, stage *images.Staging, id int) error {
	return inNamespace(pid, "ipc", unix.CLONE_NEWIPC, func() error {
		if err := dumpShm(stage, id, nil); err != nil {
			return fmt.Errorf("SysV shared memory: %w", err)
		}
		if err := dumpSem(stage, id, nil); err != nil {
			return fmt.Errorf("SysV semaphores: %w", err)
		}
		if err := dumpMsg(stage, id, nil); err != nil {
			return fmt.Errorf("SysV message queues: %w", err)
		}
		return nil
	})
}

func writeImage(path string, k images.Kind, write func(w *images.Writer) error) error {
	f, err := images.CreateFile(path, os.O_WRONLY)
	if err != nil {
		return err
	}
	w, err := images.NewWriter(f, k)
	if err == nil {
		err = write(w)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// dumpShm saves the objects whose /proc/sysvipc row keep accepts
// (nil: all of them).
func dumpShm(stage *images.Staging, id int, keep func(map[string]uint64) bool) error {
	rows, err := sysvRows("shm")
	if err != nil {
		return err
	}
	rows = keepRows(rows, keep)
	return writeImage(stage.Path(images.IpcShm.FileName(id)), images.IpcShm, func(w *images.Writer) error {
		for _, r := range rows {
			id, size := int(r["shmid"]), int(r["size"])
			seg, err := unix.SysvShmAttach(id, 0, unix.SHM_RDONLY)
			if err != nil {
				return fmt.Errorf("attach segment %d: %w", id, err)
			}
			data := append([]byte(nil), seg[:min(size, len(seg))]...)
			unix.SysvShmDetach(seg)
			d := desc(r, "shmid")
			// Removed while attached: removed again after restore.
			d.Mode = proto.Uint32(d.GetMode() | uint32(r["perms"])&shmDest)
			if err := w.Write(&ipcshm.IpcShmEntry{Desc: d, Size: proto.Uint64(uint64(size))}); err != nil {
				return err
			}
			if err := w.WritePayload(pad(data, 4)); err != nil {
				return err
			}
		}
		return nil
	})
}

// dumpSem saves the objects whose /proc/sysvipc row keep accepts
// (nil: all of them).
func dumpSem(stage *images.Staging, id int, keep func(map[string]uint64) bool) error {
	rows, err := sysvRows("sem")
	if err != nil {
		return err
	}
	rows = keepRows(rows, keep)
	return writeImage(stage.Path(images.IpcSem.FileName(id)), images.IpcSem, func(w *images.Writer) error {
		for _, r := range rows {
			id, n := int(r["semid"]), int(r["nsems"])
			vals := make([]uint16, n)
			if n > 0 {
				if _, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), 0, kernel.GETALL, uintptr(unsafe.Pointer(&vals[0])), 0, 0); e != 0 {
					return fmt.Errorf("values of set %d: %w", id, e)
				}
			}
			if err := w.Write(&ipcsem.IpcSemEntry{Desc: desc(r, "semid"), Nsems: proto.Uint32(uint32(n))}); err != nil {
				return err
			}
			raw := make([]byte, 2*n)
			for i, v := range vals {
				raw[2*i], raw[2*i+1] = byte(v), byte(v>>8)
			}
			if err := w.WritePayload(pad(raw, 8)); err != nil {
				return err
			}
		}
		return nil
	})
}

// dumpMsg saves the objects whose /proc/sysvipc row keep accepts
// (nil: all of them).
func dumpMsg(stage *images.Staging, id int, keep func(map[string]uint64) bool) error {
	rows, err := sysvRows("msg")
	if err != nil {
		return err
	}
	rows = keepRows(rows, keep)
	return writeImage(stage.Path(images.IpcMsg.FileName(id)), images.IpcMsg, func(w *images.Writer) error {
		for _, r := range rows {
			id, qnum := int(r["msqid"]), int(r["qnum"])
			var ds kernel.MsqidDs
			if _, _, e := unix.Syscall(unix.SYS_MSGCTL, uintptr(id), unix.IPC_STAT, uintptr(unsafe.Pointer(&ds))); e != 0 {
				return fmt.Errorf("queue %d: %w", id, e)
			}
			if err := w.Write(&ipcmsg.IpcMsgEntry{Desc: desc(r, "msqid"), Qbytes: proto.Uint32(uint32(ds.Qbytes)), Qnum: proto.Uint32(uint32(qnum))}); err != nil {
				return err
			}
			buf := make([]byte, 8+maxMsgSize)
			for i := 0; i < qnum; i++ {
				n, _, e := unix.Syscall6(unix.SYS_MSGRCV, uintptr(id), uintptr(unsafe.Pointer(&buf[0])), maxMsgSize, uintptr(i), unix.IPC_NOWAIT|kernel.MSG_COPY, 0)
				if e != 0 {
					return fmt.Errorf("message %d of queue %d (MSG_COPY): %w", i, id, e)
				}
				mtype := uint64(buf[0]) | uint64(buf[1])<<8 | uint64(buf[2])<<16 | uint64(buf[3])<<24 | uint64(buf[4])<<32 | uint64(buf[5])<<40 | uint64(buf[6])<<48 | uint64(buf[7])<<56
				if err := w.Write(&ipcmsg.IpcMsg{Mtype: proto.Uint64(mtype), Msize: proto.Uint32(uint32(n))}); err != nil {
					return err
				}
				if err := w.WritePayload(pad(append([]byte(nil), buf[8:8+n]...), 8)); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// RestoreIPC recreates the SysV objects of the image in pid's (new) IPC
// namespace, each with its id, key, owner, mode and content.
func RestoreIPC(pid int, imgDir string) error {
	return restoreIPCAs(pid, imgDir, ipcNsID)
}

// restoreIPCAs is RestoreIPC from the images of namespace id.
func restoreIPCAs(pid int, imgDir string, id int) error {
	return inNamespace(pid, "ipc", unix.CLONE_NEWIPC, func() error {
		return restoreObjects(imgDir, id, "", [3]func(*ipcdesc.IpcDescEntry) error{})
	})
}

// restoreObjects recreates the segments, semaphore sets and message
// queues of the images in imgDir, each kind's prepare (if set) running
// before each object is made; where qualifies the kinds in errors.
func restoreObjects(imgDir string, id int, where string, prepare [3]func(*ipcdesc.IpcDescEntry) error) error {
	if err := restoreShm(filepath.Join(imgDir, images.IpcShm.FileName(id)), prepare[0]); err != nil {
		return fmt.Errorf("SysV shared memory%s: %w", where, err)
	}
	if err := restoreSem(filepath.Join(imgDir, images.IpcSem.FileName(id)), prepare[1]); err != nil {
		return fmt.Errorf("SysV semaphores%s: %w", where, err)
	}
	if err := restoreMsg(filepath.Join(imgDir, images.IpcMsg.FileName(id)), prepare[2]); err != nil {
		return fmt.Errorf("SysV message queues%s: %w", where, err)
	}
	return nil
}

// shmDest is the mode bit of a segment removed (IPC_RMID) while still
// attached: it goes once the last task detaches.
const shmDest = 0o1000

// RemoveDestroyedShm removes again, in pid's IPC namespace, the segments
// that were removed but still attached at the checkpoint; run it once
// the restored tasks have attached them.
func RemoveDestroyedShm(pid int, imgDir string) error {
	path := filepath.Join(imgDir, images.IpcShm.FileName(ipcNsID))
	r, done, err := openImage(path, images.IpcShm)
	if err != nil || r == nil {
		return err
	}
	defer done()
	var dest []uint32
	for {
		e := &ipcshm.IpcShmEntry{}
		if err := r.Next(e); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return err
		}
		if _, err := r.ReadPayload(int64((e.GetSize() + 3) &^ 3)); err != nil {
			return err
		}
		if e.GetDesc().GetMode()&shmDest != 0 {
			dest = append(dest, e.GetDesc().GetId())
		}
	}
	if len(dest) == 0 {
		return nil
	}
	return inNamespace(pid, "ipc", unix.CLONE_NEWIPC, func() error {
		for _, id := range dest {
			if _, _, errno := unix.Syscall(unix.SYS_SHMCTL, uintptr(id), unix.IPC_RMID, 0); errno != 0 {
				return fmt.Errorf("remove SysV shared memory segment %d again: %w", id, errno)
			}
		}
		return nil
	})
}

func prepareObject(prepare func(*ipcdesc.IpcDescEntry) error, d *ipcdesc.IpcDescEntry) error {
	if prepare == nil {
		return nil
	}
	return prepare(d)
}

func openImage(path string, k images.Kind) (*images.Reader, func(), error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, func() {}, nil
		}
		return nil, nil, err
	}
	r, err := images.NewReader(f, k, path)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return r, func() { f.Close() }, nil
}

// nextID makes the next object of kind ("shm", "sem", "msg") get id.
func nextID(kind string, id uint32) error {
	return os.WriteFile("/proc/sys/kernel/"+kind+"_next_id", []byte(strconv.FormatUint(uint64(id), 10)), 0)
}

func setOwner(nr uintptr, id int, d *ipcdesc.IpcDescEntry, set func(uid, gid, mode uint32) unsafe.Pointer) error {
	p := set(d.GetUid(), d.GetGid(), d.GetMode())
	if _, _, e := unix.Syscall(nr, uintptr(id), unix.IPC_SET, uintptr(p)); e != 0 {
		return fmt.Errorf("owner of %d: %w", id, e)
	}
	return nil
}

// restoreShm recreates the objects of the image at path; prepare
// (optional) runs before each is made, to make room for it or refuse.
func restoreShm(path string, prepare func(*ipcdesc.IpcDescEntry) error) error {
	r, done, err := openImage(path, images.IpcShm)
	if err != nil || r == nil {
		return err
	}
	defer done()
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
		if err := prepareObject(prepare, d); err != nil {
			return err
		}
		if err := nextID("shm", d.GetId()); err != nil {
			return err
		}
		id, _, errno := unix.Syscall(unix.SYS_SHMGET, uintptr(d.GetKey()), uintptr(size), uintptr(d.GetMode()|unix.IPC_CREAT|unix.IPC_EXCL))
		if errno != 0 || uint32(id) != d.GetId() {
			return fmt.Errorf("create segment %d (key %#x): id %d, %v", d.GetId(), d.GetKey(), id, errno)
		}
		seg, err := unix.SysvShmAttach(int(id), 0, 0)
		if err != nil {
			return fmt.Errorf("attach segment %d: %w", id, err)
		}
		copy(seg, data)
		unix.SysvShmDetach(seg)
		err = setOwner(unix.SYS_SHMCTL, int(id), d, func(uid, gid, mode uint32) unsafe.Pointer {
			var ds unix.SysvShmDesc
			unix.Syscall(unix.SYS_SHMCTL, id, unix.IPC_STAT, uintptr(unsafe.Pointer(&ds)))
			ds.Perm.Uid, ds.Perm.Gid, ds.Perm.Mode = uid, gid, mode
			return unsafe.Pointer(&ds)
		})
		if err != nil {
			return err
		}
	}
}

// restoreSem recreates the objects of the image at path; prepare
// (optional) runs before each is made, to make room for it or refuse.
func restoreSem(path string, prepare func(*ipcdesc.IpcDescEntry) error) error {
	r, done, err := openImage(path, images.IpcSem)
	if err != nil || r == nil {
		return err
	}
	defer done()
	for {
		e := &ipcsem.IpcSemEntry{}
		if err := r.Next(e); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		n := int(e.GetNsems())
		if n > maxNsems {
			return fmt.Errorf("%s: %d semaphores: %w", path, n, images.ErrCorrupt)
		}
		raw, err := r.ReadPayload(int64((2*n + 7) &^ 7))
		if err != nil {
			return err
		}
		d := e.GetDesc()
		if err := prepareObject(prepare, d); err != nil {
			return err
		}
		if err := nextID("sem", d.GetId()); err != nil {
			return err
		}
		id, _, errno := unix.Syscall(unix.SYS_SEMGET, uintptr(d.GetKey()), uintptr(n), uintptr(d.GetMode()|unix.IPC_CREAT|unix.IPC_EXCL))
		if errno != 0 || uint32(id) != d.GetId() {
			return fmt.Errorf("create set %d (key %#x): id %d, %v", d.GetId(), d.GetKey(), id, errno)
		}
		if n > 0 {
			vals := make([]uint16, n)
			for i := range vals {
				vals[i] = uint16(raw[2*i]) | uint16(raw[2*i+1])<<8
			}
			if _, _, errno := unix.Syscall6(unix.SYS_SEMCTL, id, 0, kernel.SETALL, uintptr(unsafe.Pointer(&vals[0])), 0, 0); errno != 0 {
				return fmt.Errorf("values of set %d: %w", id, errno)
			}
		}
		var ds [128]byte // struct semid64_ds: ipc_perm first
		if _, _, errno := unix.Syscall6(unix.SYS_SEMCTL, id, 0, unix.IPC_STAT, uintptr(unsafe.Pointer(&ds[0])), 0, 0); errno != 0 {
			return fmt.Errorf("set %d: %w", id, errno)
		}
		perm := (*unix.SysvIpcPerm)(unsafe.Pointer(&ds[0]))
		perm.Uid, perm.Gid, perm.Mode = d.GetUid(), d.GetGid(), d.GetMode()
		if _, _, errno := unix.Syscall6(unix.SYS_SEMCTL, id, 0, unix.IPC_SET, uintptr(unsafe.Pointer(&ds[0])), 0, 0); errno != 0 {
			return fmt.Errorf("owner of set %d: %w", id, errno)
		}
	}
}

// restoreMsg recreates the objects of the image at path; prepare
// (optional) runs before each is made, to make room for it or refuse.
func restoreMsg(path string, prepare func(*ipcdesc.IpcDescEntry) error) error {
	r, done, err := openImage(path, images.IpcMsg)
	if err != nil || r == nil {
		return err
	}
	defer done()
	for {
		e := &ipcmsg.IpcMsgEntry{}
		if err := r.Next(e); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		d := e.GetDesc()
		if err := prepareObject(prepare, d); err != nil {
			return err
		}
		if err := nextID("msg", d.GetId()); err != nil {
			return err
		}
		id, _, errno := unix.Syscall(unix.SYS_MSGGET, uintptr(d.GetKey()), uintptr(d.GetMode()|unix.IPC_CREAT|unix.IPC_EXCL), 0)
		if errno != 0 || uint32(id) != d.GetId() {
			return fmt.Errorf("create queue %d (key %#x): id %d, %v", d.GetId(), d.GetKey(), id, errno)
		}
		var ds kernel.MsqidDs
		unix.Syscall(unix.SYS_MSGCTL, id, unix.IPC_STAT, uintptr(unsafe.Pointer(&ds)))
		// Room for every message first, the queue's own limit after.
		ds.Qbytes = uint64(max(uint32(e.GetQbytes()), 1<<20))
		unix.Syscall(unix.SYS_MSGCTL, id, unix.IPC_SET, uintptr(unsafe.Pointer(&ds)))
		for i := uint32(0); i < e.GetQnum(); i++ {
			m := &ipcmsg.IpcMsg{}
			if err := r.Next(m); err != nil {
				return err
			}
			if m.GetMsize() > maxMsgSize {
				return fmt.Errorf("%s: message of %d bytes: %w", path, m.GetMsize(), images.ErrCorrupt)
			}
			data, err := r.ReadPayload(int64((m.GetMsize() + 7) &^ 7))
			if err != nil {
				return err
			}
			buf := bytes.NewBuffer(nil)
			t := m.GetMtype()
			for b := 0; b < 8; b++ {
				buf.WriteByte(byte(t >> (8 * b)))
			}
			buf.Write(data[:m.GetMsize()])
			msg := buf.Bytes()
			if _, _, errno := unix.Syscall6(unix.SYS_MSGSND, id, uintptr(unsafe.Pointer(&msg[0])), uintptr(m.GetMsize()), unix.IPC_NOWAIT, 0, 0); errno != 0 {
				return fmt.Errorf("message %d of queue %d: %w", i, id, errno)
			}
		}
		unix.Syscall(unix.SYS_MSGCTL, id, unix.IPC_STAT, uintptr(unsafe.Pointer(&ds)))
		ds.Qbytes = uint64(e.GetQbytes())
		ds.Perm.Uid, ds.Perm.Gid, ds.Perm.Mode = d.GetUid(), d.GetGid(), d.GetMode()
		if _, _, errno := unix.Syscall(unix.SYS_MSGCTL, id, unix.IPC_SET, uintptr(unsafe.Pointer(&ds))); errno != 0 {
			return fmt.Errorf("owner of queue %d: %w", id, errno)
		}
	}
}
