package criu

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/userns"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
)

// A tree in a user namespace of its own (a container with uidMappings)
// is restored into a new one with the same id maps. The dump writes the
// maps as the namespace has them, in CRIU's image:
//
//	userns-2.img: UsernsEntry{uid_map, gid_map: extents of
//	    {first: id inside, lower_first: id outside, count}}
//
// Task credentials are kept as the task sees them inside its namespace
// (as CRIU's are), since restore sets them from inside the new one.
// Everything else that carries an owner (files, IPC objects, socket
// files) is dumped and restored by ctcr from outside, with the host's
// ids, which the same maps turn into the same owners inside.
//
// Restore clones the root into the new user namespace together with
// the others, which it then owns, and writes the maps before the root
// does anything: the root has every capability inside, none outside.

// idMap is a user namespace's uid_map or gid_map.
type idMap []*userns.UidGidExtent

// readIDMap reads /proc/PID/uid_map or gid_map (name).
func readIDMap(pid int, name string) (idMap, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/%s", pid, name))
	if err != nil {
		return nil, fmt.Errorf("task %d: %w", pid, err)
	}
	defer f.Close()
	var m idMap
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var first, lower, count uint32
		if _, err := fmt.Sscan(sc.Text(), &first, &lower, &count); err != nil {
			return nil, fmt.Errorf("task %d: %s line %q: %w", pid, name, sc.Text(), err)
		}
		m = append(m, &userns.UidGidExtent{First: proto.Uint32(first), LowerFirst: proto.Uint32(lower), Count: proto.Uint32(count)})
	}
	return m, sc.Err()
}

// overflowID is what an id without a mapping reads as
// (/proc/sys/kernel/overflowuid).
const overflowID = 65534

// inside maps an id of the host to the namespace's; nil maps nothing.
func (m idMap) inside(host uint32) uint32 {
	if m == nil {
		return host
	}
	for _, e := range m {
		if host >= e.GetLowerFirst() && host-e.GetLowerFirst() < e.GetCount() {
			return e.GetFirst() + (host - e.GetLowerFirst())
		}
	}
	return overflowID
}

// text is the map as uid_map and gid_map are written.
func (m idMap) text() string {
	var b strings.Builder
	for _, e := range m {
		fmt.Fprintf(&b, "%d %d %d\n", e.GetFirst(), e.GetLowerFirst(), e.GetCount())
	}
	return b.String()
}

// valid checks a map restore would write: the kernel takes at most 340
// extents, none empty or wrapping around.
func (m idMap) valid() error {
	if len(m) == 0 || len(m) > 340 {
		return fmt.Errorf("%d extents", len(m))
	}
	for _, e := range m {
		if e.GetCount() == 0 || e.GetFirst()+e.GetCount() < e.GetFirst() || e.GetLowerFirst()+e.GetCount() < e.GetLowerFirst() {
			return fmt.Errorf("extent %d %d %d", e.GetFirst(), e.GetLowerFirst(), e.GetCount())
		}
	}
	return nil
}

// writeIDMaps gives task pid, just cloned into a new user namespace, the
// maps of the image in dir.
func writeIDMaps(pid int, dir string) error {
	name := images.Userns.FileName(nsOwn)
	e := &userns.UsernsEntry{}
	if err := images.ReadOne(fmt.Sprintf("%s/%s", dir, name), images.Userns, e); err != nil {
		return err
	}
	for _, m := range []struct {
		file string
		ids  idMap
	}{{"uid_map", e.GetUidMap()}, {"gid_map", e.GetGidMap()}} {
		if err := m.ids.valid(); err != nil {
			return corruptf(name, "%s: %v", m.file, err)
		}
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/%s", pid, m.file), []byte(m.ids.text()), 0); err != nil {
			return fmt.Errorf("task %d: write %s: %w", pid, m.file, err)
		}
	}
	return nil
}

// InsideIDs returns how the user namespace of the checkpoint in dir maps
// host uids and gids to its own (mount options such as tmpfs's uid=
// are written with host ids, and must be given from inside), or nil
// functions if the tree had none of its own.
func InsideIDs(dir string) (uid, gid func(uint32) uint32, err error) {
	e := &userns.UsernsEntry{}
	err = images.ReadOne(fmt.Sprintf("%s/%s", dir, images.Userns.FileName(nsOwn)), images.Userns, e)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	return idMap(e.GetUidMap()).inside, idMap(e.GetGidMap()).inside, nil
}

// outside maps an id of the namespace to the host's (ok false: none).
func (m idMap) outside(in uint32) (uint32, bool) {
	for _, e := range m {
		if in >= e.GetFirst() && in-e.GetFirst() < e.GetCount() {
			return e.GetLowerFirst() + (in - e.GetFirst()), true
		}
	}
	return 0, false
}

// AsInsideRoot makes the calling locked thread act with the host ids of
// the root of the checkpoint's user namespace in dir, keeping its
// capabilities: a file system mounted inside that namespace takes files
// of no other owner, and the namespace's sysctls (mqueue limits) let
// only its root write them. It does nothing for a tree without a user
// namespace of its own. The thread must be thrown away after.
func AsInsideRoot(dir string) error {
	e := &userns.UsernsEntry{}
	err := images.ReadOne(fmt.Sprintf("%s/%s", dir, images.Userns.FileName(nsOwn)), images.Userns, e)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	uid, ok := idMap(e.GetUidMap()).outside(0)
	gid, ok2 := idMap(e.GetGidMap()).outside(0)
	if !ok || !ok2 {
		return corruptf(images.Userns.FileName(nsOwn), "no mapping for root")
	}
	// Raw syscalls: they change this thread's credentials only. The
	// effective ids (and with them the file system ids) only: the saved
	// and real ids stay 0, so the capabilities stay permitted.
	keep := -1
	if _, _, errno := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(keep), uintptr(gid), uintptr(keep)); errno != 0 {
		return fmt.Errorf("setresgid: %w", errno)
	}
	if _, _, errno := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(keep), uintptr(uid), uintptr(keep)); errno != 0 {
		return fmt.Errorf("setresuid: %w", errno)
	}
	// Leaving euid 0 cleared the effective set; take it back.
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	data[0].Effective, data[1].Effective = data[0].Permitted, data[1].Permitted
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}
