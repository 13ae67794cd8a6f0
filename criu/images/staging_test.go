package images

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

func stage(t *testing.T, s *Staging, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := os.WriteFile(s.Path(n), []byte(n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestStagingCommitMovesInventoryLast(t *testing.T) {
	final := filepath.Join(t.TempDir(), "ckpt") // missing: NewStaging creates it
	s, err := NewStaging(final)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(s.Dir), PartialPrefix) || filepath.Dir(s.Dir) != final {
		t.Fatalf("staging dir %s is not %s/%s*", s.Dir, final, PartialPrefix)
	}
	files := []string{"pstree.img", InventoryFile, "core-1.img", "pages-1.img", "zz-last-by-name.img"}
	stage(t, s, files...)

	var order []string
	rename = func(from, to string) error {
		order = append(order, filepath.Base(to))
		return os.Rename(from, to)
	}
	defer func() { rename = os.Rename }()

	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	if len(order) != len(files)+1 || order[len(order)-1] != InventoryFile || order[len(order)-2] != ManifestFile {
		t.Errorf("rename order %v, want all %d files with %s then %s last", order, len(files), ManifestFile, InventoryFile)
	}
	got := dirNames(t, final)
	files = append(files, ManifestFile)
	slices.Sort(files)
	if !slices.Equal(got, files) {
		t.Errorf("final dir holds %v, want %v (and no staging dir)", got, files)
	}
	if err := s.Abort(); err != nil {
		t.Errorf("Abort after Commit: %v", err)
	}
	if _, err := os.Stat(filepath.Join(final, InventoryFile)); err != nil {
		t.Errorf("Abort after Commit removed the checkpoint: %v", err)
	}
	if _, err := OpenCheckpoint(final); err != nil {
		t.Errorf("OpenCheckpoint after Commit: %v", err)
	}
}

func TestStagingAbortLeavesNothing(t *testing.T) {
	final := t.TempDir() // exists and is empty, as after `mkdir d`
	s, err := NewStaging(final)
	if err != nil {
		t.Fatal(err)
	}
	stage(t, s, "core-1.img", "pages-1.img", InventoryFile)
	if err := s.Abort(); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, final); len(got) != 0 {
		t.Errorf("after Abort the dir holds %v", got)
	}
}

func TestStagingRefusesAnExistingCheckpoint(t *testing.T) {
	final := t.TempDir()
	if err := os.WriteFile(filepath.Join(final, InventoryFile), []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewStaging(final); !errors.Is(err, ErrCheckpointExists) || !strings.Contains(err.Error(), final) {
		t.Fatalf("got %v, want ErrCheckpointExists naming %s", err, final)
	}
	if got := dirNames(t, final); !slices.Equal(got, []string{InventoryFile}) {
		t.Errorf("a refused NewStaging left %v", got)
	}

	s, err := NewStaging(final, Overwrite)
	if err != nil {
		t.Fatalf("with Overwrite: %v", err)
	}
	stage(t, s, InventoryFile, "core-2.img")
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(final, InventoryFile)); string(b) != InventoryFile {
		t.Errorf("inventory not replaced: %q", b)
	}
}

func TestStagingAcceptsADirWithOtherFiles(t *testing.T) {
	final := t.TempDir()
	if err := os.WriteFile(filepath.Join(final, "dump.log"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := NewStaging(final)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Abort()
}

func TestStagingCommitWithoutInventoryIsRefused(t *testing.T) {
	final := t.TempDir()
	s, err := NewStaging(final)
	if err != nil {
		t.Fatal(err)
	}
	stage(t, s, "core-1.img")
	if err := s.Commit(); err == nil {
		t.Fatal("Commit without inventory.img succeeded")
	}
	if err := s.Abort(); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, final); len(got) != 0 {
		t.Errorf("after a refused Commit and Abort the dir holds %v", got)
	}
}

func TestOpenCheckpoint(t *testing.T) {
	root := t.TempDir()
	empty := filepath.Join(root, "empty")
	os.Mkdir(empty, 0o700)
	partial := filepath.Join(root, "partial")
	os.MkdirAll(filepath.Join(partial, PartialPrefix+"123"), 0o700)
	file := filepath.Join(root, "file")
	os.WriteFile(file, nil, 0o600)
	for _, tc := range []struct {
		name, dir, want string
	}{
		{"a directory that does not exist", filepath.Join(root, "nope"), "no checkpoint in " + filepath.Join(root, "nope") + ": directory does not exist"},
		{"a file, not a directory", file, "not a directory"},
		{"an empty directory", empty, "no checkpoint in " + empty + ": inventory.img missing"},
		{"a dump that did not finish", partial, "inventory.img missing (an unfinished dump"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := OpenCheckpoint(tc.dir)
			if !errors.Is(err, ErrNoCheckpoint) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want ErrNoCheckpoint with %q", err, tc.want)
			}
		})
	}
	os.WriteFile(filepath.Join(empty, InventoryFile), nil, 0o600)
	c, err := OpenCheckpoint(empty)
	if err != nil {
		t.Fatal(err)
	}
	if c.Path("core-1.img") != filepath.Join(empty, "core-1.img") {
		t.Errorf("Path: %s", c.Path("core-1.img"))
	}
}

