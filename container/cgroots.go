package container

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/ctcr/ctcr/cgroup"
)

// containerCgroups returns the cgroups of container c: the ones its
// runtime made for it, not where its init stands now. A systemd init
// moves itself into init.scope below the container's cgroup and its
// services into system.slice/*: the container is the cgroup above them
// all, which the runtime names (LXC: lxc.payload.ID; runc: the
// cgroup_paths of its state.json). In each hierarchy, init's cgroup is
// walked up to that one; a hierarchy where none is found keeps init's.
func containerCgroups(c *Container) (*cgroup.Set, error) {
	cg, err := cgroup.ForPid(c.Pid)
	if err != nil {
		return nil, err
	}
	var isRoot func(p string) bool
	switch c.Runtime {
	case "lxc":
		name := "lxc.payload." + c.ID
		isRoot = func(p string) bool { return path.Base(p) == name }
	case "runc":
		dirs, err := runcCgroupDirs(c.StateDir)
		if err != nil {
			return nil, fmt.Errorf("container %s: %w", c.ID, err)
		}
		isRoot = func(p string) bool {
			for _, d := range dirs {
				if isMountOf(d, p) {
					return true
				}
			}
			return false
		}
	default:
		return cg, nil
	}
	up := func(p string) string {
		for q := p; q != "/" && q != "." && q != ""; q = path.Dir(q) {
			if isRoot(q) {
				return q
			}
		}
		return p
	}
	for k, p := range cg.V1 {
		cg.V1[k] = up(p)
	}
	if cg.V2 != "" {
		cg.V2 = up(cg.V2)
	}
	return cg, nil
}

// isMountOf says whether directory d is cgroup p (as /proc/PID/cgroup
// names it) in a hierarchy mounted at cgroup.Root or one level below it.
func isMountOf(d, p string) bool {
	if p == "/" || !strings.HasSuffix(d, p) {
		return false
	}
	mnt := strings.TrimSuffix(d, p)
	return mnt == cgroup.Root || filepath.Dir(mnt) == cgroup.Root
}

// runcCgroupDirs reads the cgroup directories runc made for a container
// (state.json's cgroup_paths, by controller).
func runcCgroupDirs(stateDir string) ([]string, error) {
	file := filepath.Join(stateDir, "state.json")
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var st struct {
		CgroupPaths map[string]string `json:"cgroup_paths"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	var out []string
	for _, d := range st.CgroupPaths {
		out = append(out, filepath.Clean(d))
	}
	return out, nil
}
