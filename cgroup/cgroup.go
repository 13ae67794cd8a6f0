// Package cgroup owns the cgroups of a checkpointed container: finding
// them from a task, freezing and thawing them (cgroup v1 freezer.state or
// v2 cgroup.freeze, through github.com/opencontainers/cgroups), saving the
// limits they set, and recreating them with those limits at restore.
//
// Machines may be hybrid: v1 controllers under /sys/fs/cgroup/NAME and
// the v2 hierarchy at /sys/fs/cgroup/unified; both are handled.
package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/fs"
	"github.com/opencontainers/cgroups/fs2"
)

// Root is where cgroup hierarchies are mounted.
const Root = "/sys/fs/cgroup"

// Set is the cgroups of one task: the path inside each v1 hierarchy
// (keyed by controller list as /proc/PID/cgroup names it, e.g. "cpu",
// "name=systemd") and inside the v2 hierarchy.
type Set struct {
	V1 map[string]string `json:"v1,omitempty"`
	V2 string            `json:"v2,omitempty"`
}

// ForPid reads the cgroups of pid.
func ForPid(pid int) (*Set, error) {
	m, err := cgroups.ParseCgroupFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return nil, fmt.Errorf("cgroups of task %d: %w", pid, err)
	}
	s := &Set{V1: map[string]string{}}
	for k, v := range m {
		if k == "" {
			s.V2 = v
		} else {
			s.V1[k] = v
		}
	}
	return s, nil
}

// v1Dir returns the directory of controller ctrl, or "" if not mounted.
func (s *Set) v1Dir(ctrl string) string {
	p, ok := s.V1[ctrl]
	if !ok {
		return ""
	}
	name := strings.TrimPrefix(ctrl, "name=")
	d := filepath.Join(Root, name, p)
	if _, err := os.Stat(d); err != nil {
		return ""
	}
	return d
}

// v2Dir returns the directory of the v2 cgroup, or "".
func (s *Set) v2Dir() string {
	if s.V2 == "" {
		return ""
	}
	for _, mnt := range []string{Root, filepath.Join(Root, "unified")} {
		if _, err := os.Stat(filepath.Join(mnt, "cgroup.controllers")); err != nil {
			if _, err := os.Stat(filepath.Join(mnt, "cgroup.procs")); err != nil {
				continue
			}
		}
		d := filepath.Join(mnt, s.V2)
		if _, err := os.Stat(d); err == nil {
			return d
		}
	}
	return ""
}

// FreezerPath names the freezer the set uses, for messages.
func (s *Set) FreezerPath() string {
	if d := s.v1Dir("freezer"); d != "" {
		return filepath.Join(d, "freezer.state")
	}
	if d := s.v2Dir(); d != "" {
		return filepath.Join(d, "cgroup.freeze")
	}
	return ""
}

// ErrNoFreezer means the task's cgroups offer no freezer.
var ErrNoFreezer = errors.New("no cgroup freezer (v1 freezer controller or v2 cgroup.freeze)")

// Freeze freezes every task of the set's freezer cgroup and waits, up to
// timeout, until all are frozen. On failure the cgroup is left thawed.
func (s *Set) Freeze(timeout time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- s.setFreezer(cgroups.Frozen) }()
	select {
	case err := <-done:
		if err != nil {
			s.Thaw()
			return fmt.Errorf("freeze %s: %w", s.FreezerPath(), err)
		}
		return nil
	case <-time.After(timeout):
		s.Thaw()
		return fmt.Errorf("freeze %s: not frozen after %v", s.FreezerPath(), timeout)
	}
}

// Thaw lets the cgroup's tasks run again.
func (s *Set) Thaw() error {
	if err := s.setFreezer(cgroups.Thawed); err != nil {
		return fmt.Errorf("thaw %s: %w", s.FreezerPath(), err)
	}
	return nil
}

func (s *Set) setFreezer(state cgroups.FreezerState) error {
	if d := s.v1Dir("freezer"); d != "" {
		return (&fs.FreezerGroup{}).Set(d, &cgroups.Resources{Freezer: state})
	}
	if d := s.v2Dir(); d != "" {
		m, err := fs2.NewManager(&cgroups.Cgroup{Resources: &cgroups.Resources{}}, d)
		if err != nil {
			return err
		}
		return m.Freeze(state)
	}
	return ErrNoFreezer
}

