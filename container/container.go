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
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/internal/atomicfile"
)

// Errors callers branch on (they map to vzctl's exit codes).
var (
	ErrUnknown    = errors.New("no such container")
	ErrNotRunning = errors.New("container is not running")
	ErrRunning    = errors.New("container is running")
	ErrLocked     = errors.New("container is locked by another ctcr")
	// ErrAttempted marks a failure of a checkpoint or restore under way
	// (vzctl's 16 and 17), as opposed to one found before it began.
	ErrAttempted = errors.New("checkpoint or restore attempted")
)

// attempted marks err with ErrAttempted, its message unchanged.
func attempted(err error) error {
	if err == nil {
		return nil
	}
	return attemptedError{err}
}

type attemptedError struct{ error }

func (e attemptedError) Unwrap() []error { return []error{e.error, ErrAttempted} }

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

// crunStatus is the part of crun's status file (/run/crun/ID/status)
// ctcr reads. crun 1.8 writes pid, process-start-time (field 22 of
// /proc/PID/stat), cgroup-path, rootfs (as config.json gives it), bundle,
// created, owner, detached and external_descriptors.
type crunStatus struct {
	Pid       int    `json:"pid"`
	StartTime uint64 `json:"process-start-time"`
	Bundle    string `json:"bundle"`
	Rootfs    string `json:"rootfs"`
}

// Resolve finds container id. With pid > 0, id names the container and
// pid is its init (for anything that is not runc, crun or LXC).
func Resolve(id string, pid int) (*Container, error) {
	return resolve(id, pid, "")
}

// resolve is Resolve that also searches lxcpath (if not empty) for LXC
// containers, first.
func resolve(id string, pid int, lxcpath string) (*Container, error) {
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
		var st crunStatus
		if err := json.Unmarshal(b, &st); err != nil {
			return nil, fmt.Errorf("container %s: %s: %w", id, filepath.Join(dir, "status"), err)
		}
		c := &Container{ID: id, Runtime: "crun", Pid: st.Pid, Bundle: st.Bundle, Rootfs: st.Rootfs, StateDir: dir}
		if c.Rootfs != "" && !filepath.IsAbs(c.Rootfs) && c.Bundle != "" {
			// crun records root.path as the spec gives it: relative
			// to the bundle.
			c.Rootfs = filepath.Join(c.Bundle, c.Rootfs)
		}
		// crun itself calls a container running only while the PID in
		// its status has the start time recorded next to it.
		if !alive(c.Pid) || (st.StartTime != 0 && startTime(c.Pid) != st.StartTime) {
			return c, fmt.Errorf("container %s (crun): %w", id, ErrNotRunning)
		}
		return c, nil
	}
	for _, root := range lxcPaths(lxcpath) {
		cfg := filepath.Join(root, id, "config")
		looked = append(looked, cfg)
		if _, err := os.Stat(cfg); err != nil {
			continue
		}
		c := &Container{ID: id, Runtime: "lxc", Bundle: filepath.Join(root, id), Rootfs: filepath.Join(root, id, "rootfs"), StateDir: filepath.Join(root, id)}
		if pid, err := lxcInfoPid(root, id); err == nil && alive(pid) {
			c.Pid = pid
			return c, nil
		}
		// LXC's monitor, which answers lxc-info, ends with the container:
		// a container ctcr restored has none, only ctcr's record.
		if r, err := readInitRecord(id); err == nil && r.Runtime == "lxc" && r.LXCPath == root && r.running() {
			c.Pid = r.Pid
			return c, nil
		}
		return c, fmt.Errorf("container %s (lxc, %s): %w", id, root, ErrNotRunning)
	}
	looked = append(looked, initRecordPath(id))
	if r, err := readInitRecord(id); err == nil && r.Runtime == "pid" {
		c := &Container{ID: id, Runtime: "pid", Pid: r.Pid}
		if !r.running() {
			return c, fmt.Errorf("container %s (restored by ctcr as init %d): %w", id, r.Pid, ErrNotRunning)
		}
		return c, nil
	}
	return nil, fmt.Errorf("container %s: %w (looked in %s; give --pid or --cgroup for other runtimes)", id, ErrUnknown, strings.Join(looked, ", "))
}

