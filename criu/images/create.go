package images

import (
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// Every file ctcr writes into an image directory is new: a dump writes
// into a staging directory it has just made, and the few files added
// after the commit (stats-dump) have no business existing before. So
// each is created with O_CREAT|O_EXCL|O_NOFOLLOW: a name already there,
// a symlink above all (planted by whoever can write to the directory,
// or left by a checkpoint copied from elsewhere), is refused by name
// instead of being written through, and its target is never touched.

// ErrNameTaken is the error of CreateFile when the name already exists
// (a file, or a symlink, dangling or not). It wraps fs.ErrExist.
var ErrNameTaken = fmt.Errorf("the name was there before (ctcr creates each image file anew and never writes through an existing file or symlink): %w", fs.ErrExist)

// CreateFile creates the file at path, which must not exist, with mode
// 0600 (images hold process memory), opened with flag (os.O_WRONLY or
// os.O_RDWR, plus any of O_APPEND) and close-on-exec. The error is a
// *fs.PathError naming path; for a name that exists its Err is
// ErrNameTaken.
//
// The file is opened with open(2) and wrapped with os.NewFile (one
// fcntl): os.OpenFile would also make it non-blocking, try to add it to
// the poller (an epoll_ctl that fails for a regular file) and make it
// blocking again, four system calls more for each of the some 7 images
// per task of a dump.
func CreateFile(path string, flag int) (*os.File, error) {
	fd, err := unix.Open(path, flag|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	for err == unix.EINTR {
		fd, err = unix.Open(path, flag|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	}
	if err != nil {
		// O_EXCL makes the kernel answer EEXIST for a symlink at path
		// (dangling or not) before O_NOFOLLOW's ELOOP could.
		if err == unix.EEXIST || err == unix.ELOOP {
			return nil, &fs.PathError{Op: "create", Path: path, Err: ErrNameTaken}
		}
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// WriteNewFile creates the file at path as CreateFile does and writes b
// into it. On a write error the half-written file is removed.
func WriteNewFile(path string, b []byte) error {
	f, err := CreateFile(path, os.O_WRONLY)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}