// TestStagingOverwriteReplacesADirectory: a parent image (a directory)
// replaces the old checkpoint's with Overwrite.
func TestStagingOverwriteReplacesADirectory(t *testing.T) {
	final := t.TempDir()
	for _, n := range []string{InventoryFile, "pre-copy/pages-1.img"} {
		os.MkdirAll(filepath.Dir(filepath.Join(final, n)), 0o700)
		if err := os.WriteFile(filepath.Join(final, n), []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, err := NewStaging(final, Overwrite)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(s.Path("pre-copy"), 0o700); err != nil {
		t.Fatal(err)
	}
	stage(t, s, InventoryFile, "pre-copy/pages-2.img")
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, filepath.Join(final, "pre-copy")); !slices.Equal(got, []string{ManifestFile, "pages-2.img"}) {
		t.Errorf("pre-copy holds %v after the overwrite, want only the new pages-2.img", got)
	}
}

// TestSyncAllSkipsMemory: the files of a commit are fsynced on a disk
// (the test's temporary directory), symlinks left to their directory,
// and none on a tmpfs, where fsync does nothing.
func TestSyncAllSkipsMemory(t *testing.T) {
	var mu sync.Mutex // syncAll flushes from several goroutines
	var synced []string
	defer func(old func(string) error) { syncFile = old }(syncFile)
	syncFile = func(p string) error {
		mu.Lock()
		defer mu.Unlock()
		synced = append(synced, filepath.Base(p))
		return nil
	}

	disk := t.TempDir()
	var sfs unix.Statfs_t
	if err := unix.Statfs(disk, &sfs); err != nil || sfs.Type == unix.TMPFS_MAGIC {
		t.Skipf("%s is on a tmpfs (or statfs failed: %v): no disk to compare with", disk, err)
	}
	if err := syncAll(disk, []string{"core-1.img", "pages-1.img", "parent"}, map[string]bool{"parent": true}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(synced)
	if fmt.Sprint(synced) != "[core-1.img pages-1.img]" {
		t.Errorf("on a disk the files flushed are %v, want [core-1.img pages-1.img]", synced)
	}

	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	mem := t.TempDir()
	if err := unix.Mount("tmpfs", mem, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("mount a tmpfs: %v", err)
	}
	defer unix.Unmount(mem, unix.MNT_DETACH)
	synced = nil
	if err := syncAll(mem, []string{"core-1.img", "pages-1.img"}, nil); err != nil {
		t.Fatal(err)
	}
	if len(synced) != 0 {
		t.Errorf("on a tmpfs %v were flushed, want none", synced)
	}
}