// CgroupRoots are where InitOfCgroup looks for a cgroup path: the v1
// freezer hierarchy, the v2 one of a hybrid layout, a pure v2 one.
var CgroupRoots = []string{"/sys/fs/cgroup/freezer", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"}

// InitOfCgroup returns the init of the container whose tasks are those of
// cgroup path (as /proc/PID/cgroup names it): the one task whose parent
// is outside the cgroup. A cgroup holding several trees, or none, is
// refused: ctcr checkpoints one tree.
func InitOfCgroup(path string) (int, error) {
	if !strings.HasPrefix(path, "/") || strings.Contains(path, "/../") || strings.HasSuffix(path, "/..") {
		return 0, fmt.Errorf("cgroup %q: %w (give its absolute path, as /proc/PID/cgroup shows it)", path, ErrUnknown)
	}
	var looked []string
	for _, root := range CgroupRoots {
		procs := filepath.Join(root, path, "cgroup.procs")
		looked = append(looked, procs)
		b, err := os.ReadFile(procs)
		if err != nil {
			continue
		}
		in := map[int]bool{}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				in[pid] = true
			}
		}
		var roots []int
		for pid := range in {
			if st, err := proc.ReadStat(pid, pid); err == nil && !in[st.PPid] {
				roots = append(roots, pid)
			}
		}
		sort.Ints(roots)
		switch len(roots) {
		case 0:
			return 0, fmt.Errorf("cgroup %s (%s) has no tasks: %w", path, procs, ErrNotRunning)
		case 1:
			return roots[0], nil
		}
		return 0, fmt.Errorf("cgroup %s holds %d process trees (rooted at %v), not one container: give --pid", path, len(roots), roots)
	}
	return 0, fmt.Errorf("cgroup %s: %w (looked in %s)", path, ErrUnknown, strings.Join(looked, ", "))
}

// lxcPaths are the lxcpaths Resolve searches: first (if not empty),
// Places.LXC, then the lxc.lxcpath of LXC's system configuration if it
// names another.
func lxcPaths(first string) []string {
	var paths []string
	if first != "" {
		paths = append(paths, first)
	}
	paths = append(paths, Places.LXC...)
	if b, err := os.ReadFile(LXCConfig); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == "lxc.lxcpath" {
				paths = append(paths, filepath.Clean(strings.TrimSpace(v)))
			}
		}
	}
	var out []string
	seen := map[string]bool{}
	for _, p := range paths {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// LXCConfig is LXC's system configuration, where lxc.lxcpath may move
// the default /var/lib/lxc.
var LXCConfig = "/etc/lxc/lxc.conf"

// lxcInfoWait bounds lxc-info, which asks the container's monitor over
// its command socket and answers in milliseconds; a monitor that is
// stopped or stuck would hold it, and ctcr, forever.
const lxcInfoWait = 10 * time.Second

// lxcInfoPid asks LXC's monitor of container id in lxcpath for its
// init's PID.
func lxcInfoPid(lxcpath, id string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), lxcInfoWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, "lxc-info", "-P", lxcpath, "-n", id, "-p", "-H")
	// Killed at the deadline, lxc-info may leave a child holding its
	// stdout: stop waiting for the pipe soon after.
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if ctx.Err() != nil {
		return 0, fmt.Errorf("lxc-info of container %s (lxcpath %s): no answer within %v", id, lxcpath, lxcInfoWait)
	}
	if err != nil {
		return 0, fmt.Errorf("lxc-info: %w", err)
	}
	return strconv.Atoi(strings.TrimSpace(string(out)))
}

