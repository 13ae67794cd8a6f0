package cgroup

// This file serves a plain process tree's own cgroups (`ctcr dump` and
// `ctcr restore` with --manage-cgroups, as CRIU's option of that name):
// which cgroup each thread is in, hierarchy by hierarchy, the properties
// of those cgroups, and at restore making them again and moving tasks
// and threads into them. The engine (criu/cgroups.go) decides what to
// save and where each task goes; every read and write of cgroupfs is
// here.
//
// Paths come from images at restore: a hierarchy key must be one this
// machine mounts (checked to be a cgroup file system), a path must be
// absolute and clean with no "." or ".." component, and only the
// properties of the table below are ever written (never cgroup.procs,
// release_agent, notify_on_release and the like, which an image could
// otherwise use to run a program on the host).

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"
)

// Unified is the hierarchy key of cgroup v2 (the "0::" line of
// /proc/PID/cgroup), wherever it is mounted (/sys/fs/cgroup/unified on a
// hybrid machine, /sys/fs/cgroup on a pure v2 one).
const Unified = "unified"

// Mode says what restore does with the cgroups of the images: CRIU's
// --manage-cgroups modes. The zero value is ModeIgnore, which is what
// callers that manage cgroups themselves (the container front end, the
// RPC server) get without asking.
type Mode int

const (
	// ModeIgnore: cgroups are neither dumped nor restored; tasks stay
	// where restore creates them (in ctcr's own cgroups).
	ModeIgnore Mode = iota
	// ModeNone: tasks go back to their cgroups, which must exist; no
	// property is written.
	ModeNone
	// ModeProps: as none, and every saved property is written.
	ModeProps
	// ModeSoft: missing cgroups are created with their properties;
	// existing ones are left as they are. The default of the CLI.
	ModeSoft
	// ModeFull: missing cgroups are created and every saved property is
	// written, in existing ones too.
	ModeFull
	// ModeStrict: every saved cgroup must be missing; all are created
	// with their properties.
	ModeStrict
)

var modeNames = []string{"ignore", "none", "props", "soft", "full", "strict"}

func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// Set parses a mode name (pflag.Value).
func (m *Mode) Set(s string) error {
	for i, n := range modeNames {
		if s == n {
			*m = Mode(i)
			return nil
		}
	}
	return fmt.Errorf("unknown cgroup mode %q (none, props, soft, full, strict or ignore)", s)
}

// Type names the flag's value (pflag.Value).
func (m *Mode) Type() string { return "mode" }

// Creates says whether the mode makes missing cgroups.
func (m Mode) Creates() bool { return m >= ModeSoft }

// Roots maps a hierarchy key ("memory", "name=systemd", Unified, or ""
// for every hierarchy not named) to the cgroup a restored tree's root
// task goes into instead of its own: CRIU's --cgroup-root
// [controller:]/path, given once per hierarchy.
type Roots map[string]string

