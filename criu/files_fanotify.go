package criu

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fh"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fsnotify"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// fanotifies are fanotify groups with their marks, kept as CRIU keeps
// them (criu/fsnotify.c): the group's fanotify_init flags and event
// flags, and each mark's flags, mask and ignored mask, with the inode's
// file handle and path for an inode mark and the mount's path for a
// mount mark. The kernel prints all of it in the group's fdinfo:
//
//	fanotify flags:2 event-flags:8000
//	fanotify ino:986042 sdev:fe00000 mflags:0 mask:a ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:426098004acd27cd
//	fanotify mnt_id:1a mflags:0 mask:20 ignored_mask:0
//
// Restore makes the group with fanotify_init and adds every mark again
// with fanotify_mark by path, the ignored mask as a mark of its own
// (FAN_MARK_IGNORED_MASK). Events queued at dump are dropped, with a
// warning, as for inotify. A filesystem mark (FAN_MARK_FILESYSTEM, a
// line with sdev and no ino) has no place in CRIU's image and is
// refused, as is an inode mark whose file has no path and a mount mark
// on a mount ctcr does not see.
var fanotifies = fileKind{
	name:   "fanotify",
	fdType: fdinfo.FdTypes_FANOTIFY,
	dump:   dumpFanotify,
	open:   openFanotify,
}

// fanotifyFields parses the "key:hex" fields of a fanotify fdinfo line.
func fanotifyFields(line string) (map[string]uint64, []byte, error) {
	rest, _ := strings.CutPrefix(line, "fanotify ")
	out := map[string]uint64{}
	var handle []byte
	for _, kv := range strings.Fields(rest) {
		k, v, ok := strings.Cut(kv, ":")
		if !ok {
			return nil, nil, fmt.Errorf("fanotify line %q", line)
		}
		var err error
		if k == "f_handle" {
			if handle, err = hex.DecodeString(v); err != nil {
				return nil, nil, fmt.Errorf("fanotify line %q: f_handle: %w", line, err)
			}
			continue
		}
		n, err := strconv.ParseUint(v, 16, 64)
		if err != nil {
			return nil, nil, fmt.Errorf("fanotify line %q: %s: %w", line, k, err)
		}
		out[k] = n
	}
	return out, handle, nil
}

// mountPathByID returns the mount point of mount id in ctcr's mount
// namespace.
func mountPathByID(id uint64) (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	want := strconv.FormatUint(id, 10)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) >= 5 && fl[0] == want {
			return unescapeMount(fl[4]), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("mount %d is not in ctcr's mount namespace", id)
}

func dumpFanotify(d *fdDump) (*fdinfo.FileEntry, error) {
	if !isAnon(d, "fanotify") {
		return nil, nil
	}
	if f, err := d.file(); err == nil {
		// FIONREAD (SIOCINQ) counts the bytes of events queued.
		if n, err := unix.IoctlGetInt(int(f.Fd()), unix.SIOCINQ); err == nil && n > 0 {
			d.files.warnf("%s (%s): the %d bytes of events queued on it are dropped: they cannot be queued again", d.where, d.link, n)
		}
	}
	id := d.files.nextID()
	ffy := &fsnotify.FanotifyFileEntry{Id: proto.Uint32(id), Flags: proto.Uint32(d.flags), Fown: zeroFown()}
	group := false
	for _, l := range d.info.Extra {
		if !strings.HasPrefix(l, "fanotify ") {
			continue
		}
		kv, handle, err := fanotifyFields(l)
		if err != nil {
			return nil, fmt.Errorf("%s (%s): %w", d.where, d.link, err)
		}
		if fl, ok := kv["flags"]; ok {
			ffy.Faflags = proto.Uint32(uint32(fl))
			ffy.Evflags = proto.Uint32(uint32(kv["event-flags"]))
			group = true
			continue
		}
		m := &fsnotify.FanotifyMarkEntry{
			Id: proto.Uint32(id), Mflags: proto.Uint32(uint32(kv["mflags"])), Mask: proto.Uint32(uint32(kv["mask"])),
			IgnoredMask: proto.Uint32(uint32(kv["ignored_mask"])), SDev: proto.Uint32(0),
		}
		switch {
		case hasKey(kv, "mnt_id"):
			path, err := mountPathByID(kv["mnt_id"])
			if err != nil {
				return nil, d.unsupported(fmt.Sprintf("fanotify mount mark on mount %d: %v", kv["mnt_id"], err))
			}
			m.Type = fsnotify.MarkType_MOUNT.Enum()
			m.Me = &fsnotify.FanotifyMountMarkEntry{MntId: proto.Uint32(uint32(kv["mnt_id"])), Path: proto.String(path)}
		case hasKey(kv, "ino"):
			if len(handle) == 0 || len(handle) > 128 || uint64(len(handle)) != kv["fhandle-bytes"] {
				return nil, fmt.Errorf("%s (%s): fanotify line %q: file handle", d.where, d.link, l)
			}
			path, err := handlePath(d.pid, kernelDev(kv["sdev"]), int32(kv["fhandle-type"]), handle)
			if err != nil {
				return nil, fmt.Errorf("%s: fanotify mark on inode %d: %w", d.where, kv["ino"], err)
			}
			if strings.HasSuffix(path, " (deleted)") || !strings.HasPrefix(path, "/") {
				return nil, d.unsupported(fmt.Sprintf("fanotify mark on %s, which has no path", path))
			}
			m.Type = fsnotify.MarkType_INODE.Enum()
			m.SDev = proto.Uint32(uint32(kernelDev(kv["sdev"])))
			m.Ie = &fsnotify.FanotifyInodeMarkEntry{IIno: proto.Uint64(kv["ino"]), FHandle: &fh.FhEntry{
				Bytes: proto.Uint32(uint32(len(handle))), Type: proto.Uint32(uint32(kv["fhandle-type"])), Handle: handleWords(handle), Path: proto.String(path),
			}}
		case hasKey(kv, "sdev"):
			return nil, d.unsupported(fmt.Sprintf("fanotify filesystem mark on device %d:%d (FAN_MARK_FILESYSTEM)", unix.Major(kernelDev(kv["sdev"])), unix.Minor(kernelDev(kv["sdev"]))))
		default:
			return nil, fmt.Errorf("%s (%s): fanotify line %q: unknown mark", d.where, d.link, l)
		}
		ffy.Mark = append(ffy.Mark, m)
	}
	if !group {
		return nil, fmt.Errorf("%s (%s): no fanotify flags in its fdinfo", d.where, d.link)
	}
	return &fdinfo.FileEntry{Id: proto.Uint32(id), Ffy: ffy}, nil
}

