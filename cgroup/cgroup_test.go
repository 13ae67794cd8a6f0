package cgroup

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// freezerState reads the freezer of whichever version the set uses.
func freezerState(t *testing.T, s *Set) string {
	t.Helper()
	b, err := os.ReadFile(s.FreezerPath())
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// readTicks returns how far a ticking shell got.
func readTicks(t *testing.T, path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

// TestFreezeV2 freezes and thaws a real task through the cgroup v2
// freezer (cgroup.freeze), in a cgroup of its own that the test makes
// in the v2 hierarchy (/sys/fs/cgroup/unified on a hybrid machine).
func TestFreezeV2(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a cgroup")
	}
	var mnt string
	for _, m := range []string{filepath.Join(Root, "unified"), Root} {
		if _, err := os.Stat(filepath.Join(m, "cgroup.procs")); err == nil {
			if _, err := os.Stat(filepath.Join(m, "cgroup.controllers")); err == nil {
				mnt = m
				break
			}
		}
	}
	if mnt == "" {
		t.Skip("no cgroup v2 hierarchy mounted")
	}
	name := "ctcr-test-freeze-" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "")
	dir := filepath.Join(mnt, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(dir)
	if _, err := os.Stat(filepath.Join(dir, "cgroup.freeze")); err != nil {
		t.Skip("this v2 hierarchy has no cgroup.freeze")
	}
	ticks := filepath.Join(t.TempDir(), "ticks")
	cmd := exec.Command("/bin/sh", "-c", `i=0; while :; do i=$((i+1)); echo $i > "$0"; sleep 0.01; done`, ticks)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill the shell and its sleep, and wait for the cgroup to empty so
	// it can be removed.
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		for i := 0; i < 200; i++ {
			if b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs")); len(strings.TrimSpace(string(b))) == 0 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	s := &Set{V2: "/" + name}
	if err := s.Enter(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	t.Run("freeze stops every task and reports frozen", func(t *testing.T) {
		if err := s.Freeze(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		if got := freezerState(t, s); got != "1" {
			t.Fatalf("cgroup.freeze is %q after Freeze", got)
		}
		ev, _ := os.ReadFile(filepath.Join(dir, "cgroup.events"))
		if !strings.Contains(string(ev), "frozen 1") {
			t.Errorf("cgroup.events says %q", ev)
		}
		a := readTicks(t, ticks)
		time.Sleep(100 * time.Millisecond)
		if b := readTicks(t, ticks); a != b {
			t.Errorf("the task ticked while frozen: %s then %s", a, b)
		}
	})
	t.Run("the frozen cgroup lists the task", func(t *testing.T) {
		pids, err := s.Tasks()
		found := false
		for _, p := range pids {
			found = found || p == cmd.Process.Pid
		}
		if err != nil || !found {
			t.Errorf("Tasks() = %v, %v; want it to hold %d", pids, err, cmd.Process.Pid)
		}
	})
	t.Run("thaw lets it run again", func(t *testing.T) {
		if err := s.Thaw(); err != nil {
			t.Fatal(err)
		}
		// The shell ticks every 10 ms, later on a loaded machine: wait
		// for a tick with a deadline rather than a fixed time. A read
		// between the shell's truncation and its write is empty.
		a := readTicks(t, ticks)
		b := a
		for deadline := time.Now().Add(10 * time.Second); (b == a || b == "") && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
			b = readTicks(t, ticks)
		}
		if a == b || b == "" {
			t.Errorf("the task did not tick in 10 s after Thaw: %q then %q", a, b)
		}
	})
}

func TestBelowAndJoin(t *testing.T) {
	ct := &Set{V1: map[string]string{"cpu": "/ct", "freezer": "/ct"}, V2: "/ct"}
	task := &Set{V1: map[string]string{"cpu": "/ct/a/b", "freezer": "/ct"}, V2: "/ct/a"}
	rel, same, err := ct.Below(task)
	if err != nil || same || rel.V1["cpu"] != "/a/b" || rel.V1["freezer"] != "/" || rel.V2 != "/a" {
		t.Fatalf("Below: %+v same %v err %v", rel, same, err)
	}
	back := ct.Join(rel)
	if back.V1["cpu"] != "/ct/a/b" || back.V1["freezer"] != "/ct" || back.V2 != "/ct/a" {
		t.Errorf("Join: %+v", back)
	}
	if _, same, err := ct.Below(ct); err != nil || !same {
		t.Errorf("Below of itself: same %v err %v", same, err)
	}
	for _, out := range []*Set{
		{V1: map[string]string{"cpu": "/ctx", "freezer": "/ct"}, V2: "/ct"},
		{V1: map[string]string{"cpu": "/", "freezer": "/ct"}, V2: "/ct"},
		{V1: map[string]string{"freezer": "/ct"}, V2: "/ct"},
	} {
		if _, _, err := ct.Below(out); !errors.Is(err, ErrNotBelow) {
			t.Errorf("Below(%+v): %v, want ErrNotBelow", out, err)
		}
	}
}
