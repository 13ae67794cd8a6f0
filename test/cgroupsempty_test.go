package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// emptyCgLimits are the limits the empty sub-cgroups of the tests below
// get: one per controller kind, v1 and v2.
var emptyCgLimits = []struct{ key, file, value string }{
	{"memory", "memory.limit_in_bytes", "67108864"},
	{"pids", "pids.max", "9"},
	{"cpu", "cpu.cfs_quota_us", "50000"},
	{"", "cgroup.max.descendants", "3"},
}

// TestCgroupsEmptySub: a cgroup below a plain tree's own that no task is
// in (cgtree's fixture plus an "idle" child in memory, pids, cpu and v2,
// each with a limit) comes back at restore with its limits, like the
// cgroups the tasks are in.
func TestCgroupsEmptySub(t *testing.T) {
	needCgroups(t)
	r := startPlaced(t)
	f := r.f
	for _, l := range emptyCgLimits {
		d := f.dir(l.key, f.name, "idle")
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		f.write(d, l.file, l.value)
	}
	r.dumpKill()
	decodeWithCrit(t, r.img)
	f.removeAll(f.name)
	if t.Failed() {
		return
	}
	r.restore()
	for _, l := range emptyCgLimits {
		d := f.dir(l.key, f.name, "idle")
		if got := f.read(d, l.file); got != l.value {
			t.Errorf("after restore %s/%s = %s, want %s", d, l.file, got, l.value)
		}
		if got := f.read(d, "cgroup.procs"); got != "" {
			t.Errorf("after restore %s holds tasks %q, want none", d, got)
		}
	}
	r.checkLimits(f.name)
	r.checkPasses()
}

// TestContainerEmptySubCgroup: an empty cgroup below a runc container's
// (v1 pids and memory, each with a limit) comes back at restore with its
// limits, as those with tasks do (TestContainerSubCgroups).
func TestContainerEmptySubCgroup(t *testing.T) {
	c := newContainer(t, "emptycg", nil)
	c.start()
	paths := map[string]string{}
	cgFile, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", c.inits[0]))
	for _, l := range strings.Split(string(cgFile), "\n") {
		if f := strings.SplitN(l, ":", 3); len(f) == 3 && (f[1] == "memory" || f[1] == "pids") {
			paths[f[1]] = f[2]
		}
	}
	if paths["memory"] == "" || paths["pids"] == "" {
		t.Skipf("no v1 memory and pids hierarchies: %q", cgFile)
	}
	limits := map[string][2]string{"memory": {"memory.limit_in_bytes", "67108864"}, "pids": {"pids.max", "9"}}
	sub := func(ctrl string) string { return filepath.Join("/sys/fs/cgroup", ctrl, paths[ctrl], "idle") }
	for ctrl, l := range limits {
		if err := os.Mkdir(sub(ctrl), 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(sub(ctrl)) })
		if err := os.WriteFile(filepath.Join(sub(ctrl), l[0]), []byte(l[1]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(t.TempDir(), "ck")
	checkpointContainer(t, c, dir)
	for ctrl := range limits {
		if err := os.Remove(sub(ctrl)); err != nil && !os.IsNotExist(err) {
			t.Fatalf("remove the empty %s: %v", sub(ctrl), err)
		}
	}
	restoreContainer(t, c, dir)
	c.assertCounting(t, "after restore")
	for ctrl, l := range limits {
		b, err := os.ReadFile(filepath.Join(sub(ctrl), l[0]))
		if got := strings.TrimSpace(string(b)); err != nil || got != l[1] {
			t.Errorf("after restore %s/%s = %q (%v), want %s", sub(ctrl), l[0], got, err, l[1])
		}
	}
}
