package criu

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fh"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fsnotify"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/internal/inroot"
)

// inotifies are inotify instances with their watches (criu/fsnotify.c).
// The kernel prints each watch with the file handle of the watched
// inode; dump opens the handle to learn the inode's path and keeps both
// in the watch's entry. Restore adds every watch again by path, with its
// mask, and makes the kernel hand out the same watch descriptor. Events
// queued at dump are not kept, as CRIU does not keep them.
//
// A watched inode whose path was removed (the handle opens on
// "/x (deleted)") lives on only while something holds it: a watch
// cannot be added again by path. If a task of the tree holds it open,
// the dump finds that fd by inode (once every fd is dumped, as the fd
// may come later) and keeps its file id beside the images,
//
//	inotify.json: {"INOTIFY ID": {"WD": FILE ID}}
//
// and restore adds the watch on the restored file (the unlinked file
// files_ghost.go makes again) through /proc/self/fd. A removed inode no
// fd of the tree holds is refused, naming the watch.
var inotifies = fileKind{
	name:   "inotify",
	fdType: fdinfo.FdTypes_INOTIFY,
	dump:   dumpInotify,
	open:   openInotify,
	finish: finishInotifies,
}

const inotifyFile = "inotify.json"

// inotifyRemoved is a watch on a removed inode whose holder is yet to
// be found.
type inotifyRemoved struct {
	id, wd   uint32
	ino, dev uint64
	where    string
}

type inotifyDumpState struct {
	removed []inotifyRemoved
	byFile  map[string]map[string]uint32
}

// finishInotifies finds, once every fd is dumped, the file each watch on
// a removed inode is held by, and writes inotify.json.
func finishInotifies(t *fileTable) error {
	st, ok := t.kinds["inotify"].(*inotifyDumpState)
	if !ok || len(st.removed) == 0 {
		return nil
	}
	for _, w := range st.removed {
		found := false
		for _, o := range t.opened {
			if o.ino == w.ino && o.dev == w.dev {
				k := strconv.Itoa(int(w.id))
				if st.byFile[k] == nil {
					st.byFile[k] = map[string]uint32{}
				}
				st.byFile[k][strconv.Itoa(int(w.wd))] = o.id
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("%s: inotify watch %d on removed inode %d, which no fd of the dumped tree holds: %w", w.where, w.wd, w.ino, ErrUnsupported)
		}
	}
	b, err := json.Marshal(st.byFile)
	if err != nil {
		return err
	}
	t.sidecars = append(t.sidecars, sidecar{name: inotifyFile, data: b})
	return nil
}

// inotifyHeldBy returns the file id inotify.json gives for watch wd of
// inotify id, or 0.
func (r *fileRestore) inotifyHeldBy(id, wd uint32) (uint32, error) {
	all, ok := r.state["inotify.json"].(map[string]map[string]uint32)
	if !ok {
		all = map[string]map[string]uint32{}
		b, err := os.ReadFile(r.cp.dir.Path(inotifyFile))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, err
		}
		if err == nil {
			if err := json.Unmarshal(b, &all); err != nil {
				return 0, corruptf(inotifyFile, "%v", err)
			}
		}
		r.state["inotify.json"] = all
	}
	return all[strconv.Itoa(int(id))][strconv.Itoa(int(wd))], nil
}

// inotifyWatch is one "inotify wd:" line of an inotify's fdinfo.
type inotifyWatch struct {
	wd, mask, ignored uint32
	ino, sdev         uint64
	handleType        int32
	handle            []byte
}

