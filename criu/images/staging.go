package images

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// InventoryFile is the image whose presence marks a complete checkpoint.
const InventoryFile = "inventory.img"

// PartialPrefix starts the name of the temporary directory a Staging
// writes into, inside the final directory (so that Commit only renames,
// never copies across file systems).
const PartialPrefix = ".ctcr-partial-"

// ErrCheckpointExists is returned by NewStaging when the directory already
// holds a checkpoint and Overwrite was not given.
var ErrCheckpointExists = errors.New("directory already holds a checkpoint")

// ErrNoCheckpoint is returned by OpenCheckpoint for a directory that does
// not exist or has no inventory.img (nothing dumped there, or a dump that
// did not finish).
var ErrNoCheckpoint = errors.New("no checkpoint")

// StagingOption changes what NewStaging accepts.
type StagingOption int

const (
	// Overwrite lets NewStaging use a directory that already holds a
	// checkpoint. Commit then first removes the old inventory.img, so that
	// a crash midway leaves a directory that reads as partial, never as
	// a mix of two checkpoints. Old images the new dump does not rewrite
	// stay; they are unreachable from the new pstree.img.
	Overwrite StagingOption = iota + 1
	// PreDump stages a pre-dump: PreDumpFile, not inventory.img, marks it
	// complete (a pre-dump cannot be restored by itself).
	PreDump
)

// PreDumpFile is the file whose presence marks a complete pre-dump.
const PreDumpFile = "pre-dump.json"

// Staging collects the images of one dump in a temporary directory and
// moves them into place only when the dump is complete. Typical use:
//
//	s, err := images.NewStaging(dir)
//	...
//	defer s.Abort() // no-op after a successful Commit
//	... write s.Path(images.Core.FileName(pid)) ...
//	return s.Commit()
//
// A Staging is not safe for concurrent Commit/Abort; Path may be called
// from any goroutine.
type Staging struct {
	Dir      string // temporary directory to write images into; immutable
	FinalDir string // where Commit moves them; immutable

	overwrite bool     // immutable
	marker    string   // the file that marks the images complete; immutable
	created   []string // directories NewStaging made, deepest first; immutable
	done      bool     // set by Commit or Abort
}

// NewStaging prepares a dump into finalDir. finalDir is created (mode
// 0700: images hold process memory) if missing; it may exist and be
// empty, or hold unrelated files, but must not already hold a checkpoint
// (inventory.img) unless Overwrite is given.
func NewStaging(finalDir string, opts ...StagingOption) (*Staging, error) {
	s := &Staging{FinalDir: finalDir, overwrite: slices.Contains(opts, Overwrite), marker: InventoryFile}
	if slices.Contains(opts, PreDump) {
		s.marker = PreDumpFile
	}
	// Those made here go again if the dump fails: a failed dump
	// leaves no directory behind.
	for d := filepath.Clean(finalDir); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil || d == filepath.Dir(d) {
			break
		}
		s.created = append(s.created, d)
	}
	if err := os.MkdirAll(finalDir, 0o700); err != nil {
		s.removeCreated()
		return nil, fmt.Errorf("images: creating checkpoint directory: %w", err)
	}
	if !s.overwrite {
		if _, err := os.Lstat(filepath.Join(finalDir, s.marker)); err == nil {
			return nil, fmt.Errorf("images: %s: %w (%s exists; remove it or overwrite)", finalDir, ErrCheckpointExists, s.marker)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("images: %w", err)
		}
	}
	RemoveStalePartials(finalDir)
	dir, err := MkdirPartial(finalDir, "")
	if err != nil {
		s.removeCreated()
		return nil, fmt.Errorf("images: creating staging directory: %w", err)
	}
	s.Dir = dir
	return s, nil
}

// Path returns the path of image name inside the staging directory.
func (s *Staging) Path(name string) string { return filepath.Join(s.Dir, name) }

// WriteFile creates the staged file name, which must not exist yet
// (CreateFile: O_EXCL, and no symlink followed), and writes b into it.
func (s *Staging) WriteFile(name string, b []byte) error {
	return WriteNewFile(s.Path(name), b)
}