func hasKey(m map[string]uint64, k string) bool {
	_, ok := m[k]
	return ok
}

func openFanotify(r *fileRestore, e *fdinfo.FileEntry) (*os.File, error) {
	ffy := e.GetFfy()
	if ffy == nil {
		return nil, corruptf("files.img", "fanotify id %d without its entry", e.GetId())
	}
	// FAN_CLOEXEC (ctcr's copy); FAN_NONBLOCK comes with the status flags.
	fd, err := unix.FanotifyInit(uint(ffy.GetFaflags())|unix.FAN_CLOEXEC, uint(ffy.GetEvflags()))
	if err != nil {
		return nil, fmt.Errorf("fanotify id %d: fanotify_init(%#x, %#x): %w", e.GetId(), ffy.GetFaflags(), ffy.GetEvflags(), err)
	}
	f, err := newFd(fd, "fanotify", ffy.GetFlags())
	if err != nil {
		return nil, fmt.Errorf("fanotify id %d: %w", e.GetId(), err)
	}
	holder := r.firstHolder(e.GetId())
	for _, m := range ffy.GetMark() {
		var path string
		flags := uint(unix.FAN_MARK_ADD) | uint(m.GetMflags())
		switch m.GetType() {
		case fsnotify.MarkType_INODE:
			path = m.GetIe().GetFHandle().GetPath()
		case fsnotify.MarkType_MOUNT:
			path = m.GetMe().GetPath()
			flags |= unix.FAN_MARK_MOUNT
		}
		if path == "" || m.GetMflags()&^unix.FAN_MARK_IGNORED_SURV_MODIFY != 0 {
			f.Close()
			return nil, corruptf("files.img", "fanotify id %d: mark type %v, flags %#x, path %q", e.GetId(), m.GetType(), m.GetMflags(), path)
		}
		if err := addFanotifyMark(holder, fd, flags, m, path); err != nil {
			f.Close()
			return nil, fmt.Errorf("fanotify id %d: %w", e.GetId(), err)
		}
	}
	return f, nil
}

// addFanotifyMark puts mark m (flags with FAN_MARK_ADD) on path, a path
// of the dump in the view of the task holding the group: resolved once
// in the view of the restored holder (host PID holder) with no symlink
// followed, as an inotify watch's (openWatched), and marked through the
// fd reached: never a path of ctcr's own view, nor one a planted symlink
// leads out of the tree's root. For a mount mark the fd's mount is the
// one marked.
func addFanotifyMark(holder, fd int, flags uint, m *fsnotify.FanotifyMarkEntry, path string) error {
	obj, err := openWatched(holder, path)
	if err != nil {
		return fmt.Errorf("mark %s: %w", path, err)
	}
	defer obj.Close()
	target := fmt.Sprintf("/proc/self/fd/%d", obj.Fd())
	if m.GetMask() != 0 {
		if err := unix.FanotifyMark(fd, flags, uint64(m.GetMask()), unix.AT_FDCWD, target); err != nil {
			return fmt.Errorf("mark %s (mask %#x): %w", path, m.GetMask(), err)
		}
	}
	if m.GetIgnoredMask() != 0 {
		if err := unix.FanotifyMark(fd, flags|unix.FAN_MARK_IGNORED_MASK, uint64(m.GetIgnoredMask()), unix.AT_FDCWD, target); err != nil {
			return fmt.Errorf("ignored mask of %s (%#x): %w", path, m.GetIgnoredMask(), err)
		}
	}
	return nil
}