// parseInotifyWatch parses (all numbers hex)
//
//	inotify wd:1 ino:10e0 sdev:800013 mask:800afce ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:e0100000bf1d5a41
func parseInotifyWatch(line string) (inotifyWatch, error) {
	var w inotifyWatch
	rest, ok := strings.CutPrefix(line, "inotify ")
	if !ok {
		return w, fmt.Errorf("inotify line %q", line)
	}
	var nbytes uint64
	seen := 0
	for _, kv := range strings.Fields(rest) {
		k, v, _ := strings.Cut(kv, ":")
		var err error
		var n uint64
		if k != "f_handle" {
			if n, err = strconv.ParseUint(v, 16, 64); err != nil {
				return w, fmt.Errorf("inotify line %q: %s: %w", line, k, err)
			}
		}
		switch k {
		case "wd":
			w.wd = uint32(n)
		case "ino":
			w.ino = n
		case "sdev":
			w.sdev = n
		case "mask":
			w.mask = uint32(n)
		case "ignored_mask":
			w.ignored = uint32(n)
		case "fhandle-bytes":
			nbytes = n
		case "fhandle-type":
			w.handleType = int32(n)
		case "f_handle":
			if w.handle, err = hex.DecodeString(v); err != nil {
				return w, fmt.Errorf("inotify line %q: f_handle: %w", line, err)
			}
		default:
			continue
		}
		seen++
	}
	if seen < 8 || uint64(len(w.handle)) != nbytes || nbytes == 0 || nbytes > 128 {
		return w, fmt.Errorf("inotify line %q: fields or file handle missing", line)
	}
	return w, nil
}

// mountOf opens a mount of the filesystem with dev (user encoding) as
// task pid sees it, preferring one that shows the filesystem's root. The
// watch is the task's: the filesystem may be mounted only in its mount
// namespace (systemd's tmpfs on /run inside a container), so the mount
// is looked for in /proc/PID/mountinfo and opened through the task's
// root, with no symlink followed (a mount point the kernel reported has
// none). The fd is O_RDONLY: open_by_handle_at refuses an O_PATH one
// (EBADF).
func mountOf(pid int, dev uint64) (*os.File, string, error) {
	ms, err := proc.ReadMountinfo(pid)
	if err != nil {
		return nil, "", err
	}
	best := ""
	for _, m := range ms {
		if uint64(unix.Mkdev(m.Major, m.Minor)) != dev {
			continue
		}
		if m.Root == "/" {
			best = m.MountPoint
			break
		}
		if best == "" {
			best = m.MountPoint
		}
	}
	if best == "" {
		return nil, "", fmt.Errorf("no mount of device %d:%d in the mount namespace of task %d", unix.Major(dev), unix.Minor(dev), pid)
	}
	root, err := inroot.OfTask(pid)
	if err != nil {
		return nil, "", err
	}
	defer root.Close()
	f, err := root.OpenFile(best, unix.O_RDONLY|unix.O_DIRECTORY, 0, inroot.NoLinks)
	if err != nil {
		return nil, "", fmt.Errorf("open mount %s of task %d: %w", best, pid, err)
	}
	return f, best, nil
}

// unescapeMount undoes the octal escapes of mountinfo (\040 for space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// handlePath opens a file handle of the filesystem with dev, mounted
// in task pid's mount namespace, and returns the path the kernel gives
// the inode. For a task in ctcr's mount namespace that is a path of
// ctcr's; for one in another (a container's) it is rendered from that
// namespace's root, as reportedRoot expects at restore.
func handlePath(pid int, dev uint64, typ int32, handle []byte) (string, error) {
	mf, mnt, err := mountOf(pid, dev)
	if err != nil {
		return "", err
	}
	defer mf.Close()
	fd, err := unix.OpenByHandleAt(int(mf.Fd()), unix.NewFileHandle(typ, handle), unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return "", fmt.Errorf("open_by_handle_at on %s: %w", mnt, err)
	}
	defer unix.Close(fd)
	return os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
}

// handleWords packs a file handle into CRIU's fh_entry.handle: 64-bit
// words, at least FH_ENTRY_SIZES__min_entries (16) of them.
func handleWords(b []byte) []uint64 {
	n := max(16, (len(b)+7)/8)
	buf := make([]byte, 8*n)
	copy(buf, b)
	w := make([]uint64, n)
	for i := range w {
		w[i] = binary.LittleEndian.Uint64(buf[8*i:])
	}
	return w
}

