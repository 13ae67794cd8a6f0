package criu

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"

	"github.com/ctcr/ctcr/criu/proc"
)

// TestSweepTrackerSockets: the sockets of trackers whose tree is gone
// (its root task exited, or its PID now names another task) are
// removed; those of a live tree, and names that are not a tracker's,
// stay.
func TestSweepTrackerSockets(t *testing.T) {
	dir := t.TempDir()
	me, err := proc.ReadStat(os.Getpid(), os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{ // name: kept
		fmt.Sprintf("%d-%d.sock", os.Getpid(), me.StartTime):   true,
		fmt.Sprintf("%d-%d.sock", os.Getpid(), me.StartTime+1): false, // the PID reused
		fmt.Sprintf("%d-%d.sock", dead.Process.Pid, 12345):     false, // the task exited
		"notes.txt":   true,
		"12-x.sock":   true,
		"12-34.sockx": true,
	}
	for n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sweepTrackerSockets(dir)
	var want, got []string
	for n, kept := range names {
		if kept {
			want = append(want, n)
		}
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		got = append(got, e.Name())
	}
	sort.Strings(want)
	sort.Strings(got)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after the sweep %v are left, want %v", got, want)
	}
}
