package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// A test process that dies without running its clean-ups (a `go test`
// timeout panics and exits, a SIGKILL) leaves its workloads running and
// its containers created. The next test run sweeps those up, and only
// those: the machine runs other test processes at the same time, and
// their workloads and containers are alive for a reason.
//
// Ownership is proved with a lock: a test process holds an flock on
// DIR/owner.lock for as long as it runs (the kernel drops it when the
// process dies, however it dies), so a DIR whose lock can be taken belongs
// to nobody.

const ownerLock = "owner.lock"

// OwnDir marks dir as this process's for as long as it runs. The fd stays
// open on purpose until exit; it is close-on-exec so no workload holds it.
func OwnDir(dir string) error {
	fd, err := unix.Open(filepath.Join(dir, ownerLock), unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("open %s: %w", filepath.Join(dir, ownerLock), err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		return fmt.Errorf("flock %s: %w", filepath.Join(dir, ownerLock), err)
	}
	return nil
}

// ownerDead reports whether dir has an owner lock that no process holds.
// A dir without the lock file (made by an older test binary, or not made
// for a test at all) is never called dead, nor one whose lock file is
// younger than a minute: OwnDir creates the file before it locks it, and
// a run starting at the same moment must not take that instant for a
// death.
func ownerDead(dir string) bool {
	fd, err := unix.Open(filepath.Join(dir, ownerLock), unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || time.Since(time.Unix(st.Mtim.Unix())) < time.Minute {
		return false
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return false
	}
	unix.Flock(fd, unix.LOCK_UN)
	return true
}

// SweepDeadDirs kills every process whose command line names a directory
// matching pattern whose owner is dead (see OwnDir), then removes the
// directory. It returns the directories it swept.
func SweepDeadDirs(pattern string) []string {
	dirs, _ := filepath.Glob(pattern)
	var swept []string
	for _, dir := range dirs {
		if !ownerDead(dir) {
			continue
		}
		KillWorkload(0, dir+"/", 10*time.Second)
		os.RemoveAll(dir)
		swept = append(swept, dir)
	}
	return swept
}

// testContainerID matches the names the tests give their containers,
// ctcrt-NAME-PID-SEQ, PID being the test process's.
var testContainerID = regexp.MustCompile(`^ctcrt-.*-([0-9]+)-[0-9]+$`)

// testProcessAlive reports whether pid is a running Go test binary.
func testProcessAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	argv0 := strings.SplitN(string(b), "\x00", 2)[0]
	return strings.HasSuffix(argv0, ".test")
}

type runtimeContainer struct {
	ID     string `json:"id"`
	Bundle string `json:"bundle"`
}

// DeleteContainers force-deletes every container of OCI runtime (runc,
// crun; their default state root) for which leftover says yes, and
// returns their IDs.
func DeleteContainers(runtime string, leftover func(id, bundle string) bool) []string {
	if _, err := exec.LookPath(runtime); err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, runtime, "list", "--format", "json").Output()
	if err != nil {
		return nil
	}
	var list []runtimeContainer
	if json.Unmarshal(out, &list) != nil {
		return nil
	}
	var deleted []string
	for _, c := range list {
		if !leftover(c.ID, c.Bundle) {
			continue
		}
		if exec.CommandContext(ctx, runtime, "delete", "-f", c.ID).Run() == nil {
			deleted = append(deleted, c.ID)
		}
	}
	return deleted
}

// SweepDeadContainers deletes the runc and crun containers that dead test
// processes created: named ctcrt-NAME-PID-SEQ with no test binary at PID,
// or whose bundle lies in a directory whose owner is dead.
func SweepDeadContainers(ownedDirs string) []string {
	dead, _ := filepath.Glob(ownedDirs)
	leftover := func(id, bundle string) bool {
		if m := testContainerID.FindStringSubmatch(id); m != nil {
			if pid, err := strconv.Atoi(m[1]); err == nil && !testProcessAlive(pid) {
				return true
			}
		}
		for _, d := range dead {
			if strings.HasPrefix(bundle, d+"/") && ownerDead(d) {
				return true
			}
		}
		return false
	}
	return append(DeleteContainers("runc", leftover), DeleteContainers("crun", leftover)...)
}

// DeleteOwnContainers deletes the runc and crun containers this test
// process named (ctcrt-NAME-PID-SEQ) that its tests' clean-ups missed.
func DeleteOwnContainers() []string {
	own := func(id, _ string) bool {
		m := testContainerID.FindStringSubmatch(id)
		return m != nil && m[1] == strconv.Itoa(os.Getpid())
	}
	return append(DeleteContainers("runc", own), DeleteContainers("crun", own)...)
}