// Tasks lists every process in the set's freezer cgroup (or v2 cgroup)
// and below it.
func (s *Set) Tasks() ([]int, error) {
	d := s.v1Dir("freezer")
	if d == "" {
		d = s.v2Dir()
	}
	if d == "" {
		return nil, ErrNoFreezer
	}
	pids, err := cgroups.GetAllPids(d)
	if err != nil {
		return nil, fmt.Errorf("tasks of %s: %w", d, err)
	}
	sort.Ints(pids)
	return pids, nil
}

// ErrNotBelow means a task's cgroup is outside the container's.
var ErrNotBelow = errors.New("not at or below the container's cgroup")

// Below returns where t's cgroups are relative to s's, hierarchy by
// hierarchy ("/" for the same cgroup, "/sub" below), and whether that is
// s itself in every hierarchy. A hierarchy s has and t lacks, or a
// cgroup of t outside s's, is ErrNotBelow.
func (s *Set) Below(t *Set) (rel *Set, same bool, err error) {
	relOf := func(base, p string) (string, bool) {
		if p == base {
			return "/", true
		}
		prefix := strings.TrimSuffix(base, "/") + "/"
		if strings.HasPrefix(p, prefix) {
			return "/" + strings.TrimPrefix(p, prefix), true
		}
		return "", false
	}
	rel = &Set{V1: map[string]string{}}
	same = true
	for ctrl, base := range s.V1 {
		r, ok := relOf(base, t.V1[ctrl])
		if !ok {
			return nil, false, fmt.Errorf("%s cgroup %q: %w (%q)", ctrl, t.V1[ctrl], ErrNotBelow, base)
		}
		rel.V1[ctrl] = r
		same = same && r == "/"
	}
	if s.V2 != "" {
		r, ok := relOf(s.V2, t.V2)
		if !ok {
			return nil, false, fmt.Errorf("cgroup %q: %w (%q)", t.V2, ErrNotBelow, s.V2)
		}
		rel.V2 = r
		same = same && r == "/"
	}
	return rel, same, nil
}

// Join returns the set of the cgroups rel (from Below) names under s.
func (s *Set) Join(rel *Set) *Set {
	out := &Set{V1: map[string]string{}}
	for ctrl, base := range s.V1 {
		out.V1[ctrl] = filepath.Join(base, rel.V1[ctrl])
	}
	if s.V2 != "" {
		out.V2 = filepath.Join(s.V2, rel.V2)
	}
	return out
}

// Descendants returns every cgroup below s's, in any of its hierarchies,
// as sets relative to s (Below's form), parents before their children.
// In a hierarchy where the path does not exist the set names s's own
// cgroup ("/"). A system container's systemd watches the cgroups of
// units that have no process (yet): they must come back too.
func (s *Set) Descendants() []*Set {
	dirs := map[string]string{} // "v1:" + controller, or "v2"
	for ctrl := range s.V1 {
		if d := s.v1Dir(ctrl); d != "" {
			dirs["v1:"+ctrl] = d
		}
	}
	if d := s.v2Dir(); d != "" {
		dirs["v2"] = d
	}
	var order []string
	in := map[string]map[string]bool{} // rel -> hierarchies that have it
	keys := make([]string, 0, len(dirs))
	for k := range dirs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		base := dirs[k]
		filepath.Walk(base, func(p string, info os.FileInfo, err error) error {
			if err != nil || !info.IsDir() || p == base {
				return nil
			}
			rel := "/" + strings.TrimPrefix(p, base+"/")
			if in[rel] == nil {
				in[rel] = map[string]bool{}
				order = append(order, rel)
			}
			in[rel][k] = true
			return nil
		})
	}
	// Parents first: fewer slashes first, the walk's order otherwise.
	sort.SliceStable(order, func(i, j int) bool { return strings.Count(order[i], "/") < strings.Count(order[j], "/") })
	out := make([]*Set, 0, len(order))
	for _, rel := range order {
		set := &Set{V1: map[string]string{}}
		for ctrl := range s.V1 {
			set.V1[ctrl] = "/"
			if in[rel]["v1:"+ctrl] {
				set.V1[ctrl] = rel
			}
		}
		if s.V2 != "" {
			set.V2 = "/"
			if in[rel]["v2"] {
				set.V2 = rel
			}
		}
		out = append(out, set)
	}
	return out
}