func dumpInotify(d *fdDump) (*fdinfo.FileEntry, error) {
	if !isAnon(d, "inotify") {
		return nil, nil
	}
	if f, err := d.file(); err == nil {
		// FIONREAD (SIOCINQ) counts the bytes of events queued.
		if n, err := unix.IoctlGetInt(int(f.Fd()), unix.SIOCINQ); err == nil && n > 0 {
			d.files.warnf("%s (%s): the %d bytes of events queued on it are dropped: they cannot be queued again", d.where, d.link, n)
		}
	}
	id := d.files.nextID()
	ify := &fsnotify.InotifyFileEntry{Id: proto.Uint32(id), Flags: proto.Uint32(d.flags), Fown: zeroFown()}
	for _, l := range d.info.Extra {
		if !strings.HasPrefix(l, "inotify ") {
			continue
		}
		w, err := parseInotifyWatch(l)
		if err != nil {
			return nil, fmt.Errorf("%s (%s): %w", d.where, d.link, err)
		}
		path, err := handlePath(d.pid, kernelDev(w.sdev), w.handleType, w.handle)
		if errors.Is(err, unix.ESTALE) {
			// ext4 and others refuse a handle of an inode without
			// links (ESTALE): a removed inode, found by its holder.
			path, err = fmt.Sprintf("/inode %d (deleted)", w.ino), nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: inotify watch %d (inode %d): %w", d.where, w.wd, w.ino, err)
		}
		if !strings.HasPrefix(path, "/") {
			return nil, d.unsupported(fmt.Sprintf("inotify watch %d on %s, which has no path", w.wd, path))
		}
		if gone, ok := strings.CutSuffix(path, " (deleted)"); ok {
			st := d.files.kindState("inotify", func() any { return &inotifyDumpState{byFile: map[string]map[string]uint32{}} }).(*inotifyDumpState)
			st.removed = append(st.removed, inotifyRemoved{id: id, wd: w.wd, ino: w.ino, dev: kernelDev(w.sdev), where: d.where + " (" + d.link + ")"})
			path = gone
		}
		ify.Wd = append(ify.Wd, &fsnotify.InotifyWdEntry{
			Id: proto.Uint32(id), IIno: proto.Uint64(w.ino), Mask: proto.Uint32(w.mask), IgnoredMask: proto.Uint32(w.ignored),
			SDev: proto.Uint32(uint32(w.sdev)), Wd: proto.Uint32(w.wd),
			FHandle: &fh.FhEntry{Bytes: proto.Uint32(uint32(len(w.handle))), Type: proto.Uint32(uint32(w.handleType)),
				Handle: handleWords(w.handle), Path: proto.String(path)},
		})
	}
	return &fdinfo.FileEntry{Id: proto.Uint32(id), Ify: ify}, nil
}

// inotifyUserMask are the mask bits inotify_add_watch takes back; the
// kernel prints the mark's mask, which may hold others.
const inotifyUserMask = unix.IN_ALL_EVENTS | unix.IN_ONLYDIR | unix.IN_DONT_FOLLOW | unix.IN_EXCL_UNLINK | unix.IN_ONESHOT

