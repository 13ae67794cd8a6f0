package container

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestUpdateCrunState rewrites a status file crun 1.8.1 wrote (captured
// in testdata) for this test process as the new init: pid and
// process-start-time change, every other field and the file's mode stay.
func TestUpdateCrunState(t *testing.T) {
	orig, err := os.ReadFile("testdata/crun-status")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "status")
	if err := os.WriteFile(path, orig, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o700); err != nil {
		t.Fatal(err)
	}
	pid := os.Getpid()
	if err := UpdateCrunState(dir, pid); err != nil {
		t.Fatal(err)
	}
	var before, after map[string]any
	json.Unmarshal(orig, &before)
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &after); err != nil {
		t.Fatalf("the rewritten status is not JSON: %v: %s", err, b)
	}
	if after["pid"] != float64(pid) || after["process-start-time"] != float64(startTime(pid)) || startTime(pid) == 0 {
		t.Errorf("pid %v, process-start-time %v; want %d and %d", after["pid"], after["process-start-time"], pid, startTime(pid))
	}
	delete(before, "pid")
	delete(before, "process-start-time")
	delete(after, "pid")
	delete(after, "process-start-time")
	if !reflect.DeepEqual(before, after) {
		t.Errorf("other fields changed:\n%v\nwere\n%v", after, before)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("mode of the rewritten status: %v (%v), want 0700 as crun made it", fi.Mode().Perm(), err)
	}
	if _, err := os.Stat(path + ".ctcr-tmp"); err == nil {
		t.Errorf("the temporary file was left behind")
	}
}

// TestResolveCrun: a crun status naming a live process with the start
// time crun recorded resolves as running, with the rootfs made absolute;
// the same status with another start time (the PID was reused) is a
// stopped container; an unknown id names the status files looked for.
func TestResolveCrun(t *testing.T) {
	root := t.TempDir()
	saved := Places
	t.Cleanup(func() { Places = saved })
	Places.Runc, Places.Crun, Places.LXC = nil, []string{root}, nil
	savedConf := LXCConfig
	t.Cleanup(func() { LXCConfig = savedConf })
	LXCConfig = filepath.Join(root, "no-lxc.conf")
	write := func(start uint64) {
		os.MkdirAll(filepath.Join(root, "c1"), 0o700)
		b, _ := json.Marshal(map[string]any{"pid": os.Getpid(), "process-start-time": start, "bundle": "/b", "rootfs": "rootfs"})
		if err := os.WriteFile(filepath.Join(root, "c1", "status"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(startTime(os.Getpid()))
	c, err := Resolve("c1", 0)
	if err != nil || c.Runtime != "crun" || c.Pid != os.Getpid() || c.Rootfs != "/b/rootfs" || c.StateDir != filepath.Join(root, "c1") {
		t.Errorf("Resolve: %+v, %v; want crun, PID %d, rootfs /b/rootfs", c, err, os.Getpid())
	}
	write(startTime(os.Getpid()) + 1)
	if _, err := Resolve("c1", 0); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Resolve with another start time: %v, want %v", err, ErrNotRunning)
	}
	_, err = Resolve("nosuch", 0)
	if !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), filepath.Join(root, "nosuch", "status")) {
		t.Errorf("Resolve of an unknown id: %v; want %v naming %s", err, ErrUnknown, filepath.Join(root, "nosuch", "status"))
	}
}
