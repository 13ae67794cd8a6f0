package criu

import (
	"fmt"
	"os"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	nsimg "github.com/checkpoint-restore/go-criu/v7/crit/images/ns"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
)

// nsFiles are fds on namespace files (/proc/PID/ns/KIND, links such as
// "net:[4026531840]"), as setns takes them. ctcr restores a tree either
// in its own namespaces or in ctcr's (namespaces.go), and every task of
// the tree shares the root's: so such an fd is kept only if it names a
// namespace of the tree's root, in CRIU's ns-file entry (ns_id: the
// namespace's id in the ids images, ns_cflags: its CLONE_NEW* flag).
// Restore opens the same kind of namespace file of the restored root.
//
// An fd on a nested namespace, a UTS, IPC, network or mount namespace
// a task below the root has of its own (systemd keeps the network
// namespace of a PrivateNetwork= service in a socket pair, to join
// later units into it), is kept with the id the task's core gives that
// namespace (its inode number, never nsHost or nsOwn); restore opens
// the namespace file of a restored task with that id. An fd on any
// other namespace (one no task of the tree is in) is refused, naming
// the namespace.
var nsFiles = fileKind{
	name:   "namespace file",
	fdType: fdinfo.FdTypes_NS,
	dump:   dumpNsFile,
	open:   openNsFile,
}

// nsKindOf returns the kind ("net", "pid", ...) and clone flag of a
// namespace file link "KIND:[INODE]".
func nsKindOf(link string) (string, uint64, bool) {
	name, rest, ok := strings.Cut(link, ":[")
	if !ok || !strings.HasSuffix(rest, "]") {
		return "", 0, false
	}
	for _, k := range nsKinds {
		if k.name == name {
			return k.name, k.flag, true
		}
	}
	return "", 0, false
}

// anyTreeTask returns the host PID of some task of the tree: all are in
// the root's namespaces.
func anyTreeTask(t *fileTable) int {
	for host := range t.vpidOf {
		return host
	}
	return 0
}

func dumpNsFile(d *fdDump) (*fdinfo.FileEntry, error) {
	kind, flag, ok := nsKindOf(d.link)
	if !ok {
		return nil, nil
	}
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", d.pid, d.fd), &st); err != nil {
		return nil, fmt.Errorf("%s (%s): %w", d.where, d.link, err)
	}
	// Every task of a tree is in its root's namespaces (the dump refuses
	// others): compare with the task's own, which are the root's.
	pid := d.pid
	if d.files.inFlight {
		pid = anyTreeTask(d.files) // the fd is ctcr's: compare with the tree's
	}
	var own unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/%s", pid, kind), &own); err != nil {
		return nil, fmt.Errorf("%s (%s): task %d's %s namespace: %w", d.where, d.link, pid, kind, err)
	}
	if own.Ino != st.Ino || own.Dev != st.Dev {
		if !nestedNsKind(kind) || !treeTaskIn(d.files, kind, st) {
			return nil, d.unsupported(fmt.Sprintf("fd on %s namespace %s, which the dumped tree is not in", kind, d.link))
		}
		id := d.files.nextID()
		return &fdinfo.FileEntry{Id: proto.Uint32(id), Nsf: &nsimg.NsFileEntry{
			Id: proto.Uint32(id), NsId: proto.Uint32(uint32(st.Ino)), NsCflag: proto.Uint32(uint32(flag)), Flags: proto.Uint32(d.flags),
		}}, nil
	}
	nsID := uint32(nsHost)
	var mine unix.Stat_t
	if err := unix.Stat("/proc/self/ns/"+kind, &mine); err == nil && (mine.Ino != own.Ino || mine.Dev != own.Dev) {
		nsID = nsOwn
	}
	id := d.files.nextID()
	return &fdinfo.FileEntry{Id: proto.Uint32(id), Nsf: &nsimg.NsFileEntry{
		Id: proto.Uint32(id), NsId: proto.Uint32(nsID), NsCflag: proto.Uint32(uint32(flag)), Flags: proto.Uint32(d.flags),
	}}, nil
}

func openNsFile(r *fileRestore, e *fdinfo.FileEntry) (*os.File, error) {
	nf := e.GetNsf()
	if nf == nil {
		return nil, corruptf("files.img", "namespace file id %d without its entry", e.GetId())
	}
	kind := ""
	for _, k := range nsKinds {
		if uint64(nf.GetNsCflag()) == k.flag {
			kind = k.name
		}
	}
	if kind == "" {
		return nil, corruptf("files.img", "namespace file id %d of unknown kind %#x", e.GetId(), nf.GetNsCflag())
	}
	// The restored root is in the tree's namespaces, whichever they are
	// (its own, or ctcr's for an id of nsHost).
	path := fmt.Sprintf("/proc/%d/ns/%s", r.rootPid, kind)
	if nf.GetNsId() != nsHost && nf.GetNsId() != nsOwn {
		host, err := r.nestedNsHolder(kind, nf.GetNsId())
		if err != nil {
			return nil, fmt.Errorf("namespace file id %d: %w", e.GetId(), err)
		}
		path = fmt.Sprintf("/proc/%d/ns/%s", host, kind)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("namespace file id %d (%s namespace): open %s: %w", e.GetId(), kind, path, err)
	}
	return f, nil
}

// nestedNsKind says whether a task below the root may have a namespace
// of kind of its own (nestedKinds).
func nestedNsKind(kind string) bool {
	for _, k := range nestedKinds {
		if k.name == kind {
			return true
		}
	}
	return false
}

// treeTaskIn reports whether a task of the tree is in the namespace of
// kind that st (a stat of its namespace file) is: its core then names it
// and the nested namespace is saved.
func treeTaskIn(t *fileTable, kind string, st unix.Stat_t) bool {
	for host := range t.vpidOf {
		var their unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/%s", host, kind), &their) == nil && their.Ino == st.Ino && their.Dev == st.Dev {
			return true
		}
	}
	return false
}

// nestedNsHolder returns the host PID of a restored task whose core
// gives its namespace of kind the id want.
func (r *fileRestore) nestedNsHolder(kind string, want uint32) (int, error) {
	for _, k := range nestedKinds {
		if k.name != kind {
			continue
		}
		for _, ti := range r.cp.tasks {
			if ti.core == nil || k.id(ti.core.GetIds()) != want {
				continue
			}
			if host, ok := r.hostPid(int(ti.pstree.GetPid())); ok {
				return host, nil
			}
		}
	}
	return 0, fmt.Errorf("no restored task is in the %s namespace %d the image names: %w", kind, want, images.ErrCorrupt)
}
