package container

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// A container's checkpoints without -D go to its home,
// CheckpointRoot/CTID, one generation each, so that scheduled
// checkpoints need no wrapper deleting the last good one first:
//
//	/var/lib/ctcr/CTID/
//	  20261205T153120.123Z/   a complete checkpoint (a bundle: ctcr.json, images/, ...)
//	  20261205T154120.456Z/   the next one
//	  latest -> 20261205T154120.456Z
//
// latest is replaced (a symlink under a random name, renamed over it)
// only once a checkpoint is complete, so it always names one that is.
// The layout of ctcr 0.1.0 (the bundle directly in CTID/) is still
// read: it is the generation named ".", restored when there is no
// latest.

// LatestLink names the newest complete generation in a container's home.
const LatestLink = "latest"

// generationFormat names a generation by its UTC time, sortable as text.
const generationFormat = "20060102T150405.000Z"

// Home is the directory of container id's checkpoints.
func Home(id string) string { return filepath.Join(CheckpointRoot, id) }

// Generation is one checkpoint in a container's home.
type Generation struct {
	Name     string    `json:"name"`
	Dir      string    `json:"dir"`
	Created  time.Time `json:"created"`
	Bytes    int64     `json:"bytes"`    // the size of its files
	Latest   bool      `json:"latest"`   // latest names it
	Complete bool      `json:"complete"` // it holds ctcr.json
}

// newGeneration makes a new, empty generation directory in home and
// returns it.
func newGeneration(home string) (string, error) {
	if err := os.MkdirAll(home, 0o700); err != nil {
		return "", fmt.Errorf("checkpoint home: %w", err)
	}
	name := time.Now().UTC().Format(generationFormat)
	for i := 1; ; i++ {
		dir := filepath.Join(home, name)
		if i > 1 {
			dir = fmt.Sprintf("%s-%d", dir, i)
		}
		err := os.Mkdir(dir, 0o700)
		if err == nil {
			return dir, nil
		}
		if !errors.Is(err, fs.ErrExist) || i > 100 {
			return "", fmt.Errorf("checkpoint generation: %w", err)
		}
	}
}

// setLatest points home/latest at generation name, atomically: readers
// see the old target or the new one, never no link.
func setLatest(home, name string) error {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	tmp := filepath.Join(home, ".latest-"+hex.EncodeToString(rnd[:]))
	if err := os.Symlink(name, tmp); err != nil {
		return fmt.Errorf("point %s at %s: %w", filepath.Join(home, LatestLink), name, err)
	}
	if err := os.Rename(tmp, filepath.Join(home, LatestLink)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("point %s at %s: %w", filepath.Join(home, LatestLink), name, err)
	}
	if d, err := os.Open(home); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// latestName returns the generation home/latest names, or "".
func latestName(home string) string {
	t, err := os.Readlink(filepath.Join(home, LatestLink))
	if err != nil || !validName(t) {
		return ""
	}
	return t
}

// validName accepts a generation's name: one path component.
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}

// Generations lists the checkpoints in container id's home, oldest
// first; a home in the old layout lists as the generation ".".
func Generations(id string) ([]Generation, error) {
	if !validName(id) {
		return nil, fmt.Errorf("container id %q: %w", id, ErrUnknown)
	}
	return generations(Home(id))
}

func generations(home string) ([]Generation, error) {
	ents, err := os.ReadDir(home)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	latest := latestName(home)
	var out []Generation
	add := func(name, dir string, skip func(string) bool) {
		g := Generation{Name: name, Dir: dir, Latest: name == latest && name != "."}
		if m, _, err := ReadBundle(dir); err == nil {
			g.Complete, g.Created = true, m.Created
		} else if fi, err := os.Stat(dir); err == nil {
			g.Created = fi.ModTime().UTC()
		}
		g.Bytes = dirBytes(dir, skip)
		out = append(out, g)
	}
	if _, err := os.Stat(filepath.Join(home, "ctcr.json")); err == nil {
		gens := map[string]bool{}
		for _, e := range ents {
			if e.IsDir() {
				if _, err := os.Stat(filepath.Join(home, e.Name(), "ctcr.json")); err == nil {
					gens[e.Name()] = true
				}
			}
		}
		add(".", home, func(rel string) bool { return gens[strings.SplitN(rel, "/", 2)[0]] })
	}
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") || e.Name() == "images" {
			continue
		}
		dir := filepath.Join(home, e.Name())
		if _, err := time.Parse(generationFormat, strings.SplitN(e.Name(), "-", 2)[0]); err != nil {
			if _, err := os.Stat(filepath.Join(dir, "ctcr.json")); err != nil {
				continue // not a checkpoint of ctcr's
			}
		}
		add(e.Name(), dir, nil)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// dirBytes sums the sizes of the regular files below dir (not following