func openInotify(r *fileRestore, e *fdinfo.FileEntry) (*os.File, error) {
	ify := e.GetIfy()
	if ify == nil {
		return nil, corruptf("files.img", "inotify id %d without its entry", e.GetId())
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify id %d: %w", e.GetId(), err)
	}
	f := os.NewFile(uintptr(fd), "inotify")
	wds := append(ify.Wd[:0:0], ify.Wd...)
	sort.Slice(wds, func(i, j int) bool { return wds[i].GetWd() < wds[j].GetWd() })
	removed := false
	for _, w := range wds {
		path := w.GetFHandle().GetPath()
		if path == "" {
			f.Close()
			return nil, fmt.Errorf("inotify id %d watch %d: no path in the image: %w", e.GetId(), w.GetWd(), ErrUnsupported)
		}
		held, err := r.inotifyHeldBy(e.GetId(), w.GetWd())
		if err != nil {
			f.Close()
			return nil, err
		}
		if held != 0 {
			// The inode was removed: watch the file restored for it.
			hf, err := r.get(held)
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("inotify id %d watch %d on removed %s: %w", e.GetId(), w.GetWd(), path, err)
			}
			err = addWatchOn(fd, hf, path, w.GetMask()&inotifyUserMask, int(w.GetWd()))
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("inotify id %d (removed %s): %w", e.GetId(), path, err)
			}
			removed = removed || w.GetWd() > 1
			continue
		}
		if err := addWatchAt(r.firstHolder(e.GetId()), fd, path, w.GetMask()&inotifyUserMask, int(w.GetWd())); err != nil {
			f.Close()
			return nil, fmt.Errorf("inotify id %d: %w", e.GetId(), err)
		}
		removed = removed || w.GetWd() > 1
	}
	if removed {
		// Each watch removed to reach a descriptor queued IN_IGNORED:
		// the task must not read those.
		buf := make([]byte, 64<<10)
		for {
			if _, err := unix.Read(fd, buf); err != nil {
				break
			}
		}
	}
	flags := ify.GetFlags()
	if flags&unix.O_NONBLOCK == 0 {
		cur, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		if err == nil {
			_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, cur&^unix.O_NONBLOCK)
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("inotify id %d: flags: %w", e.GetId(), err)
		}
	}
	if err := setFileFlags(f, flags); err != nil {
		f.Close()
		return nil, fmt.Errorf("inotify id %d: flags: %w", e.GetId(), err)
	}
	return f, nil
}

// addWatchAt adds a watch on path and gets it descriptor wd. The kernel
// hands out descriptors in increasing order: watches added and removed
// until the next one is wd (as CRIU does) get it there.
//
// The path is the one the kernel gave the watched inode at the dump, in
// the view of the task holding the inotify (ctcr's, a container's, or
// that of a mount namespace of its own below the root's), no symlink in
// it: it is resolved once, in the view of the restored task holding it
// (host PID holder), with no symlink followed (package inroot), and the
// watch is put on what that reached, through its fd: a symlink planted
// along the path since does not put a watch on a file of the host.
func addWatchAt(holder, fd int, path string, mask uint32, wd int) error {
	obj, err := openWatched(holder, path)
	if err != nil {
		return fmt.Errorf("watch %d: %w", wd, err)
	}
	defer obj.Close()
	return addWatchOn(fd, obj, path, mask, wd)
}

// addWatchOn adds watch wd on the object obj holds open (path names it
// in messages), through obj's /proc/self/fd link.
func addWatchOn(fd int, obj *os.File, path string, mask uint32, wd int) error {
	target := fmt.Sprintf("/proc/self/fd/%d", obj.Fd())
	for tries := 0; ; tries++ {
		// IN_DONT_FOLLOW would watch the /proc/self/fd link itself;
		// obj is already the object watched, symlink or not.
		got, err := unix.InotifyAddWatch(fd, target, mask&^unix.IN_DONT_FOLLOW)
		if err != nil {
			return fmt.Errorf("watch %d on %s (mask %#x): %w", wd, path, mask, err)
		}
		if got == wd {
			return nil
		}
		if got > wd || tries > 1<<20 {
			return fmt.Errorf("watch %d on %s: the kernel gave descriptor %d", wd, path, got)
		}
		if _, err := unix.InotifyRmWatch(fd, uint32(got)); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("watch %d on %s: remove descriptor %d: %w", wd, path, got, err)
		}
	}
}
