package test

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// procStat is what the tests read from /proc/PID/stat.
type procStat struct {
	state byte // R, S, D, T, t, Z, ...
	ppid  int
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// comm may hold spaces and parentheses: the fields start after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: no ')' in %q", pid, s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: too short: %q", pid, s)
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: ppid %q", pid, f[1])
	}
	return procStat{state: f[0][0], ppid: ppid}, nil
}

func exists(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}

// statusField returns a field of /proc/PID/status, such as "TracerPid".
func statusField(pid int, name string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// syscallNr returns the number of the syscall pid is blocked in, per
// /proc/PID/syscall, or -1 while it runs in user space.
func syscallNr(pid int) (int, string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
	if err != nil {
		return -1, err.Error()
	}
	s := strings.TrimSpace(string(b))
	f := strings.Fields(s)
	if len(f) == 0 {
		return -1, s
	}
	nr, err := strconv.Atoi(f[0])
	if err != nil {
		return -1, s
	}
	return nr, s
}

// describe says what /proc knows of pid, for failure messages.
func describe(pid int) string {
	st, err := readStat(pid)
	if err != nil {
		return fmt.Sprintf("process %d: gone", pid)
	}
	_, sc := syscallNr(pid)
	wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid))
	return fmt.Sprintf("process %d: state %c, ppid %d, TracerPid %s, syscall %q, wchan %q",
		pid, st.state, st.ppid, statusField(pid, "TracerPid"), sc, wchan)
}

// childrenOf lists the processes whose parent is ppid.
func childrenOf(ppid int) map[int]procStat {
	kids := map[int]procStat{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readStat(pid); err == nil && st.ppid == ppid {
			kids[pid] = st
		}
	}
	return kids
}

// reap waits up to timeout for pid to exit and collects its status if it
// is a child of this process (restored tasks may be clone children, hence
// __WALL). For a task that is not our child it only waits for /proc/PID to
// vanish; reaped is then false.
func reap(pid int, timeout time.Duration) (ws unix.WaitStatus, reaped bool, err error) {
	deadline := time.Now().Add(timeout)
	for {
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG|unix.WALL, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ECHILD):
			if !exists(pid) {
				return 0, false, nil
			}
		case err != nil:
			return 0, false, fmt.Errorf("wait4(%d): %w", pid, err)
		case got == pid:
			return ws, true, nil
		}
		if time.Now().After(deadline) {
			return 0, false, fmt.Errorf("process %d has not exited after %v (%s)", pid, timeout, describe(pid))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// exitText renders a wait status the way a shell would report it.
func exitText(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Sprintf("killed by signal %d (%v)", int(ws.Signal()), ws.Signal())
	default:
		return fmt.Sprintf("wait status %#x", uint32(ws))
	}
}

// assertRunnable fails unless pid is alive, not stopped and not traced, as
// a task must be after a failed dump or a dump with --leave-running. It
// samples a few times: a task just detached may take a moment to settle.
func assertRunnable(pid int) error {
	good, last := 0, ""
	for i := 0; i < 10 && good < 3; i++ {
		st, err := readStat(pid)
		if err != nil {
			return fmt.Errorf("process %d is gone", pid)
		}
		if (st.state == 'R' || st.state == 'S') && statusField(pid, "TracerPid") == "0" {
			good++
		} else {
			good, last = 0, describe(pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if good < 3 {
		return fmt.Errorf("not running freely: %s", last)
	}
	return nil
}