// Commit fsyncs every staged file, renames each into FinalDir with
// inventory.img last, fsyncs FinalDir and removes the staging directory.
// Without a staged inventory.img it refuses: that would publish a dump
// that reads as partial. After Commit, Abort does nothing.
func (s *Staging) Commit() error {
	if s.done {
		return errors.New("images: staging already committed or aborted")
	}
	ents, err := os.ReadDir(s.Dir)
	if err != nil {
		return fmt.Errorf("images: commit: %w", err)
	}
	var names []string
	links := map[string]bool{}
	haveMarker := false
	for _, e := range ents {
		if e.Name() == s.marker {
			haveMarker = true
			continue
		}
		names = append(names, e.Name())
		if e.Type()&fs.ModeSymlink != 0 {
			links[e.Name()] = true
		}
	}
	if !haveMarker {
		return fmt.Errorf("images: commit %s: no %s staged; the dump is incomplete", s.FinalDir, s.marker)
	}
	// The manifest covers every file, the marker too, and is published
	// just before the marker: a checkpoint that reads as complete has it.
	if err := WriteManifest(s.Dir); err != nil {
		return fmt.Errorf("images: commit: %w", err)
	}
	names = append(names, ManifestFile, s.marker) // last: its arrival makes the checkpoint whole

	// Data first: a renamed file whose blocks are not on disk could
	// surface after a crash as a complete checkpoint with zeroed images.
	if err := syncAll(s.Dir, names, links); err != nil {
		return fmt.Errorf("images: commit: %w", err)
	}
	if s.overwrite {
		old := filepath.Join(s.FinalDir, s.marker)
		if err := os.Remove(old); err == nil {
			if err := syncPath(s.FinalDir); err != nil {
				return fmt.Errorf("images: commit: %w", err)
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("images: commit: %w", err)
		}
		// Images of the old checkpoint that the new one does not
		// replace would not be in its manifest.
		if err := removeOldImages(s.FinalDir, names); err != nil {
			return fmt.Errorf("images: commit: %w", err)
		}
	}
	for i, n := range names {
		if i == len(names)-1 {
			// Everything else must be durable in FinalDir before the
			// inventory can be.
			if err := syncPath(s.FinalDir); err != nil {
				return fmt.Errorf("images: commit: %w", err)
			}
		}
		if s.overwrite {
			// A directory (a parent image) cannot be renamed over the
			// old checkpoint's.
			if fi, err := os.Lstat(filepath.Join(s.Dir, n)); err == nil && fi.IsDir() {
				if err := os.RemoveAll(filepath.Join(s.FinalDir, n)); err != nil {
					return fmt.Errorf("images: commit: %w", err)
				}
			}
		}
		if err := rename(filepath.Join(s.Dir, n), filepath.Join(s.FinalDir, n)); err != nil {
			return fmt.Errorf("images: commit: %w", err)
		}
	}
	s.done = true
	if err := os.Remove(s.Dir); err != nil {
		return fmt.Errorf("images: commit: removing staging directory: %w", err)
	}
	if err := syncPath(s.FinalDir); err != nil {
		return fmt.Errorf("images: commit: %w", err)
	}
	return nil
}

// removeOldImages removes from dir the images (*.img, links, manifest)
// whose names are not in keep.
func removeOldImages(dir string, keep []string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		n := e.Name()
		if slices.Contains(keep, n) || strings.HasPrefix(n, ".") {
			continue
		}
		if strings.HasSuffix(n, ".img") || n == ManifestFile || e.Type()&fs.ModeSymlink != 0 {
			if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// MkdirPartial makes a staging directory in dir, named PartialPrefix,
// then kind, then "pid" and ctcr's PID, so that a later run knows whether
// its maker is still at work (RemoveStalePartials).
func MkdirPartial(dir, kind string) (string, error) {
	return os.MkdirTemp(dir, fmt.Sprintf("%s%spid%d-", PartialPrefix, kind, os.Getpid()))
}

// RemoveStalePartials removes the staging directories in dir that a
// ctcr which is gone left behind (killed, or its machine crashed): those
// whose name carries the PID of a process that no longer exists. A
// directory whose PID is alive may be another dump at work and stays;
// one of an older ctcr without a PID in its name stays too.
func RemoveStalePartials(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		pid, ok := partialPid(e.Name())
		if !ok || !e.IsDir() || pid == os.Getpid() {
			continue
		}
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

// partialPid returns the PID in the name of a staging directory
// MkdirPartial made.
func partialPid(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, PartialPrefix)
	if !ok {
		return 0, false
	}
	i := strings.LastIndex(rest, "pid")
	if i < 0 {
		return 0, false
	}
	num, _, ok := strings.Cut(rest[i+3:], "-")
	pid, err := strconv.Atoi(num)
	if !ok || err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// Abort removes the staging directory and everything in it. It does
// nothing after Commit or a previous Abort, so it can be deferred.
func (s *Staging) Abort() error {
	if s.done {
		return nil
	}
	s.done = true
	if err := os.RemoveAll(s.Dir); err != nil {
		return fmt.Errorf("images: abort: %w", err)
	}
	s.removeCreated()
	return nil
}

// removeCreated removes the directories NewStaging made, if empty.
func (s *Staging) removeCreated() {
	for _, d := range s.created {
		if os.Remove(d) != nil {
			return
		}
	}
}

// syncers is how many files syncAll flushes at once. A journaling file
// system commits concurrent fsyncs together: a tree of 1,000 processes
// writes some 8,000 images, whose commit took 3.7-4.0 s one by one and
// 3.0-3.1 s 32 at a time on this machine's disk (one syncfs of the whole
// file system: 2.3 s, but it would wait for everybody's dirty data).
const syncers = 32

// syncAll fsyncs the files names in dir, syncers at a time, and returns
// the first error. A link (to a parent image, one of links) is made
// durable with the directory; opening it would follow it. On a file
// system in memory (tmpfs, ramfs) there is nothing to flush: the open,
// fsync and close of each of the 7 images per task of a dump would do
// nothing.
func syncAll(dir string, names []string, links map[string]bool) error {
	var sfs unix.Statfs_t
	if unix.Statfs(dir, &sfs) == nil && (sfs.Type == unix.TMPFS_MAGIC || sfs.Type == unix.RAMFS_MAGIC) {
		return nil
	}
	work := make(chan string)
	errs := make(chan error, syncers)
	for range syncers {
		go func() {
			var first error
			for n := range work {
				if first != nil {
					continue
				}
				if links[n] {
					continue
				}
				first = syncFile(filepath.Join(dir, n))
			}
			errs <- first
		}()
	}
	for _, n := range names {
		work <- n
	}
	close(work)
	var first error
	for range syncers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// syncFile is syncPath for syncAll's files; tests replace it to see
// which are flushed.
var syncFile = syncPath

// rename is os.Rename; tests replace it to observe the order of renames.
var rename = os.Rename

// syncPath fsyncs the file at path with three system calls: os.Open
// adds an fstat, four fcntl and an epoll_ctl, for each of the some 7
// images per task of a dump.
func syncPath(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	for err == unix.EINTR {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	err = unix.Fsync(fd)
	for err == unix.EINTR {
		err = unix.Fsync(fd)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return nil
}

// Checkpoint is a finished image directory opened for reading.
type Checkpoint struct {
	Dir string // immutable
}

// OpenCheckpoint checks that dir exists and holds inventory.img, and
// returns a Checkpoint to read it. Errors wrap ErrNoCheckpoint and name the
// directory.
func OpenCheckpoint(dir string) (*Checkpoint, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w in %s: directory does not exist", ErrNoCheckpoint, dir)
		}
		return nil, fmt.Errorf("images: opening checkpoint: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%w in %s: not a directory", ErrNoCheckpoint, dir)
	}
	if _, err := os.Stat(filepath.Join(dir, InventoryFile)); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("images: opening checkpoint: %w", err)
		}
		why := InventoryFile + " missing"
		if partialLeft(dir) {
			why += " (an unfinished dump left " + PartialPrefix + "* behind)"
		}
		return nil, fmt.Errorf("%w in %s: %s", ErrNoCheckpoint, dir, why)
	}
	return &Checkpoint{Dir: dir}, nil
}

func partialLeft(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), PartialPrefix) {
			return true
		}
	}
	return false
}

// Path returns the path of image name in the checkpoint.
func (c *Checkpoint) Path(name string) string { return filepath.Join(c.Dir, name) }
