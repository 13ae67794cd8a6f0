package criu

import (
	"fmt"
	"os"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	nsimg "github.com/checkpoint-restore/go-criu/v7/crit/images/ns"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// nsFiles are fds on namespace files (/proc/PID/ns/KIND, links such as
// "net:[4026531840]"), as setns takes them. ctcr restores a tree either
// in its own namespaces or in ctcr's (namespaces.go), and every task of
// the tree shares the root's: so such an fd is kept only if it names a
// namespace of the tree's root, in CRIU's ns-file entry (ns_id: the
// namespace's id in the ids images, ns_cflags: its CLONE_NEW* flag).
// Restore opens the same kind of namespace file of the restored root.
// An fd on any other namespace (one the tree is not in) is refused,
// naming the namespace.
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
		return nil, d.unsupported(fmt.Sprintf("fd on %s namespace %s, which the dumped tree is not in", kind, d.link))
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
	if nf.GetNsId() != nsHost && nf.GetNsId() != nsOwn {
		return nil, corruptf("files.img", "namespace file id %d: namespace id %d", e.GetId(), nf.GetNsId())
	}
	// The restored root is in the tree's namespaces, whichever they are
	// (its own, or ctcr's for an id of nsHost).
	path := fmt.Sprintf("/proc/%d/ns/%s", r.rootPid, kind)
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("namespace file id %d (%s namespace): open %s: %w", e.GetId(), kind, path, err)
	}
	return f, nil
}