// links), leaving out those skip names (relative paths).
func dirBytes(dir string, skip func(string) bool) int64 {
	var n int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		if skip != nil && rel != "." && skip(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// FindCheckpoint returns the checkpoint to restore from dir (a
// container's home or a checkpoint directory; "" is id's home): the
// generation name if given, else dir itself if it holds a checkpoint,
// else the generation latest names. A missing one is ErrUnknown: there
// is nothing to restore.
func FindCheckpoint(id, dir, name string) (string, error) {
	home := dir
	if home == "" {
		if !validName(id) {
			return "", fmt.Errorf("container id %q: %w", id, ErrUnknown)
		}
		home = Home(id)
	}
	if name != "" {
		if name != "." && !validName(name) {
			return "", fmt.Errorf("checkpoint name %q: one directory name in %s, as 'ctcr checkpoints %s' lists them", name, home, id)
		}
		d := filepath.Join(home, name)
		if name == "." {
			d = home
		}
		if _, err := os.Stat(filepath.Join(d, "ctcr.json")); err != nil {
			return "", fmt.Errorf("container %s: %w: no checkpoint %s (%s missing; 'ctcr checkpoints %s' lists them)", id, ErrUnknown, name, filepath.Join(d, "ctcr.json"), id)
		}
		return d, nil
	}
	if _, err := os.Stat(filepath.Join(home, "ctcr.json")); err == nil && latestName(home) == "" {
		return home, nil
	}
	if l := latestName(home); l != "" {
		d := filepath.Join(home, l)
		if _, err := os.Stat(filepath.Join(d, "ctcr.json")); err == nil {
			return d, nil
		}
		return "", fmt.Errorf("container %s: %s names %s, which holds no complete checkpoint: give --checkpoint NAME ('ctcr checkpoints %s' lists them)", id, filepath.Join(home, LatestLink), l, id)
	}
	return "", fmt.Errorf("container %s: %w: no checkpoint in %s (no ctcr.json, no %s)", id, ErrUnknown, home, LatestLink)
}

// prune removes the oldest complete generations of home beyond keep,
// never the one latest names nor the old layout's, and returns the
// directories it removed.
func prune(home string, keep int) ([]string, error) {
	if keep <= 0 {
		return nil, nil
	}
	gens, err := generations(home)
	if err != nil {
		return nil, err
	}
	var complete []Generation
	for _, g := range gens {
		if g.Complete && g.Name != "." {
			complete = append(complete, g)
		}
	}
	var removed []string
	for i := 0; i < len(complete)-keep; i++ {
		g := complete[i]
		if g.Latest {
			continue
		}
		// Renamed out of sight first: a restore never sees it half
		// removed.
		gone := filepath.Join(home, ".removing-"+g.Name)
		if err := os.Rename(g.Dir, gone); err != nil {
			return removed, fmt.Errorf("prune %s: %w", g.Dir, err)
		}
		if err := os.RemoveAll(gone); err != nil {
			return removed, fmt.Errorf("prune %s: %w", g.Dir, err)
		}
		removed = append(removed, g.Dir)
	}
	return removed, nil
}

// LatestCheckpoint returns the checkpoint a restore of id would take
// from its home, or "".
func LatestCheckpoint(id string) string {
	d, err := FindCheckpoint(id, "", "")
	if err != nil {
		return ""
	}
	return d
}
