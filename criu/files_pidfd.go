package criu

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	extfile "github.com/checkpoint-restore/go-criu/v7/crit/images/ext-file"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// pidfds refer to a process of the tree (Go's os/exec holds one for
// every child it starts). CRIU's images of this version have no type
// for them, so files.img names each as an external file (EXT, an id
// and no more) and ctcr keeps what it is beside the images:
//
//	pidfd.json: {"ID": {"pid": VPID, "flags": F}}
//
// with the target's PID in the tree's namespace and the file's flags.
// Restore opens a new pidfd on the restored target (pidfd_open). A
// pidfd of a process outside the tree is refused, by name.
var pidfds = fileKind{
	name:   "pidfd",
	fdType: fdinfo.FdTypes_EXT,
	dump:   dumpPidfd,
	open:   openPidfd,
	finish: writePidfds,
}

const pidfdFile = "pidfd.json"

type pidfdEntry struct {
	Pid   int    `json:"pid"`
	Flags uint32 `json:"flags"`
}

type pidfdState struct {
	entries map[string]pidfdEntry
}

func dumpPidfd(d *fdDump) (*fdinfo.FileEntry, error) {
	if !isAnon(d, "pidfd") {
		return nil, nil
	}
	host := 0
	for _, l := range d.info.Extra {
		if v, ok := strings.CutPrefix(l, "Pid:"); ok {
			host, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	vpid, ok := d.files.vpidOf[host]
	if host <= 0 || !ok {
		return nil, d.unsupported(fmt.Sprintf("pidfd of process %d, which is not in the dumped tree", host))
	}
	st := d.files.kindState("pidfd", func() any { return &pidfdState{entries: map[string]pidfdEntry{}} }).(*pidfdState)
	id := d.files.nextID()
	st.entries[strconv.Itoa(int(id))] = pidfdEntry{Pid: vpid, Flags: d.flags}
	return &fdinfo.FileEntry{Id: proto.Uint32(id), Ext: &extfile.ExtFileEntry{Id: proto.Uint32(id), Fown: noFown()}}, nil
}

// writePidfds puts pidfd.json beside files.img.
func writePidfds(t *fileTable) error {
	st, ok := t.kinds["pidfd"].(*pidfdState)
	if !ok {
		return nil
	}
	b, err := json.Marshal(st.entries)
	if err != nil {
		return err
	}
	t.sidecars = append(t.sidecars, sidecar{name: pidfdFile, data: b})
	return nil
}

func openPidfd(r *fileRestore, e *fdinfo.FileEntry) (*os.File, error) {
	all, ok := r.state["pidfd"].(map[string]pidfdEntry)
	if !ok {
		b, err := os.ReadFile(r.cp.dir.Path(pidfdFile))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("external file id %d: no %s says what it is: %w", e.GetId(), pidfdFile, ErrUnsupported)
			}
			return nil, err
		}
		if err := json.Unmarshal(b, &all); err != nil {
			return nil, corruptf(pidfdFile, "%v", err)
		}
		r.state["pidfd"] = all
	}
	p, ok := all[strconv.Itoa(int(e.GetId()))]
	if !ok {
		return nil, fmt.Errorf("external file id %d: not in %s: %w", e.GetId(), pidfdFile, ErrUnsupported)
	}
	host, ok := r.hostPid(p.Pid)
	if !ok {
		return nil, corruptf(pidfdFile, "pidfd id %d of process %d, which the tree has not", e.GetId(), p.Pid)
	}
	fd, err := unix.PidfdOpen(host, int(p.Flags&unix.O_NONBLOCK))
	if err != nil {
		return nil, fmt.Errorf("pidfd id %d of process %d: pidfd_open: %w", e.GetId(), p.Pid, err)
	}
	return os.NewFile(uintptr(fd), "pidfd"), nil
}
