package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/opencontainers/cgroups"
)

// limitFiles are the v1 files whose values are the limits of a cgroup,
// per controller, written back in this order at restore (cpuset.cpus
// and mems must be set before tasks join; the memory limit before the
// memory+swap one, which may not be below it). They serve a container's
// cgroups and a plain tree's own (manage.go) alike.
var limitFiles = map[string][]string{
	"cpuset":  {"cpuset.cpus", "cpuset.mems"},
	"memory":  {"memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.soft_limit_in_bytes", "memory.swappiness"},
	"pids":    {"pids.max"},
	"cpu":     {"cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us"},
	"blkio":   {"blkio.weight"},
	"devices": {"devices.list"},
	"net_cls": {"net_cls.classid"},
}

// v2LimitFiles are the v2 files that hold limits.
var v2LimitFiles = []string{"cgroup.max.descendants", "cgroup.max.depth", "cpuset.cpus", "cpuset.mems", "memory.min", "memory.low", "memory.high", "memory.max", "memory.swap.max", "pids.max", "cpu.max", "cpu.weight", "io.weight"}

// Limits are the limit files of a cgroup set: controller -> file -> value
// ("v2" is the unified hierarchy).
type Limits map[string]map[string]string

// SaveLimits reads the limits the set's cgroups impose.
func (s *Set) SaveLimits() Limits {
	out := Limits{}
	for ctrl, files := range limitFiles {
		d := s.v1Dir(ctrl)
		if d == "" {
			continue
		}
		for _, f := range files {
			b, err := os.ReadFile(filepath.Join(d, f))
			if err != nil {
				continue
			}
			if out[ctrl] == nil {
				out[ctrl] = map[string]string{}
			}
			out[ctrl][f] = strings.TrimSpace(string(b))
		}
	}
	if d := s.v2Dir(); d != "" {
		for _, f := range v2LimitFiles {
			b, err := os.ReadFile(filepath.Join(d, f))
			if err != nil {
				continue
			}
			if out["v2"] == nil {
				out["v2"] = map[string]string{}
			}
			out["v2"][f] = strings.TrimSpace(string(b))
		}
	}
	return out
}

// Create makes every cgroup of the set (that does not exist yet), writes
// the limits into them, and returns a function that removes what it made.
func (s *Set) Create(l Limits) (func(), error) {
	var made []string
	undo := func() {
		for i := len(made) - 1; i >= 0; i-- {
			os.Remove(made[i])
		}
	}
	mk := func(d string) error {
		if _, err := os.Stat(d); err == nil {
			return nil
		}
		// Make each missing level, parents first, so undo can remove them.
		var missing []string
		for p := d; p != "/" && p != Root; p = filepath.Dir(p) {
			if _, err := os.Stat(p); err == nil {
				break
			}
			missing = append([]string{p}, missing...)
		}
		for _, p := range missing {
			ok, err := MakeDir(p, nil)
			if ok {
				made = append(made, p)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	ctrls := make([]string, 0, len(s.V1))
	for c := range s.V1 {
		ctrls = append(ctrls, c)
	}
	sort.Strings(ctrls)
	for _, ctrl := range ctrls {
		name := strings.TrimPrefix(ctrl, "name=")
		mnt := filepath.Join(Root, name)
		if _, err := os.Stat(mnt); err != nil {
			continue
		}
		d := filepath.Join(mnt, s.V1[ctrl])
		if err := mk(d); err != nil {
			undo()
			return nil, err
		}
		for _, f := range limitFiles[ctrl] {
			v, ok := l[ctrl][f]
			if !ok || f == "devices.list" {
				continue
			}
			if err := cgroups.WriteFile(d, f, v); err != nil {
				// Some values cannot be written back as read (a
				// quota of -1 with no period); the kernel default is
				// what they meant.
				continue
			}
		}
	}
	if s.V2 != "" {
		for _, mnt := range []string{filepath.Join(Root, "unified"), Root} {
			if _, err := os.Stat(filepath.Join(mnt, "cgroup.procs")); err != nil {
				continue
			}
			d := filepath.Join(mnt, s.V2)
			if err := mk(d); err != nil {
				undo()
				return nil, err
			}
			for f, v := range l["v2"] {
				cgroups.WriteFile(d, f, v)
			}
			break
		}
	}
	return undo, nil
}

// Enter moves pid into every cgroup of the set.
func (s *Set) Enter(pid int) error {
	for ctrl, p := range s.V1 {
		d := filepath.Join(Root, strings.TrimPrefix(ctrl, "name="), p)
		if _, err := os.Stat(d); err != nil {
			continue
		}
		if err := cgroups.WriteCgroupProc(d, pid); err != nil {
			return fmt.Errorf("move task %d into %s: %w", pid, d, err)
		}
	}
	if d := s.v2Dir(); d != "" {
		if err := cgroups.WriteCgroupProc(d, pid); err != nil {
			return fmt.Errorf("move task %d into %s: %w", pid, d, err)
		}
	}
	return nil
}
