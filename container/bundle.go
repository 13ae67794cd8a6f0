package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/cgroup"
	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/internal/atomicfile"
)

// Version is ctcr's version, recorded in bundles.
const Version = "0.1.0"

// Meta is ctcr.json.
type Meta struct {
	ID       string        `json:"id"`
	Runtime  string        `json:"runtime"`
	Bundle   string        `json:"bundle,omitempty"`
	Rootfs   string        `json:"rootfs,omitempty"`
	StateDir string        `json:"state_dir,omitempty"`
	Cgroups  *cgroup.Set   `json:"cgroups,omitempty"`
	Limits   cgroup.Limits `json:"limits,omitempty"`
	// SubCgroups are the cgroups below the container's that its tasks
	// were in.
	SubCgroups  []*SubCgroup `json:"sub_cgroups,omitempty"`
	InitPid     int          `json:"init_pid"` // host PID at checkpoint
	Created     time.Time    `json:"created"`
	CtcrVersion string       `json:"ctcr_version"`
}

// SubCgroup is a cgroup below the container's, with its limits, and the
// processes in it (their PIDs in the container).
type SubCgroup struct {
	Rel    *cgroup.Set   `json:"cgroups"` // relative to the container's (cgroup.Set.Below)
	Limits cgroup.Limits `json:"limits,omitempty"`
	Pids   []int         `json:"pids"`
}

// Stats is stats.json.
type Stats struct {
	Tasks         int     `json:"tasks"`
	PagesBytes    uint64  `json:"pages_bytes"`
	FrozenSeconds float64 `json:"frozen_seconds"`
	DumpSeconds   float64 `json:"dump_seconds"`
	MemorySeconds float64 `json:"memory_seconds"`
	// SnapshotCopySeconds is the part of MemorySeconds spent copying
	// pages from copy-on-write snapshots once the container ran again
	// (--leave-running); FrozenSeconds does not count it.
	SnapshotCopySeconds float64 `json:"snapshot_copy_seconds,omitempty"`
	// The pre-copy (checkpoint --pre-copy): bytes copied while the
	// container ran, in how many rounds and how long. PagesBytes are
	// then only the bytes copied frozen.
	PreCopyBytes   uint64  `json:"pre_copy_bytes,omitempty"`
	PreCopyRounds  int     `json:"pre_copy_rounds,omitempty"`
	PreCopySeconds float64 `json:"pre_copy_seconds,omitempty"`
	// Warnings name what the checkpoint keeps differently from how it
	// was (a unix connection from outside that comes back closed).
	Warnings []string `json:"warnings,omitempty"`
}

// WriteStats writes stats.json alone into the bundle in dir, complete
// since its commit: the manifest leaves that file out, so new figures
// change nothing a restore checks.
func WriteStats(dir string, st *Stats) error {
	sb, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, "stats.json"), sb)
}

// ImagesDir is where a bundle keeps its images.
func ImagesDir(dir string) string { return filepath.Join(dir, "images") }

// WriteBundle writes config.json (copied from the container's bundle),
// stats.json and, last, ctcr.json into dir.
func WriteBundle(dir string, c *Container, m *Meta, st *Stats) error {
	if c.Bundle != "" {
		if b, err := os.ReadFile(filepath.Join(c.Bundle, "config.json")); err == nil {
			if err := WriteFileAtomic(filepath.Join(dir, "config.json"), b); err != nil {
				return err
			}
		}
	}
	sb, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := WriteFileAtomic(filepath.Join(dir, "stats.json"), sb); err != nil {
		return err
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := WriteFileAtomic(filepath.Join(dir, "ctcr.json"), mb); err != nil {
		return err
	}
	// Last: sizes and checksums of the json files and of images/ (by
	// its own manifest), checked before a restore creates anything.
	return images.WriteManifest(dir)
}

// VerifyBundle checks the bundle in dir against its manifest, images
// included (images.VerifyManifest); a bundle without one (an older
// ctcr's) gives a warning.
func VerifyBundle(dir string) ([]string, error) {
	w, err := images.VerifyManifest(dir)
	if errors.Is(err, images.ErrNoManifest) {
		return append(w, err.Error()), nil
	}
	return w, err
}

// ReadBundle reads ctcr.json and stats.json of a finished checkpoint.
func ReadBundle(dir string) (*Meta, *Stats, error) {
	read := func(name string, v any) error {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, 16<<20))
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, v); err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(dir, name), err)
		}
		return nil
	}
	m := &Meta{}
	if err := read("ctcr.json", m); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("no container checkpoint in %s: ctcr.json missing", dir)
		}
		return nil, nil, err
	}
	if err := m.checkCgroupPaths(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", filepath.Join(dir, "ctcr.json"), err)
	}
	// stats.json only informs (the manifest does not cover it: it is
	// written again after the commit): a damaged one gives no figures.
	st := &Stats{}
	if err := read("stats.json", st); err != nil {
		st = &Stats{}
	}
	return m, st, nil
}

// checkCgroupPaths refuses cgroup names in ctcr.json that would lead
// out of the cgroup file systems once joined to /sys/fs/cgroup/CTRL:
// restore makes those directories and writes limits and PIDs into them.
func (m *Meta) checkCgroupPaths() error {
	plain := func(what, name string) error {
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
			return fmt.Errorf("%s %q is not a plain name: %w", what, name, ErrBadBundle)
		}
		return nil
	}
	path := func(what, p string) error {
		for _, c := range strings.Split(p, "/") {
			if c == ".." || strings.ContainsRune(c, 0) {
				return fmt.Errorf("%s %q leads out of its cgroup hierarchy: %w", what, p, ErrBadBundle)
			}
		}
		return nil
	}
	set := func(what string, s *cgroup.Set) error {
		if s == nil {
			return nil
		}
		for ctrl, p := range s.V1 {
			if err := plain(what+" controller", strings.TrimPrefix(ctrl, "name=")); err != nil {
				return err
			}
			if err := path(what+" "+ctrl, p); err != nil {
				return err
			}
		}
		return path(what+" v2", s.V2)
	}
	limits := func(what string, l cgroup.Limits) error {
		for ctrl, files := range l {
			for f := range files {
				if err := plain(what+" "+ctrl+" limit file", f); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := set("cgroup", m.Cgroups); err != nil {
		return err
	}
	if err := limits("cgroup", m.Limits); err != nil {
		return err
	}
	for _, sub := range m.SubCgroups {
		if err := set("sub-cgroup", sub.Rel); err != nil {
			return err
		}
		if err := limits("sub-cgroup", sub.Limits); err != nil {
			return err
		}
	}
	return nil
}

// ErrBadBundle is a bundle file whose content restore refuses.
var ErrBadBundle = errors.New("refused")

// LockDir holds one lock file per container id, the records of restored
// inits and the hooks' logs: a directory of root's, mode 0700.
var LockDir = "/run/ctcr"

// Lock takes the lock of container id, so only one ctcr checkpoints or
// restores it at a time. wait says whether to wait for it.
func Lock(id string, wait bool) (func(), error) {
	if err := atomicfile.PrivateDir(LockDir); err != nil {
		return nil, err
	}
	f, err := atomicfile.OpenLock(LockDir, id+".lock", 0o600)
	if err != nil {
		return nil, err
	}
	how := unix.LOCK_EX
	if !wait {
		how |= unix.LOCK_NB
	}
	if err := unix.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("container %s: %w (%s)", id, ErrLocked, f.Name())
		}
		return nil, err
	}
	return func() { f.Close() }, nil
}