func (r *Roots) String() string {
	if r == nil || len(*r) == 0 {
		return ""
	}
	var s []string
	for k, v := range *r {
		if k == "" {
			s = append(s, v)
		} else {
			s = append(s, k+":"+v)
		}
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

// Set parses one [controller:]/path (pflag.Value).
func (r *Roots) Set(s string) error {
	key, p := "", s
	if i := strings.Index(s, ":/"); i >= 0 {
		key, p = s[:i], s[i+1:]
	}
	if err := CheckPath(p); err != nil {
		return fmt.Errorf("cgroup root %q: %w", s, err)
	}
	if key != "" {
		if err := CheckKey(key); err != nil {
			return fmt.Errorf("cgroup root %q: %w", s, err)
		}
	}
	if *r == nil {
		*r = Roots{}
	}
	if _, dup := (*r)[key]; dup {
		return fmt.Errorf("cgroup root %q: a root for %q was given already", s, key)
	}
	(*r)[key] = p
	return nil
}

// Type names the flag's value (pflag.Value).
func (r *Roots) Type() string { return "[controller:]/path" }

// Of returns the new root of hierarchy key, if one was given.
func (r Roots) Of(key string) (string, bool) {
	if p, ok := r[key]; ok {
		return p, true
	}
	p, ok := r[""]
	return p, ok
}

// ErrBadPath is returned (wrapped) for a cgroup path or hierarchy name
// from an image or the command line that could lead out of its
// hierarchy.
var ErrBadPath = errors.New("not a clean absolute cgroup path")

// CheckPath refuses a cgroup path that is not absolute and clean: no
// empty, "." or ".." component, no NUL.
func CheckPath(p string) error {
	if !strings.HasPrefix(p, "/") || strings.ContainsRune(p, 0) || len(p) > 4096 {
		return fmt.Errorf("%q: %w", p, ErrBadPath)
	}
	if p == "/" {
		return nil
	}
	for _, c := range strings.Split(p[1:], "/") {
		if c == "" || c == "." || c == ".." {
			return fmt.Errorf("%q: %w", p, ErrBadPath)
		}
	}
	return nil
}

// CheckKey refuses a hierarchy key that is not one line's name in
// /proc/PID/cgroup: controller names, "name=NAME", or Unified.
func CheckKey(k string) error {
	if k == "" || k == "." || k == ".." || strings.ContainsAny(k, "/\x00:") || len(k) > 255 {
		return fmt.Errorf("cgroup hierarchy %q: %w", k, ErrBadPath)
	}
	return nil
}

// Mount returns where hierarchy key is mounted, checked to be a cgroup
// file system of the right version.
func Mount(key string) (string, error) {
	if err := CheckKey(key); err != nil {
		return "", err
	}
	var cands []string
	want := int64(unix.CGROUP_SUPER_MAGIC)
	if key == Unified {
		cands = []string{filepath.Join(Root, "unified"), Root}
		want = unix.CGROUP2_SUPER_MAGIC
	} else {
		cands = []string{filepath.Join(Root, strings.TrimPrefix(key, "name="))}
	}
	for _, d := range cands {
		var st unix.Statfs_t
		if err := unix.Statfs(d, &st); err == nil && st.Type == want {
			return d, nil
		}
	}
	return "", fmt.Errorf("cgroup hierarchy %s is not mounted under %s", key, Root)
}

// Dir returns the directory of cgroup p of hierarchy key.
func Dir(key, p string) (string, error) {
	if err := CheckPath(p); err != nil {
		return "", fmt.Errorf("%s cgroup: %w", key, err)
	}
	mnt, err := Mount(key)
	if err != nil {
		return "", err
	}
	// Clean and without "..": the join stays under mnt (cgroupfs holds
	// no symlinks).
	return filepath.Join(mnt, p), nil
}

// ThreadCgroups reads the cgroups of thread tid of process pid: path by
// hierarchy key (Unified for v2). v1 lets threads of one process sit in
// different cgroups, and v2 in a threaded subtree.
func ThreadCgroups(pid, tid int) (map[string]string, error) {
	f := fmt.Sprintf("/proc/%d/task/%d/cgroup", pid, tid)
	m, err := cgroups.ParseCgroupFile(f)
	if err != nil {
		return nil, fmt.Errorf("cgroups of task %d thread %d: %w", pid, tid, err)
	}
	if v, ok := m[""]; ok {
		delete(m, "")
		m[Unified] = v
	}
	return m, nil
}

// Prop is one property file of a cgroup and its value.
type Prop struct {
	Name, Value string
}

// v2Special are the v2 files saved besides v2LimitFiles: the kind of a
// cgroup (a threaded one holds threads of processes whose main thread is
// above it) and which controllers its children get.
const (
	v2Type    = "cgroup.type"
	v2Subtree = "cgroup.subtree_control"
)

// propNames lists, in the order they are written back, the properties
// of hierarchy key saved for a plain tree's cgroups: limitFiles of each
// controller of a v1 hierarchy (devices.list aside: it is a list of
// rules, not a value), or the v2 ones.
func propNames(key string) []string {
	if key == Unified {
		return append([]string{v2Type, v2Subtree}, v2LimitFiles...)
	}
	var out []string
	for _, c := range strings.Split(key, ",") {
		for _, f := range limitFiles[c] {
			if f != "devices.list" {
				out = append(out, f)
			}
		}
	}
	return out
}

// ReadProps reads the saved properties of cgroup dir of hierarchy key;
// files this kernel lacks are left out.
func ReadProps(key, dir string) ([]Prop, error) {
	var out []Prop
	for _, f := range propNames(key) {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, f), err)
		}
		v := strings.TrimSpace(string(b))
		if f == v2Type && v != "threaded" {
			continue // "domain" and its kinds follow from the tree
		}
		if f == v2Subtree && v == "" {
			continue
		}
		out = append(out, Prop{f, v})
	}
	return out, nil
}

// KnownProp says whether name is a property restore writes for
// hierarchy key.
func KnownProp(key, name string) bool {
	for _, f := range propNames(key) {
		if f == name {
			return true
		}
	}
	return false
}

