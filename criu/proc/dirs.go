package proc

import (
	"os"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// Threads lists /proc/PID/task, sorted ascending. Threads that start or
// exit while the list is read may or may not appear; a stable list needs
// the tasks stopped (frozen or seized) first.
func Threads(pid int) ([]int, error) {
	return listNumbers(pidFile(pid, "task"))
}

// Fds lists /proc/PID/fd numbers, sorted ascending.
func Fds(pid int) ([]int, error) {
	return listNumbers(pidFile(pid, "fd"))
}

// listNumbers lists a /proc directory of numbered entries with getdents
// into a pooled buffer: os.File's Readdirnames costs an fstat, four
// fcntl and an epoll_ctl more per directory, and a dump lists two per
// task.
func listNumbers(dir string) ([]int, error) {
	fd, err := openRead(dir, unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	var names []string
	for {
		n, err := unix.Getdents(fd, *bp)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "readdirent", Path: dir, Err: err}
		}
		if n <= 0 {
			break
		}
		// Names only, no lstat per entry: entries that vanish
		// mid-listing must not fail it. "." and ".." are skipped.
		_, _, names = unix.ParseDirent((*bp)[:n], -1, names)
	}
	ns := make([]int, 0, len(names))
	for _, name := range names {
		n, err := strconv.Atoi(name)
		if err != nil {
			return nil, fileErr(dir, "entry %q is not a number", name)
		}
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return ns, nil
}
