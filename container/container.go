// Package container resolves a container id to what ctcr needs (its init
// PID, bundle, root file system and runtime state) for runc, crun and
// LXC, and reads and writes checkpoint bundles:
//
//	DIR/
//	  images/      CRIU-format images of the process tree and namespaces
//	  config.json  the container's OCI spec at checkpoint time
//	  ctcr.json    container id, runtime, rootfs, cgroups, ctcr version
//	  stats.json   what was dumped, how long the tasks were frozen
//
// ctcr.json is written last: a bundle without it is incomplete.
package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ctcr/ctcr/criu/proc"
)

// Errors callers branch on (they map to vzctl's exit codes).
var (
	ErrUnknown    = errors.New("no such container")
	ErrNotRunning = errors.New("container is not running")
	ErrRunning    = errors.New("container is running")
	ErrLocked     = errors.New("container is locked by another ctcr")
)

// Container is a running (or known) container.
type Container struct {
	ID       string `json:"id"`
	Runtime  string `json:"runtime"` // runc, crun, lxc, pid
	Pid      int    `json:"pid"`     // init, as the host sees it
	Bundle   string `json:"bundle,omitempty"`
	Rootfs   string `json:"rootfs,omitempty"`
	StateDir string `json:"state_dir,omitempty"` // the runtime's state of it
}

// Places are where ctcr looks for containers; tests and unusual setups
// may change them.
var Places = struct {
	Runc []string
	Crun []string
	LXC  []string
}{
	Runc: []string{"/run/runc", "/run/user/0/runc"},
	Crun: []string{"/run/crun", "/run/user/0/crun"},
	LXC:  []string{"/var/lib/lxc"},
}

// runcState is the part of runc's state.json ctcr reads.
type runcState struct {
	ID               string `json:"id"`
	InitProcessPid   int    `json:"init_process_pid"`
	InitProcessStart uint64 `json:"init_process_start"`
	Config           struct {
		Rootfs string   `json:"rootfs"`
		Labels []string `json:"labels"`
	} `json:"config"`
}

// Resolve finds container id. With pid > 0, id names the container and
// pid is its init (for anything that is not runc, crun or LXC).
func Resolve(id string, pid int) (*Container, error) {
	if pid > 0 {
		if !alive(pid) {
			return nil, fmt.Errorf("container %s: init %d: %w", id, pid, ErrNotRunning)
		}
		return &Container{ID: id, Runtime: "pid", Pid: pid}, nil
	}
	if id == "" || strings.ContainsAny(id, "/\x00") || id == "." || id == ".." {
		return nil, fmt.Errorf("container id %q: %w", id, ErrUnknown)
	}
	var looked []string
	for _, root := range Places.Runc {
		dir := filepath.Join(root, id)
		looked = append(looked, filepath.Join(dir, "state.json"))
		b, err := os.ReadFile(filepath.Join(dir, "state.json"))
		if err != nil {
			continue
		}
		var st runcState
		if err := json.Unmarshal(b, &st); err != nil {
			return nil, fmt.Errorf("container %s: %s: %w", id, filepath.Join(dir, "state.json"), err)
		}
		c := &Container{ID: id, Runtime: "runc", Pid: st.InitProcessPid, Rootfs: st.Config.Rootfs, StateDir: dir}
		for _, l := range st.Config.Labels {
			if b, ok := strings.CutPrefix(l, "bundle="); ok {
				c.Bundle = b
			}
		}
		if !alive(c.Pid) || startTime(c.Pid) != st.InitProcessStart {
			return c, fmt.Errorf("container %s (runc): %w", id, ErrNotRunning)
		}
		return c, nil
	}
	for _, root := range Places.Crun {
		dir := filepath.Join(root, id)
		looked = append(looked, filepath.Join(dir, "status"))
		b, err := os.ReadFile(filepath.Join(dir, "status"))
		if err != nil {
			continue
		}
		var st struct {
			Pid    int    `json:"pid"`
			Bundle string `json:"bundle"`
			Rootfs string `json:"rootfs"`
		}
		if err := json.Unmarshal(b, &st); err != nil {
			return nil, fmt.Errorf("container %s: %s: %w", id, filepath.Join(dir, "status"), err)
		}
		c := &Container{ID: id, Runtime: "crun", Pid: st.Pid, Bundle: st.Bundle, Rootfs: st.Rootfs, StateDir: dir}
		if !alive(c.Pid) {
			return c, fmt.Errorf("container %s (crun): %w", id, ErrNotRunning)
		}
		return c, nil
	}
	for _, root := range Places.LXC {
		cfg := filepath.Join(root, id, "config")
		looked = append(looked, cfg)
		if _, err := os.Stat(cfg); err != nil {
			continue
		}
		c := &Container{ID: id, Runtime: "lxc", Bundle: filepath.Join(root, id), Rootfs: filepath.Join(root, id, "rootfs")}
		out, err := exec.Command("lxc-info", "-P", root, "-n", id, "-p", "-H").Output()
		if err != nil {
			return c, fmt.Errorf("container %s (lxc): lxc-info: %v: %w", id, err, ErrNotRunning)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
		if err != nil || !alive(pid) {
			return c, fmt.Errorf("container %s (lxc): %w", id, ErrNotRunning)
		}
		c.Pid = pid
		return c, nil
	}
	return nil, fmt.Errorf("container %s: %w (looked in %s; give --pid for other runtimes)", id, ErrUnknown, strings.Join(looked, ", "))
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	st, err := proc.ReadStat(pid, pid)
	return err == nil && st.State != 'Z' && st.State != 'X'
}

func startTime(pid int) uint64 {
	st, err := proc.ReadStat(pid, pid)
	if err != nil {
		return 0
	}
	return st.StartTime
}

// UpdateRuncState points runc's state of a restored container at its
// new init, so runc list, runc kill and runc delete keep working: the
// init PID and start time, and the namespace paths. Other fields stay.
func UpdateRuncState(stateDir string, pid int) error {
	path := filepath.Join(stateDir, "state.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var st map[string]any
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	st["init_process_pid"] = pid
	st["init_process_start"] = startTime(pid)
	if nsp, ok := st["namespace_paths"].(map[string]any); ok {
		names := map[string]string{"NEWNS": "mnt", "NEWPID": "pid", "NEWNET": "net", "NEWIPC": "ipc", "NEWUTS": "uts", "NEWUSER": "user", "NEWCGROUP": "cgroup"}
		for k := range nsp {
			if n, ok := names[k]; ok {
				nsp[k] = fmt.Sprintf("/proc/%d/ns/%s", pid, n)
			}
		}
	}
	out, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, out)
}

// WriteFileAtomic writes b to path through a temporary file and rename.
func WriteFileAtomic(path string, b []byte) error {
	tmp := path + ".ctcr-tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
