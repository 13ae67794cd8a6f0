// Package harness holds what the integration tests and the benchmark
// programs need alike to run ctcr against real processes.
package harness

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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

// TreePids lists root and its descendants, sorted.
func TreePids(root int) []int {
	kids := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			kids[ppid] = append(kids[ppid], pid)
		}
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, kids[out[i]]...)
	}
	slices.Sort(out)
	return out
}

// ReapGone reaps this process's exited children until none of pids is
// left. No ctcr command runs meanwhile, so reaping any child is safe.
func ReapGone(pids []int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		for {
			var ws unix.WaitStatus
			got, err := unix.Wait4(-1, &ws, unix.WNOHANG|unix.WALL, nil)
			if got <= 0 || err != nil {
				break
			}
		}
		left := 0
		for _, pid := range pids {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of the workload's processes are still there after %v", left, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// KillByDir kills every process whose command line names dir, and reaps.
func KillByDir(dir string) {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(b), dir) {
			unix.Kill(pid, unix.SIGKILL)
			pids = append(pids, pid)
		}
	}
	ReapGone(pids, 10*time.Second)
}
