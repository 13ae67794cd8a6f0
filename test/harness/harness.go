// Package harness holds what the integration tests and the benchmark
// programs need alike to run ctcr against real processes.
package harness

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// CloseOnExecInherited marks every fd above stderr close-on-exec, so the
// workloads ctcr dumps do not inherit what the shell or test runner left
// open (a pipe there would make the dump refuse them).
func CloseOnExecInherited() error {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 2 {
			continue
		}
		// The fd of the directory listing itself is already gone: EBADF.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && !errors.Is(err, unix.EBADF) {
			return fmt.Errorf("fcntl(%d, F_SETFD, FD_CLOEXEC): %w", fd, err)
		}
	}
	return nil
}

// WaitFile waits up to timeout for path to exist.
func WaitFile(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %s after %v", path, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// PrepareBench checks that a benchmark can run (root, a ctcr binary at
// ctcr) and makes the calling process a child subreaper, so tasks that a
// dump orphans or a restore -d leaves behind are re-parented to it and
// reaped. It returns ctcr's absolute path.
func PrepareBench(ctcr string) (string, error) {
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("run as root (sudo make bench)")
	}
	abs, err := filepath.Abs(ctcr)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(abs); err != nil {
		return "", fmt.Errorf("no ctcr binary: %w (make build)", err)
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return "", fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", err)
	}
	return abs, CloseOnExecInherited()
}
