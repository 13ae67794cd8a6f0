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

// KillWorkload kills every process of one workload and reaps those that
// are this process's children, whether the test that ran it passed or
// failed. A workload's processes are: root's tree while root is still the
// workload (its command line names dir, or it is this process's child),
// every process whose command line names dir (forked children and the
// copies a restore creates keep the argv of the original, whatever PID
// they got) and all descendants of those. It scans again until nothing
// is left, as a task may fork between a scan and its kill, and gives up
// after timeout. It reaps by PID only: a wait for any child would steal
// the status another helper of the test waits for.
func KillWorkload(root int, dir string, timeout time.Duration) error {
	self := os.Getpid()
	killed := map[int]bool{}
	deadline := time.Now().Add(timeout)
	for {
		procs := scanProcs()
		var seeds []int
		if p, ok := procs[root]; ok && root != self && (p.ppid == self || strings.Contains(p.cmdline, dir)) {
			seeds = append(seeds, root)
		}
		for pid, p := range procs {
			if pid != self && dir != "" && strings.Contains(p.cmdline, dir) {
				seeds = append(seeds, pid)
			}
		}
		kids := map[int][]int{}
		for pid, p := range procs {
			kids[p.ppid] = append(kids[p.ppid], pid)
		}
		live := 0
		seen := map[int]bool{}
		for i := 0; i < len(seeds); i++ {
			pid := seeds[i]
			if seen[pid] || pid == self {
				continue
			}
			seen[pid] = true
			seeds = append(seeds, kids[pid]...)
			if procs[pid].state != 'Z' {
				unix.Kill(pid, unix.SIGKILL)
				live++
			}
			killed[pid] = true
		}
		// Reap what is ours: the killed tasks and, as this process is a
		// subreaper, the children of killed tasks that were re-parented
		// to it (a zombie has no command line to match).
		for pid := range killed {
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, unix.WNOHANG|unix.WALL, nil)
		}
		left := 0
		for pid := range killed {
			if p, ok := readProc(pid); ok && (p.state != 'Z' || p.ppid == self) {
				left++
			}
		}
		if live == 0 && left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d processes of the workload in %s (PID %d) are still there after %v", left+live, dir, root, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// procInfo is what KillWorkload needs of a process.
type procInfo struct {
	ppid    int
	state   byte
	cmdline string
}

func readProc(pid int) (procInfo, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procInfo{}, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procInfo{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return procInfo{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return procInfo{ppid: ppid, state: f[0][0], cmdline: string(cmdline)}, true
}

func scanProcs() map[int]procInfo {
	out := map[int]procInfo{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			out[pid] = p
		}
	}
	return out
}
