package proc

import (
	"os"
	"slices"
	"strconv"
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

func listNumbers(dir string) ([]int, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Readdirnames, not ReadDir: the names are all we need, and an lstat
	// per entry would fail for entries that vanish mid-listing.
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
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