// LockDir/ID.init.json: the init ctcr restored for a container whose
// runtime cannot be told of it. LXC's tools cannot (lxc-info, lxc-attach
// and lxc-stop ask the container's monitor, which exited when the
// checkpoint ended the container), and a container given by --pid or
// --cgroup has no runtime at all; ctcr keeps the record for its own
// commands (checkpoint, ps, kill, restore's running check).
type initRecord struct {
	Runtime string `json:"runtime"`           // lxc or pid
	LXCPath string `json:"lxcpath,omitempty"` // LXC's lxcpath of the container
	Pid     int    `json:"pid"`
	Start   uint64 `json:"start"` // field 22 of /proc/PID/stat
}

func initRecordPath(id string) string { return filepath.Join(LockDir, id+".init.json") }

func readInitRecord(id string) (initRecord, error) {
	var r initRecord
	b, err := os.ReadFile(initRecordPath(id))
	if err != nil {
		return r, err
	}
	err = json.Unmarshal(b, &r)
	return r, err
}

// running reports whether the init r records still runs.
func (r initRecord) running() bool { return alive(r.Pid) && startTime(r.Pid) == r.Start }

// writeInitRecord records pid as the restored init of container id.
func writeInitRecord(id string, r initRecord) error {
	r.Start = startTime(r.Pid)
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := atomicfile.PrivateDir(LockDir); err != nil {
		return err
	}
	return writeFileAtomicMode(initRecordPath(id), b, 0o600)
}

// UpdateLXCInit records pid as the init of the LXC container whose
// directory (lxcpath/ID) is stateDir.
func UpdateLXCInit(stateDir string, pid int) error {
	return writeInitRecord(filepath.Base(stateDir), initRecord{Runtime: "lxc", LXCPath: filepath.Dir(stateDir), Pid: pid})
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

// UpdateRuntimeState points the runtime's state of restored container
// id at its new init pid, so the runtime's own list, exec, kill and
// delete keep working. It knows runc and crun; for LXC, whose tools
// cannot learn of a new init, and for a container given by --pid or
// --cgroup, it keeps ctcr's own record. Other runtimes are left alone.
func UpdateRuntimeState(runtime, id, stateDir string, pid int) error {
	switch runtime {
	case "runc":
		return UpdateRuncState(stateDir, pid)
	case "crun":
		return UpdateCrunState(stateDir, pid)
	case "lxc":
		return UpdateLXCInit(stateDir, pid)
	case "pid":
		return writeInitRecord(id, initRecord{Runtime: "pid", Pid: pid})
	}
	return nil
}

// UpdateRuncState rewrites runc's state.json for a restored init: the
// init PID and start time (runc compares them to tell a running
// container from a dead one whose PID was reused), and the namespace
// paths. Other fields stay.
func UpdateRuncState(stateDir string, pid int) error {
	return rewriteState(filepath.Join(stateDir, "state.json"), func(st map[string]any) {
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
	})
}

// UpdateCrunState rewrites crun's status file for a restored init: pid
// and process-start-time, the pair crun checks before it calls a
// container running (crun list, state, exec, kill). crun keeps no
// namespace paths: exec joins /proc/PID/ns of the pid it reads here, and
// the cgroup path stays valid because the restore recreates the same
// cgroups.
func UpdateCrunState(stateDir string, pid int) error {
	return rewriteState(filepath.Join(stateDir, "status"), func(st map[string]any) {
		st["pid"] = pid
		st["process-start-time"] = startTime(pid)
	})
}

// rewriteState applies edit to the JSON object in path and writes it
// back atomically, with the file's mode kept (runc and crun make their
// state readable by root only). Numbers stay as written.
func rewriteState(path string, edit func(map[string]any)) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var st map[string]any
	if err := dec.Decode(&st); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if st == nil {
		return fmt.Errorf("%s: not a JSON object", path)
	}
	edit(st)
	out, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return writeFileAtomicMode(path, out, fi.Mode().Perm())
}

// WriteFileAtomic writes b to path, readable by root only (a bundle's
// files hold the container's spec and what was dumped), through a new
// file under a random name renamed into place (see atomicfile).
func WriteFileAtomic(path string, b []byte) error {
	return writeFileAtomicMode(path, b, 0o600)
}

func writeFileAtomicMode(path string, b []byte, mode os.FileMode) error {
	return atomicfile.WritePath(path, b, mode)
}
