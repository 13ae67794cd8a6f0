package test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctcr/ctcr/container"
)

// crun containers: the same busybox bundle and counting init as the runc
// tests, run by crun. ctcr finds them through /run/crun/ID/status and,
// after a restore, rewrites that status so crun manages the new init.

// crunList is one entry of `crun list --format json`.
type crunList struct {
	ID     string `json:"id"`
	Pid    int    `json:"pid"`
	Status string `json:"status"`
}

func crunListed(t *testing.T, id string) (crunList, bool) {
	t.Helper()
	out, err := runtimeCmd(10*time.Second, "", "crun", "list", "--format", "json")
	if err != nil {
		t.Fatalf("crun list: %v: %s", err, out)
	}
	var list []crunList
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatalf("crun list: %v: %s", err, out)
	}
	for _, e := range list {
		if e.ID == id {
			return e, true
		}
	}
	return crunList{}, false
}

// TestCrunCheckpointRestore: a crun busybox container with a process
// tree, a tmpfs, a hostname and a SysV shared memory segment is
// checkpointed (and so stopped) and restored; seen from inside it counts
// on and keeps its files, name, segment and PIDs; crun list, exec, kill
// and delete work on the restored container.
func TestCrunCheckpointRestore(t *testing.T) {
	c := newRuntimeContainer(t, "crun", "crun", nil)
	for _, bin := range []string{"/usr/bin/ipcmk", "/usr/bin/ipcs"} {
		if err := c.installHostBinary(bin); err != nil {
			t.Fatalf("copy %s into the rootfs (util-linux): %v", bin, err)
		}
	}
	c.start()
	c.mustExec(t, "/usr/bin/ipcmk -M 12288 -p 0640")
	const inside = "md5sum /data/seq; cat /data/hello; hostname; readlink /proc/1/exe; tr '\\0' ' ' < /proc/1/cmdline; echo; /usr/bin/ipcs -m | tail -n +4"
	sums := c.mustExec(t, inside)
	if !strings.Contains(sums, "12288") {
		t.Fatalf("ipcs -m inside the container does not list the 12288-byte segment ipcmk made:\n%s", sums)
	}
	before := psInside(t, c)
	if len(before) != 3 {
		t.Fatalf("before the checkpoint the container runs %d long-lived processes, want 3 (init, counting subshell, sleep):\n%s", len(before), strings.Join(before, "\n"))
	}
	oldPid := c.inits[0]
	countAt := c.waitCount(t, 10, 10*time.Second)
	subAt, _ := c.count("sub")
	dir := filepath.Join(t.TempDir(), "ck")

	checkpointContainer(t, c, dir)
	if got := c.status(); got != "stopped" {
		t.Fatalf("after ctcr checkpoint crun says the container is %q, want stopped", got)
	}
	if exists(oldPid) {
		if st, err := readStat(oldPid); err == nil && st.state != 'Z' {
			t.Fatalf("after ctcr checkpoint the old init %d still runs: %s", oldPid, describe(oldPid))
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "ctcr.json"))
	if err != nil {
		t.Fatalf("the checkpoint has no ctcr.json: %v", err)
	}
	var meta container.Meta
	if err := json.Unmarshal(b, &meta); err != nil {
		t.Fatalf("ctcr.json: %v", err)
	}
	if meta.Runtime != "crun" || meta.Rootfs != c.rootfs || meta.Bundle != c.bundle || meta.StateDir != "/run/crun/"+c.id {
		t.Errorf("ctcr.json records runtime %q, rootfs %q, bundle %q, state %q; want crun, %s, %s, /run/crun/%s",
			meta.Runtime, meta.Rootfs, meta.Bundle, meta.StateDir, c.rootfs, c.bundle, c.id)
	}

	restoreContainer(t, c, dir)
	st, err := c.state()
	if err != nil {
		t.Fatal(err)
	}
	if st.Pid == oldPid {
		t.Errorf("the restored init has the old host PID %d; a new one was expected", oldPid)
	}
	t.Run("the counters continue from where they were", func(t *testing.T) {
		c.assertCountersContinue(t, countAt, subAt)
	})
	t.Run("tmpfs files, hostname, PID 1 and the shm segment are the same (crun exec)", func(t *testing.T) {
		after := c.mustExec(t, inside)
		if after != sums {
			t.Errorf("seen from inside, after restore:\n%s\nbefore the checkpoint:\n%s", after, sums)
		}
		if !strings.Contains(after, "h-crun\n") {
			t.Errorf("hostname is not h-crun:\n%s", after)
		}
	})
	t.Run("the process tree has the same PIDs", func(t *testing.T) {
		after := psInside(t, c)
		if strings.Join(after, "\n") != strings.Join(before, "\n") {
			t.Errorf("processes inside after restore:\n%s\nbefore the checkpoint:\n%s", strings.Join(after, "\n"), strings.Join(before, "\n"))
		}
	})
	t.Run("crun list shows it running with the new init", func(t *testing.T) {
		e, ok := crunListed(t, c.id)
		if !ok {
			t.Fatalf("crun list does not show %s", c.id)
		}
		if e.Status != "running" || e.Pid != st.Pid {
			t.Errorf("crun list: %s is %s with PID %d, want running with %d", c.id, e.Status, e.Pid, st.Pid)
		}
		r := runCtcr(t, 20*time.Second, "list", "--json")
		var ents []container.Entry
		if err := json.Unmarshal([]byte(r.stdout()), &ents); err != nil || r.code() != 0 {
			t.Fatalf("%s: exit %d, %v: %s %s", r, r.code(), err, r.stdout(), r.stderr())
		}
		want := container.Entry{ID: c.id, Runtime: "crun", Status: "running", Pid: st.Pid}
		found := false
		for _, e := range ents {
			if e.ID == c.id {
				found = true
				if e.Checkpoint = ""; e != want {
					t.Errorf("ctcr list: %+v, want %+v", e, want)
				}
			}
		}
		if !found {
			t.Errorf("ctcr list does not show %s: %s", c.id, r.stdout())
		}
	})
	t.Run("crun kill ends it and ctcr then calls it stopped (31)", func(t *testing.T) {
		if out, err := c.cmd(10*time.Second, "", "kill", c.id, "KILL"); err != nil {
			t.Fatalf("crun kill %s KILL: %v: %s", c.id, err, out)
		}
		c.waitStatus(t, "stopped", 5*time.Second)
		r := runCtcr(t, 20*time.Second, "checkpoint", c.id, "-D", filepath.Join(t.TempDir(), "ck"))
		if r.code() != 31 {
			t.Errorf("%s of the stopped crun container: exit status %d, want 31; stderr: %s", r, r.code(), r.stderr())
		}
	})
	t.Run("crun delete removes it", func(t *testing.T) {
		if out, err := c.cmd(20*time.Second, "", "delete", c.id); err != nil {
			t.Fatalf("crun delete %s: %v: %s", c.id, err, out)
		}
		if _, ok := crunListed(t, c.id); ok {
			t.Errorf("crun list still shows %s after crun delete", c.id)
		}
		if _, err := os.Stat("/run/crun/" + c.id); err == nil {
			t.Errorf("/run/crun/%s is still there after crun delete", c.id)
		}
	})
}

// TestCrunUnknownContainer: a checkpoint of an id no runtime knows exits 1
// and names the crun status files it looked for.
func TestCrunUnknownContainer(t *testing.T) {
	needCtcr(t)
	id := fmt.Sprintf("ctcrt-crun-nosuch-%d", os.Getpid())
	t.Cleanup(func() { os.Remove(filepath.Join("/run/ctcr", id+".lock")) })
	r := runCtcr(t, 20*time.Second, "checkpoint", id, "-D", filepath.Join(t.TempDir(), "ck"))
	if r.code() != 1 {
		t.Errorf("%s: exit status %d, want 1; stderr: %s", r, r.code(), r.stderr())
	}
	for _, place := range []string{"/run/crun/" + id + "/status", "/run/user/0/crun/" + id + "/status"} {
		if !strings.Contains(r.stderr(), place) {
			t.Errorf("%s: stderr does not name %s: %s", r, place, r.stderr())
		}
	}
}