// WriteProps writes props into cgroup dir of hierarchy key, in the
// table's order, skipping a value already in place (a write of an equal
// value can fail, e.g. cgroup.type "threaded" twice). A property not in
// the table is refused.
func WriteProps(key, dir string, props []Prop) error {
	byName := map[string]string{}
	for _, p := range props {
		if !KnownProp(key, p.Name) {
			return fmt.Errorf("cgroup %s: property %q is not one ctcr restores", dir, p.Name)
		}
		byName[p.Name] = p.Value
	}
	for _, f := range propNames(key) {
		v, ok := byName[f]
		if !ok {
			continue
		}
		cur, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return fmt.Errorf("cgroup property %s: %w", filepath.Join(dir, f), err)
		}
		curv := strings.TrimSpace(string(cur))
		if curv == v {
			continue
		}
		switch f {
		case v2Subtree:
			// Written as "+ctrl" each; those already on stay.
			var plus []string
			for _, c := range strings.Fields(v) {
				plus = append(plus, "+"+c)
			}
			v = strings.Join(plus, " ")
		case v2Type:
			if curv == "domain threaded" || v != "threaded" {
				continue
			}
		}
		if err := cgroups.WriteFile(dir, f, v); err != nil {
			return fmt.Errorf("cgroup property %s = %q: %w", filepath.Join(dir, f), v, err)
		}
	}
	return nil
}

// Perms are the mode and owner of a cgroup directory.
type Perms struct {
	Mode     uint32
	Uid, Gid uint32
}

// DirPerms reads the mode and owner of dir.
func DirPerms(dir string) (Perms, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return Perms{}, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	return Perms{Mode: st.Mode & 0o7777, Uid: st.Uid, Gid: st.Gid}, nil
}

// MakeDir creates cgroup dir (its parent must exist), gives it perms if
// set, and in a v1 cpuset hierarchy copies the parent's cpus and mems
// (a new v1 cpuset has none, and takes no task until it has some).
// It reports whether dir was made (false: it existed).
func MakeDir(dir string, perms *Perms) (bool, error) {
	if err := unix.Mkdir(dir, 0o755); err != nil {
		if err == unix.EEXIST {
			return false, nil
		}
		return false, fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	if perms != nil {
		if err := unix.Chmod(dir, perms.Mode); err != nil {
			return true, fmt.Errorf("cgroup %s: chmod: %w", dir, err)
		}
		if err := unix.Lchown(dir, int(perms.Uid), int(perms.Gid)); err != nil {
			return true, fmt.Errorf("cgroup %s: chown: %w", dir, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "cpuset.mems")); err == nil {
		var st unix.Statfs_t
		if unix.Statfs(dir, &st) == nil && st.Type == unix.CGROUP_SUPER_MAGIC {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(filepath.Dir(dir), f))
				if err != nil {
					return true, fmt.Errorf("cgroup %s: %w", dir, err)
				}
				if err := cgroups.WriteFile(dir, f, strings.TrimSpace(string(b))); err != nil {
					return true, fmt.Errorf("cgroup %s: %w", dir, err)
				}
			}
		}
	}
	return true, nil
}

// RemoveDir removes an empty cgroup dir made by MakeDir. Tasks killed
// by a failed restore leave it as they exit, so EBUSY is waited out, up
// to wait.
func RemoveDir(dir string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		err := unix.Rmdir(dir)
		if err == nil || err == unix.ENOENT {
			return nil
		}
		if err != unix.EBUSY || time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// MoveProcess moves every thread of process pid into cgroup dir.
func MoveProcess(dir string, pid int) error {
	if err := cgroups.WriteCgroupProc(dir, pid); err != nil {
		return fmt.Errorf("move task %d into cgroup %s: %w", pid, dir, err)
	}
	return nil
}

// MoveThread moves one thread into cgroup dir: through "tasks" in v1,
// "cgroup.threads" in v2 (which takes it only within the process's
// threaded subtree).
func MoveThread(dir string, tid int) error {
	f := "tasks"
	if _, err := os.Stat(filepath.Join(dir, "cgroup.threads")); err == nil {
		f = "cgroup.threads"
	}
	if err := cgroups.WriteFile(dir, f, strconv.Itoa(tid)); err != nil {
		return fmt.Errorf("move thread %d into cgroup %s: %w", tid, dir, err)
	}
	return nil
}

// ThreadsIn lists the threads in cgroup p of hierarchy key (v1 "tasks",
// v2 "cgroup.threads"): one read that answers for every thread of a
// process, where /proc/PID/task/TID/cgroup costs tens of microseconds
// per thread (the kernel builds every hierarchy's path for each read).
func ThreadsIn(key, p string) (map[int]bool, error) {
	dir, err := Dir(key, p)
	if err != nil {
		return nil, err
	}
	f := "tasks"
	if key == Unified {
		f = "cgroup.threads"
	}
	b, err := os.ReadFile(filepath.Join(dir, f))
	if err != nil {
		return nil, fmt.Errorf("threads of cgroup %s: %w", dir, err)
	}
	out := map[int]bool{}
	for _, l := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(l); err == nil {
			out[n] = true
		}
	}
	return out, nil
}
