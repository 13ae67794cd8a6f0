package test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/container"
)

// TestOtherContainer: a "container" no runtime knows, made with
// unshare(1) (new PID, UTS and IPC namespaces) and a freezer cgroup of
// its own, is checkpointed by its cgroup (--cgroup), restored, found
// again by its id (ps, kill, checkpoint by --pid) and killed.
func TestOtherContainer(t *testing.T) {
	needCtcr(t)
	if _, err := os.Stat("/sys/fs/cgroup/freezer"); err != nil {
		t.Skipf("no v1 freezer hierarchy at /sys/fs/cgroup/freezer: %v", err)
	}
	id := fmt.Sprintf("ctcrt-other-%d", os.Getpid())
	cgPath := "/" + id
	cgDir := filepath.Join("/sys/fs/cgroup/freezer", id)
	if err := os.Mkdir(cgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var restored int
	t.Cleanup(func() {
		if restored > 0 {
			unix.Kill(restored, unix.SIGKILL)
			reap(restored, 10*time.Second)
		}
		for end := time.Now().Add(10 * time.Second); os.Remove(cgDir) != nil && time.Now().Before(end); {
			time.Sleep(20 * time.Millisecond)
		}
		os.Remove(filepath.Join("/run/ctcr", id+".init.json"))
		os.Remove(filepath.Join("/run/ctcr", id+".lock"))
	})

	script := `while [ ! -e "$0/go" ]; do sleep 0.05; done
hostname h-other
(j=0; while :; do j=$((j+1)); echo $j > "$0/sub"; sleep 0.3; done) &
i=0
while :; do i=$((i+1)); echo $i > "$0/count"; sleep 0.2; done`
	cmd := exec.Command("unshare", "--pid", "--fork", "--uts", "--ipc", "sh", "-c", script, dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var init int
	for end := time.Now().Add(10 * time.Second); init == 0; {
		for pid := range childrenOf(cmd.Process.Pid) {
			init = pid
		}
		if time.Now().After(end) {
			t.Fatal("unshare started no child in 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := os.WriteFile(filepath.Join(cgDir, "cgroup.procs"), []byte(strconv.Itoa(init)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		b, _ := os.ReadFile(filepath.Join(dir, "count"))
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	waitCount := func(what string, above int) int {
		for end := time.Now().Add(10 * time.Second); ; {
			if n := count(); n > above {
				return n
			}
			if time.Now().After(end) {
				t.Fatalf("%s: the counter stays at %d", what, count())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	before := waitCount("before the checkpoint", 3)

	ck := filepath.Join(t.TempDir(), "ck")
	r := runCtcr(t, 60*time.Second, "checkpoint", id, "--cgroup", cgPath, "-D", ck)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d, want 0; stderr: %s", r, r.code(), r.stderr())
	}
	if !strings.Contains(r.stdout(), "checkpointed") {
		t.Errorf("%s: stdout %q, want a line saying it is checkpointed", r, r.stdout())
	}
	cmd.Wait() // unshare ends with its child
	if exists(init) {
		t.Fatalf("the init %d still exists after the checkpoint: %s", init, describe(init))
	}
	r = runCtcr(t, 60*time.Second, "checkpoint", id, "-D", filepath.Join(t.TempDir(), "none"))
	if r.code() != 1 || !strings.Contains(r.stderr(), "--cgroup") {
		t.Errorf("%s with nothing to find it by: exit status %d, stderr %q; want 1 and a hint at --pid/--cgroup", r, r.code(), r.stderr())
	}

	r = runCtcr(t, 60*time.Second, "restore", id, "-D", ck, "--json")
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d, want 0; stderr: %s", r, r.code(), r.stderr())
	}
	var out struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(r.stdout()), &out); err != nil || out.Pid <= 0 {
		t.Fatalf("%s: stdout %q: %v; want the new init's pid", r, r.stdout(), err)
	}
	restored = out.Pid
	after := waitCount("after restore", before)
	if after < before {
		t.Errorf("the counter went back from %d to %d", before, after)
	}
	if b, err := exec.Command("nsenter", "-t", strconv.Itoa(restored), "-u", "hostname").Output(); err != nil || strings.TrimSpace(string(b)) != "h-other" {
		t.Errorf("the restored hostname is %q (%v), want h-other", b, err)
	}
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", restored)); err != nil || !strings.Contains(string(st), "\nNSpid:\t"+strconv.Itoa(restored)+"\t1\n") {
		t.Errorf("the restored init is not PID 1 of its own namespace: %v\n%s", err, st)
	}
	if b, err := os.ReadFile(filepath.Join(cgDir, "cgroup.procs")); err != nil || !strings.Contains(" "+strings.Join(strings.Fields(string(b)), " ")+" ", " "+strconv.Itoa(restored)+" ") {
		t.Errorf("the restored init is not in its freezer cgroup %s: %q, %v", cgDir, b, err)
	}

	// Found again by its id: ctcr list and ps, a checkpoint by --pid,
	// ctcr kill.
	r = runCtcr(t, 20*time.Second, "list", "--json")
	var ents []container.Entry
	if err := json.Unmarshal([]byte(r.stdout()), &ents); err != nil || r.code() != 0 {
		t.Fatalf("%s: exit %d, %v: %s %s", r, r.code(), err, r.stdout(), r.stderr())
	}
	listed := false
	for _, e := range ents {
		if e.ID == id {
			listed = e.Status == "running" && e.Pid == restored && e.Runtime == "pid"
		}
	}
	if !listed {
		t.Errorf("ctcr list does not show %s running as init %d: %s", id, restored, r.stdout())
	}
	r = runCtcr(t, 20*time.Second, "ps", id, "--json")
	var ps []container.Process
	if err := json.Unmarshal([]byte(r.stdout()), &ps); err != nil || r.code() != 0 || len(ps) < 2 || ps[0].Pid != restored || ps[0].NSPid != 1 {
		t.Errorf("%s: exit %d, %v: %s %s; want the init (PID 1 inside), its subshell and their sleeps", r, r.code(), err, r.stdout(), r.stderr())
	}
	r = runCtcr(t, 60*time.Second, "checkpoint", id, "--pid", strconv.Itoa(restored), "--leave-running", "-D", filepath.Join(t.TempDir(), "ck2"))
	if r.code() != 0 {
		t.Errorf("%s: exit status %d, want 0; stderr: %s", r, r.code(), r.stderr())
	}
	waitCount("after a --leave-running checkpoint", count())
	r = runCtcr(t, 20*time.Second, "kill", id, "KILL")
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d; stderr: %s", r, r.code(), r.stderr())
	}
	if _, _, err := reap(restored, 10*time.Second); err != nil {
		t.Fatalf("the restored init after ctcr kill: %v", err)
	}
	restored = 0
	r = runCtcr(t, 20*time.Second, "checkpoint", id, "-D", filepath.Join(t.TempDir(), "ck3"))
	if r.code() != 31 {
		t.Errorf("%s of the killed container: exit status %d, want 31 (not running); stderr: %s", r, r.code(), r.stderr())
	}
}
