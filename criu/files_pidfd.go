package criu

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

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
//
// A pidfd of a process that has exited and was reaped names no process
// any more (fdinfo "Pid: -1"): it is kept as {"exited": true}, and
// restore makes one the same way, from a short-lived helper process
// that ctcr starts and lets exit: pidfd_open while it is a zombie, then
// reap it. Like the original, the new pidfd polls readable, signals
// through it fail with ESRCH and waitid on it finds no child.
var pidfds = fileKind{
	name:   "pidfd",
	fdType: fdinfo.FdTypes_EXT,
	dump:   dumpPidfd,
	open:   openPidfd,
	finish: writePidfds,
}

const pidfdFile = "pidfd.json"

type pidfdEntry struct {
	Pid    int    `json:"pid"`
	Flags  uint32 `json:"flags"`
	Exited bool   `json:"exited,omitempty"` // of a process that exited and was reaped; Pid is 0
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
	ent := pidfdEntry{Flags: d.flags}
	if host == -1 {
		// The kernel prints -1 for a pidfd whose process was reaped
		// (fs/pidfs.c pidfd_show_fdinfo).
		ent.Exited = true
	} else {
		vpid, ok := d.files.vpidOf[host]
		if host <= 0 || !ok {
			return nil, d.unsupported(fmt.Sprintf("pidfd of process %d, which is not in the dumped tree", host))
		}
		ent.Pid = vpid
	}
	st := d.files.kindState("pidfd", func() any { return &pidfdState{entries: map[string]pidfdEntry{}} }).(*pidfdState)
	id := d.files.nextID()
	st.entries[strconv.Itoa(int(id))] = ent
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
	if p.Exited {
		f, err := exitedPidfd(int(p.Flags & unix.O_NONBLOCK))
		if err != nil {
			return nil, fmt.Errorf("pidfd id %d of a process that exited: %w", e.GetId(), err)
		}
		return f, nil
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

// exitedPidfd returns a pidfd (with flags) of a process that has exited
// and was reaped: one of a helper that ctcr starts, opened while the
// helper is a zombie and kept after ctcr reaped it.
func exitedPidfd(flags int) (*os.File, error) {
	bin := ""
	for _, b := range []string{"/bin/true", "/usr/bin/true"} {
		if _, err := os.Stat(b); err == nil {
			bin = b
			break
		}
	}
	if bin == "" {
		return nil, errors.New("no /bin/true to start as the process that exits")
	}
	cmd := exec.Command(bin)
	// The helper must not outlive ctcr; it ends at once anyway.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	pid := cmd.Process.Pid
	// Wait for the exit without reaping: a zombie still has a pidfd
	// to open, a reaped process has not. /bin/true ends in
	// milliseconds; the wait is bounded all the same.
	var info unix.Siginfo
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT|unix.WNOHANG, nil)
		if err == nil && info.Signo != 0 {
			break
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			cmd.Process.Kill()
			cmd.Wait()
			return nil, fmt.Errorf("wait for %s (process %d): %w", bin, pid, err)
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			return nil, fmt.Errorf("%s (process %d) did not exit within 10s", bin, pid)
		}
		time.Sleep(time.Millisecond)
	}
	fd, err := unix.PidfdOpen(pid, flags)
	cmd.Wait() // reap it: the pidfd now names a process that is gone
	if err != nil {
		return nil, fmt.Errorf("pidfd_open of the exited %s (process %d): %w", bin, pid, err)
	}
	return os.NewFile(uintptr(fd), "pidfd"), nil
}
