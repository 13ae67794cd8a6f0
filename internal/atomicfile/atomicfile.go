// Package atomicfile writes the files ctcr keeps outside its image
// directories (a bundle's config.json, stats.json and ctcr.json, a
// --pidfile, a hook's log, the records and locks under /run/ctcr) so that
// a name planted in the target directory cannot redirect the write:
//
//   - the data goes into a new file under a random name, created with
//     O_CREAT|O_EXCL|O_NOFOLLOW in the directory itself (held open as an
//     fd), so neither a symlink nor an existing file there is ever
//     opened;
//   - it gets its final mode before any byte is written, and is synced;
//   - it is renamed over the name with renameat on the same directory fd:
//     rename replaces a symlink at the name, it never follows it.
//
// Directories ctcr keeps to itself (lock and socket directories) are made
// with PrivateDir: 0700, owned by ctcr's user, and not a symlink.
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// tempPrefix starts the name of every file being written, so a directory
// listing shows what is ctcr's and a crash leaves recognisable names.
const tempPrefix = ".ctcr-tmp-"

// Write replaces dir/name with data, created with mode (0600 for
// anything that holds checkpoint data). The file appears whole or not at
// all.
func Write(dir, name string, data []byte, mode os.FileMode) error {
	return WriteWith(dir, name, mode, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

// WritePath is Write for a path.
func WritePath(path string, data []byte, mode os.FileMode) error {
	return Write(filepath.Dir(path), filepath.Base(path), data, mode)
}

// WriteWith replaces dir/name with what fill writes into the new file.
func WriteWith(dir, name string, mode os.FileMode, fill func(*os.File) error) error {
	target := filepath.Join(dir, name)
	if name == "" || name == "." || name == ".." || filepath.Base(name) != name {
		return fmt.Errorf("write %s: %q is not a file name", target, name)
	}
	d, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("write %s: %w", target, &os.PathError{Op: "open", Path: dir, Err: err})
	}
	defer unix.Close(d)
	f, tmp, err := CreateTemp(d, dir)
	if err != nil {
		return fmt.Errorf("write %s: %w", target, err)
	}
	fail := func(err error) error {
		f.Close()
		unix.Unlinkat(d, tmp, 0)
		return fmt.Errorf("write %s: %w", target, err)
	}
	// The final mode before any byte: the data is never readable by
	// more than it should be, not even for a moment.
	if err := f.Chmod(mode.Perm()); err != nil {
		return fail(err)
	}
	if err := fill(f); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		unix.Unlinkat(d, tmp, 0)
		return fmt.Errorf("write %s: %w", target, err)
	}
	if err := unix.Renameat(d, tmp, d, name); err != nil {
		unix.Unlinkat(d, tmp, 0)
		return fmt.Errorf("write %s: %w", target, &os.LinkError{Op: "rename", Old: filepath.Join(dir, tmp), New: target, Err: err})
	}
	return nil
}

// Create replaces dir/name with a new empty file of mode and returns it
// open for writing, for a file written as it goes (a log): it is made
// under a random name as Write does and renamed into place at once.
func Create(dir, name string, mode os.FileMode) (*os.File, error) {
	target := filepath.Join(dir, name)
	if name == "" || name == "." || name == ".." || filepath.Base(name) != name {
		return nil, fmt.Errorf("create %s: %q is not a file name", target, name)
	}
	d, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", target, &os.PathError{Op: "open", Path: dir, Err: err})
	}
	defer unix.Close(d)
	f, tmp, err := CreateTemp(d, dir)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", target, err)
	}
	if err = f.Chmod(mode.Perm()); err == nil {
		err = unix.Renameat(d, tmp, d, name)
	}
	if err != nil {
		f.Close()
		unix.Unlinkat(d, tmp, 0)
		return nil, fmt.Errorf("create %s: %w", target, err)
	}
	return f, nil
}

// CreateTemp creates a new empty file, mode 0600, under a random name in
// the directory open as dirfd (called dir in messages). It never opens
// an existing file or a symlink. It returns the file and its name.
func CreateTemp(dirfd int, dir string) (*os.File, string, error) {
	for range 100 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, "", err
		}
		name := tempPrefix + hex.EncodeToString(b[:])
		fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err == unix.EEXIST {
			continue
		}
		if err != nil {
			return nil, "", &os.PathError{Op: "create", Path: filepath.Join(dir, name), Err: err}
		}
		return os.NewFile(uintptr(fd), filepath.Join(dir, name)), name, nil
	}
	return nil, "", fmt.Errorf("create a temporary file in %s: every name tried exists", dir)
}

// OpenLock opens dir/name for a lock (flock) that many ctcr processes
// share, creating it if missing: an existing lock file is opened
// O_NOFOLLOW and must be a regular file; a missing one is made whole
// under a random name and linked into place without replacing anything.
func OpenLock(dir, name string, mode os.FileMode) (*os.File, error) {
	path := filepath.Join(dir, name)
	d, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(d)
	for range 10 {
		fd, err := unix.Openat(d, name, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err == nil {
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
				unix.Close(fd)
				return nil, fmt.Errorf("lock file %s is not a regular file", path)
			}
			if err := unix.SetNonblock(fd, false); err != nil {
				unix.Close(fd)
				return nil, err
			}
			return os.NewFile(uintptr(fd), path), nil
		}
		if err == unix.ELOOP {
			return nil, fmt.Errorf("lock file %s is a symlink, which ctcr never makes: remove it", path)
		}
		if err != unix.ENOENT {
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
		f, tmp, err := CreateTemp(d, dir)
		if err != nil {
			return nil, err
		}
		f.Chmod(mode.Perm())
		f.Close()
		// linkat fails with EEXIST rather than replace: another ctcr
		// may have made the lock file meanwhile, and its holder must
		// keep the one everybody opens.
		err = unix.Linkat(d, tmp, d, name, 0)
		unix.Unlinkat(d, tmp, 0)
		if err != nil && err != unix.EEXIST {
			return nil, &os.LinkError{Op: "link", Old: filepath.Join(dir, tmp), New: path, Err: err}
		}
	}
	return nil, fmt.Errorf("lock file %s: it keeps disappearing", path)
}

// PrivateDir makes directory path (and its missing parents, 0755) with
// mode 0700 if it does not exist, and checks that it is a directory of
// ctcr's user and no symlink, and that no one else may enter it; an
// existing one with a looser mode is tightened.
func PrivateDir(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := unix.Mkdir(path, 0o700); err != nil && err != unix.EEXIST {
		return &os.PathError{Op: "mkdir", Path: path, Err: err}
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ELOOP || err == unix.ENOTDIR {
			return fmt.Errorf("%s is not a directory (a symlink?): ctcr keeps its own files there: %w", path, errNotPrivate)
		}
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s belongs to uid %d, not to ctcr's user %d: %w", path, st.Uid, os.Geteuid(), errNotPrivate)
	}
	if st.Mode&0o077 != 0 {
		if err := unix.Fchmod(fd, 0o700); err != nil {
			return &os.PathError{Op: "chmod", Path: path, Err: err}
		}
	}
	return nil
}

var errNotPrivate = errors.New("not a private directory")
