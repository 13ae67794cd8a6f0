package container

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/proc"
)

// CheckpointRoot holds the default checkpoint directory of each
// container, /var/lib/ctcr/CTID.
var CheckpointRoot = "/var/lib/ctcr"

// Entry is one line of `ctcr list`: a container a runtime reports, one
// that has a checkpoint under CheckpointRoot, or both.
type Entry struct {
	ID         string `json:"id"`
	Runtime    string `json:"runtime"`
	Status     string `json:"status"` // running, stopped, checkpointed
	Pid        int    `json:"pid,omitempty"`
	Checkpoint string `json:"checkpoint,omitempty"` // its directory
}

// List returns the containers that runc or crun report (in Places), those
// ctcr restored and keeps a record of (LXC, --pid, --cgroup), and those
// with a complete checkpoint under CheckpointRoot (the one a restore
// would take: latest, or ctcr.json of the old layout), sorted by
// id. Other LXC containers appear only once they have a checkpoint:
// listing them needs lxc-ls, and a host without LXC has none.
func List() ([]Entry, error) {
	byID := map[string]*Entry{}
	for _, roots := range [][]string{Places.Runc, Places.Crun} {
		for _, root := range roots {
			ents, err := os.ReadDir(root)
			if err != nil {
				continue // not installed, or never ran a container
			}
			for _, e := range ents {
				if !e.IsDir() || byID[e.Name()] != nil {
					continue
				}
				c, err := Resolve(e.Name(), 0)
				switch {
				case err == nil:
					byID[c.ID] = &Entry{ID: c.ID, Runtime: c.Runtime, Status: "running", Pid: c.Pid}
				case errors.Is(err, ErrNotRunning) && c != nil:
					byID[c.ID] = &Entry{ID: c.ID, Runtime: c.Runtime, Status: "stopped"}
				}
			}
		}
	}
	// Containers ctcr restored that no runtime can tell of (LXC, --pid,
	// --cgroup): ctcr's own record of their init.
	recs, _ := filepath.Glob(filepath.Join(LockDir, "*.init.json"))
	for _, rp := range recs {
		id := strings.TrimSuffix(filepath.Base(rp), ".init.json")
		r, err := readInitRecord(id)
		if err != nil || byID[id] != nil {
			continue
		}
		if r.running() {
			byID[id] = &Entry{ID: id, Runtime: r.Runtime, Status: "running", Pid: r.Pid}
		} else {
			byID[id] = &Entry{ID: id, Runtime: r.Runtime, Status: "stopped"}
		}
	}
	ents, err := os.ReadDir(CheckpointRoot)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range ents {
		// The latest generation, or a checkpoint of the old layout.
		dir := LatestCheckpoint(e.Name())
		if dir == "" {
			continue
		}
		m, _, err := ReadBundle(dir)
		if err != nil {
			continue // an incomplete checkpoint or a stray directory
		}
		if en := byID[m.ID]; en != nil {
			en.Checkpoint = dir
			continue
		}
		byID[m.ID] = &Entry{ID: m.ID, Runtime: m.Runtime, Status: "checkpointed", Checkpoint: dir}
	}
	out := make([]Entry, 0, len(byID))
	for _, e := range byID {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Process is one task of a container as `ctcr ps` shows it.
type Process struct {
	Pid     int    `json:"pid"`     // as the host sees it
	NSPid   int    `json:"ns_pid"`  // inside the container's PID namespace
	Command string `json:"command"` // its command line, or [comm]
}

// Processes lists the processes in the cgroup of container id's init
// (freezer cgroup on v1, the unified one on v2), as Checkpoint would
// freeze them.
func Processes(id string, pid int) ([]Process, error) {
	c, err := Resolve(id, pid)
	if err != nil {
		return nil, err
	}
	cg, err := containerCgroups(c)
	if err != nil {
		return nil, err
	}
	pids, err := cg.Tasks()
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", id, err)
	}
	var out []Process
	for _, p := range pids {
		st, err := proc.ReadStatus(p, p)
		if err != nil {
			continue // exited since the cgroup was read
		}
		pr := Process{Pid: p, NSPid: p}
		if len(st.NSpid) > 0 {
			pr.NSPid = st.NSpid[len(st.NSpid)-1]
		}
		pr.Command = command(p)
		out = append(out, pr)
	}
	return out, nil
}

// command is pid's command line with spaces for NULs, or its comm in
// brackets when the command line is empty (kernel threads, zombies).
func command(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err == nil && len(b) > 0 {
		return strings.TrimSpace(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
	}
	if st, err := proc.ReadStat(pid, pid); err == nil {
		return "[" + st.Comm + "]"
	}
	return "?"
}

// Kill sends sig to the init of container id. The signal goes through a
// pidfd opened before the init is checked again, so a PID reused after
// the init died is never signalled.
func Kill(id string, pid int, sig unix.Signal) (*Container, error) {
	c, err := Resolve(id, pid)
	if err != nil {
		return nil, err
	}
	start := startTime(c.Pid)
	fd, err := unix.PidfdOpen(c.Pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("container %s: init %d: %w", id, c.Pid, ErrNotRunning)
		}
		return nil, os.NewSyscallError("pidfd_open", err)
	}
	defer unix.Close(fd)
	if !alive(c.Pid) || startTime(c.Pid) != start {
		return nil, fmt.Errorf("container %s: init %d: %w", id, c.Pid, ErrNotRunning)
	}
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("container %s: init %d: %w", id, c.Pid, ErrNotRunning)
		}
		return nil, fmt.Errorf("container %s: signal %v to init %d: %w", id, sig, c.Pid, os.NewSyscallError("pidfd_send_signal", err))
	}
	return c, nil
}
