package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/container"
)

// psInside lists the processes of the container as seen from inside it
// (its /proc), "PID command" per line, sorted, without the processes of
// the runc exec that lists them and without the short-lived sleeps of
// the counting loops.
func psInside(t *testing.T, c interface {
	mustExec(t *testing.T, script string) string
}) []string {
	t.Helper()
	// A process that exits between the glob and the read of its files
	// is skipped whole, and a fork caught before it execs (the loops'
	// sleeps) shows as a copy of its parent: take snapshots until two
	// in a row agree.
	var last []string
	for try := 0; try < 10; try++ {
		procs := psInsideOnce(t, c)
		if last != nil && strings.Join(procs, "\n") == strings.Join(last, "\n") {
			return procs
		}
		last = procs
		time.Sleep(50 * time.Millisecond)
	}
	return last
}

// psInsideOnce lists, once, the long-lived processes a container runs
// as "PID cmdline" seen from inside it, leaving out the shell that
// lists them and the loops' sleeps.
func psInsideOnce(t *testing.T, c interface {
	mustExec(t *testing.T, script string) string
}) []string {
	t.Helper()
	// One line per process, its fields tab-separated, so that a process
	// gone meanwhile cannot shift the next one's lines.
	out := c.mustExec(t, "echo \"self $$\"; for p in /proc/[0-9]*; do s=$(cat $p/stat 2>/dev/null) || continue; m=$(tr '\\000\\n' '  ' < $p/cmdline 2>/dev/null) || continue; echo \"@ ${p#/proc/}\t$s\t$m\"; done")
	self := ""
	var procs []string
	for _, line := range strings.Split(out, "\n") {
		if s, ok := strings.CutPrefix(line, "self "); ok {
			self = s
			continue
		}
		rest, ok := strings.CutPrefix(line, "@ ")
		if !ok {
			continue
		}
		f := strings.SplitN(rest, "\t", 3)
		if len(f) != 3 || f[1] == "" {
			continue
		}
		pid, stat, cmdline := f[0], f[1], strings.TrimSpace(f[2])
		ppid := ""
		if j := strings.LastIndexByte(stat, ')'); j >= 0 {
			if fs := strings.Fields(stat[j+1:]); len(fs) > 1 {
				ppid = fs[1]
			}
		}
		if pid == self || ppid == self || cmdline == "sleep 0.2" || cmdline == "sleep 0.3" {
			continue
		}
		procs = append(procs, pid+" "+cmdline)
	}
	sort.Strings(procs)
	return procs
}

// checkpointContainer runs ctcr checkpoint and fails the test unless it
// succeeds.
func checkpointContainer(t *testing.T, c *runcContainer, dir string, extra ...string) {
	t.Helper()
	args := append([]string{"checkpoint", c.id, "-D", dir}, extra...)
	r := runCtcr(t, 60*time.Second, args...)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d, want 0\nstdout: %s\nstderr: %s", r, r.code(), r.stdout(), r.stderr())
	}
}

// restoreContainer runs ctcr restore and fails the test unless the
// container runs again.
func restoreContainer(t *testing.T, c *runcContainer, dir string) {
	t.Helper()
	r := runCtcr(t, 60*time.Second, "restore", c.id, "-D", dir)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d, want 0\nstdout: %s\nstderr: %s", r, r.code(), r.stdout(), r.stderr())
	}
	c.notePid()
	c.waitStatus(t, "running", 5*time.Second)
}

// TestContainerCheckpointRestore: a runc busybox container with a small
// process tree, a tmpfs, a hostname and a cgroup namespace is
// checkpointed (and so stopped)
// and restored; seen from inside it counts on, keeps its files, name and
// PIDs, and runc still manages it.
func TestContainerCheckpointRestore(t *testing.T) {
	c := newContainer(t, "cr", func(s *specs.Spec) {
		// A cgroup namespace rooted at the container's own cgroups.
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.CgroupNamespace})
	})
	c.start()
	before := psInside(t, c)
	if len(before) != 3 {
		t.Fatalf("before the checkpoint the container runs %d long-lived processes, want 3 (init, counting subshell, sleep):\n%s", len(before), strings.Join(before, "\n"))
	}
	sums := c.mustExec(t, "md5sum /data/seq; cat /data/hello; hostname; readlink /proc/1/exe; tr '\\0' ' ' < /proc/1/cmdline; cat /proc/1/cgroup")
	oldPid := c.inits[0]
	dir := filepath.Join(t.TempDir(), "ck")
	countAt := c.waitCount(t, 10, 10*time.Second)
	subAt, _ := c.count("sub")

	checkpointContainer(t, c, dir)
	if got := c.status(); got != "stopped" {
		t.Fatalf("after ctcr checkpoint runc says the container is %q, want stopped", got)
	}
	if exists(oldPid) {
		if st, err := readStat(oldPid); err == nil && st.state != 'Z' {
			t.Fatalf("after ctcr checkpoint the old init %d still runs: %s", oldPid, describe(oldPid))
		}
	}
	for _, f := range []string{"ctcr.json", "config.json", "stats.json", "images/inventory.img"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("the checkpoint has no %s: %v", f, err)
		}
	}

	restoreContainer(t, c, dir)
	st, _ := c.state()
	if st.Pid == oldPid {
		t.Errorf("the restored init has the old host PID %d; a new one was expected (the old may not be reaped yet)", oldPid)
	}
	t.Run("the counters continue from where they were", func(t *testing.T) {
		c.assertCountersContinue(t, countAt, subAt)
	})
	t.Run("tmpfs files, hostname, PID 1 and its cgroups (seen through its cgroup namespace) are the same", func(t *testing.T) {
		after := c.mustExec(t, "md5sum /data/seq; cat /data/hello; hostname; readlink /proc/1/exe; tr '\\0' ' ' < /proc/1/cmdline; cat /proc/1/cgroup")
		if after != sums {
			t.Errorf("seen from inside, after restore:\n%s\nbefore the checkpoint:\n%s", after, sums)
		}
		if !strings.Contains(after, "h-cr\n") {
			t.Errorf("hostname is not h-cr:\n%s", after)
		}
	})
	t.Run("the process tree has the same PIDs", func(t *testing.T) {
		after := psInside(t, c)
		if strings.Join(after, "\n") != strings.Join(before, "\n") {
			t.Errorf("processes inside after restore:\n%s\nbefore the checkpoint:\n%s", strings.Join(after, "\n"), strings.Join(before, "\n"))
		}
	})
	t.Run("runc list shows it running", func(t *testing.T) {
		out, errOut, err := runtimeStdout(10*time.Second, "runc", "list", "--format", "json")
		if err != nil {
			t.Fatalf("runc list: %v: %s%s", err, out, errOut)
		}
		var list []struct {
			ID     string `json:"id"`
			Pid    int    `json:"pid"`
			Status string `json:"status"`
		}
		if err := json.Unmarshal(out, &list); err != nil {
			t.Fatalf("runc list: %v: %s", err, out)
		}
		for _, e := range list {
			if e.ID == c.id {
				if e.Status != "running" || e.Pid != st.Pid {
					t.Errorf("runc list: %s is %s with PID %d, want running with %d", c.id, e.Status, e.Pid, st.Pid)
				}
				return
			}
		}
		t.Errorf("runc list does not show %s: %s", c.id, out)
	})
	t.Run("ctcr list and ps show it", func(t *testing.T) {
		r := runCtcr(t, 20*time.Second, "list", "--json")
		var ents []container.Entry
		if err := json.Unmarshal([]byte(r.stdout()), &ents); err != nil || r.code() != 0 {
			t.Fatalf("%s: exit %d, %v: %s %s", r, r.code(), err, r.stdout(), r.stderr())
		}
		found := false
		for _, e := range ents {
			if e.ID == c.id {
				found = true
				if e.Status != "running" || e.Pid != st.Pid || e.Runtime != "runc" {
					t.Errorf("ctcr list: %+v, want runc, running, PID %d", e, st.Pid)
				}
			}
		}
		if !found {
			t.Errorf("ctcr list does not show %s: %s", c.id, r.stdout())
		}
		r = runCtcr(t, 20*time.Second, "ps", c.id, "--json")
		var ps []container.Process
		if err := json.Unmarshal([]byte(r.stdout()), &ps); err != nil || r.code() != 0 {
			t.Fatalf("%s: exit %d, %v: %s %s", r, r.code(), err, r.stdout(), r.stderr())
		}
		inside := map[int]string{}
		for _, p := range ps {
			inside[p.NSPid] = strings.Join(strings.Fields(p.Command), " ")
			if p.NSPid == 1 && p.Pid != st.Pid {
				t.Errorf("ctcr ps: PID 1 inside is host PID %d, runc says the init is %d", p.Pid, st.Pid)
			}
		}
		for _, line := range before {
			pid, cmd, _ := strings.Cut(line, " ")
			n, _ := strconv.Atoi(pid)
			if cmd = strings.Join(strings.Fields(cmd), " "); inside[n] != cmd {
				t.Errorf("ctcr ps: PID %d inside runs %q, want %q (from inside: %v)", n, inside[n], cmd, before)
			}
		}
	})
	t.Run("runc kill ends it", func(t *testing.T) {
		if out, err := runcCmd(10*time.Second, "", "kill", c.id, "KILL"); err != nil {
			t.Fatalf("runc kill %s KILL: %v: %s", c.id, err, out)
		}
		c.waitStatus(t, "stopped", 5*time.Second)
	})
}

// TestContainerSysVIPC: shared memory, semaphores and message queues made
// with ipcmk inside the container are there after restore (ipcs).
func TestContainerSysVIPC(t *testing.T) {
	c := newContainer(t, "ipc", nil)
	for _, bin := range []string{"/usr/bin/ipcmk", "/usr/bin/ipcs"} {
		if _, err := os.Stat(bin); err != nil {
			t.Skipf("%s is missing (util-linux): it makes and lists the IPC objects", bin)
		}
		if err := c.installHostBinary(bin); err != nil {
			t.Fatalf("copy %s into the rootfs: %v", bin, err)
		}
	}
	c.start()
	c.mustExec(t, "/usr/bin/ipcmk -M 8192 -p 0640 && /usr/bin/ipcmk -S 3 && /usr/bin/ipcmk -Q -p 0600")
	const list = "/usr/bin/ipcs -m | tail -n +4; /usr/bin/ipcs -s | tail -n +4; /usr/bin/ipcs -q | tail -n +4"
	before := c.mustExec(t, list)
	if strings.Count(strings.TrimSpace(before), "\n") < 2 {
		t.Fatalf("ipcs inside the container lists fewer than 3 objects after ipcmk:\n%s", before)
	}
	dir := filepath.Join(t.TempDir(), "ck")
	checkpointContainer(t, c, dir)
	ipcImages, _ := filepath.Glob(filepath.Join(dir, "images", "ipcns-*.img"))
	restoreContainer(t, c, dir)
	after := c.mustExec(t, list)
	if after == before {
		return
	}
	if len(ipcImages) == 0 {
		t.Skipf("IPC namespace content is not restored yet: the checkpoint has no ipcns-*.img (ipcs before:\n%safter:\n%s)", before, after)
	}
	t.Errorf("ipcs inside the container after restore:\n%s\nbefore the checkpoint:\n%s", after, before)
}

// freezerState reads the freezer state of pid's cgroup: v1 freezer.state,
// or FROZEN/THAWED from v2 cgroup.freeze.
func freezerState(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) == 3 && f[1] == "freezer" {
			s, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/freezer", f[2], "freezer.state"))
			return strings.TrimSpace(string(s)), err
		}
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			for _, mnt := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
				if s, err := os.ReadFile(filepath.Join(mnt, p, "cgroup.freeze")); err == nil {
					if strings.TrimSpace(string(s)) == "1" {
						return "FROZEN", nil
					}
					return "THAWED", nil
				}
			}
		}
	}
	return "", fmt.Errorf("no freezer cgroup for %d", pid)
}

// TestContainerCheckpointFailures: a checkpoint that cannot write its
// images exits 16 and leaves the container running and thawed.
func TestContainerCheckpointFailures(t *testing.T) {
	c := newContainer(t, "fail", nil)
	c.start()
	pid := c.inits[0]
	cases := []struct {
		name string
		dir  func(t *testing.T) string
	}{
		{"an image directory under a regular file", func(t *testing.T) string {
			f := filepath.Join(t.TempDir(), "file")
			os.WriteFile(f, nil, 0o644)
			return filepath.Join(f, "ck")
		}},
		{"an image directory on a read-only bind mount", func(t *testing.T) string {
			d := t.TempDir()
			ro := filepath.Join(d, "ro")
			os.Mkdir(ro, 0o755)
			os.Mkdir(filepath.Join(ro, "ck"), 0o755)
			if err := unix.Mount(ro, ro, "", unix.MS_BIND, ""); err != nil {
				t.Fatalf("bind mount %s: %v", ro, err)
			}
			t.Cleanup(func() { unix.Unmount(ro, unix.MNT_DETACH) })
			if err := unix.Mount("", ro, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
				t.Fatalf("remount %s read-only: %v", ro, err)
			}
			return filepath.Join(ro, "ck")
		}},
		{"a full image directory (a 64 KiB tmpfs)", func(t *testing.T) string {
			d := filepath.Join(t.TempDir(), "small")
			os.Mkdir(d, 0o755)
			if err := unix.Mount("tmpfs", d, "tmpfs", 0, "size=64k"); err != nil {
				t.Fatalf("mount a tmpfs on %s: %v", d, err)
			}
			t.Cleanup(func() { unix.Unmount(d, unix.MNT_DETACH) })
			return filepath.Join(d, "ck")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name+" fails with 16 and the container runs on thawed", func(t *testing.T) {
			dir := tc.dir(t)
			r := runCtcr(t, 60*time.Second, "checkpoint", c.id, "-D", dir)
			if r.code() != 16 {
				t.Errorf("%s: exit status %d, want 16\nstderr: %s", r, r.code(), r.stderr())
			}
			if strings.Count(strings.TrimSpace(r.stderr()), "\n") != 0 || r.stderr() == "" {
				t.Errorf("%s: stderr is not one line: %q", r, r.stderr())
			}
			if st := c.status(); st != "running" {
				t.Fatalf("after the failed checkpoint runc says %q, want running", st)
			}
			if s, err := freezerState(pid); err != nil || s != "THAWED" {
				t.Errorf("after the failed checkpoint the freezer is %q (%v), want THAWED", s, err)
			}
			if err := assertRunnable(pid); err != nil {
				t.Errorf("after the failed checkpoint the init is %v", err)
			}
			c.assertCounting(t, "after the failed checkpoint")
			if _, err := os.Stat(filepath.Join(dir, "ctcr.json")); err == nil {
				t.Errorf("the failed checkpoint left a ctcr.json in %s", dir)
			}
		})
	}
}

// TestContainerExitCodes: the vzctl-style exit codes of checkpoint and
// restore, and --leave-running.
func TestContainerExitCodes(t *testing.T) {
	needRunc(t)
	t.Run("checkpoint of an unknown container exits 1 and says where ctcr looked", func(t *testing.T) {
		id := fmt.Sprintf("ctcrt-nosuch-%d", os.Getpid())
		r := runCtcr(t, 20*time.Second, "checkpoint", id, "-D", filepath.Join(t.TempDir(), "ck"))
		if r.code() != 1 {
			t.Errorf("%s: exit status %d, want 1; stderr: %s", r, r.code(), r.stderr())
		}
		for _, place := range []string{"/run/runc/" + id + "/state.json", "/var/lib/lxc/" + id} {
			if !strings.Contains(r.stderr(), place) {
				t.Errorf("%s: stderr does not name %s: %s", r, place, r.stderr())
			}
		}
		os.Remove(filepath.Join("/run/ctcr", id+".lock"))
	})

	c := newContainer(t, "codes", nil)
	c.start()
	dir := filepath.Join(t.TempDir(), "ck")
	t.Run("a second checkpoint while another holds the lock exits 9", func(t *testing.T) {
		unlock, err := container.Lock(c.id, false)
		if err != nil {
			t.Fatal(err)
		}
		r := runCtcr(t, 20*time.Second, "checkpoint", c.id, "-D", dir)
		unlock()
		if r.code() != 9 {
			t.Errorf("%s while the test holds %s: exit status %d, want 9; stderr: %s", r, "/run/ctcr/"+c.id+".lock", r.code(), r.stderr())
		}
		if st := c.status(); st != "running" {
			t.Errorf("after the locked-out checkpoint runc says %q, want running", st)
		}
		c.assertCounting(t, "after the locked-out checkpoint")
	})
	t.Run("with --leave-running the container runs on", func(t *testing.T) {
		pid := c.inits[0]
		checkpointContainer(t, c, dir, "--leave-running")
		if st, _ := c.state(); st.Status != "running" || st.Pid != pid {
			t.Fatalf("after checkpoint --leave-running runc says %+v, want running with PID %d", st, pid)
		}
		if err := assertRunnable(pid); err != nil {
			t.Fatalf("after checkpoint --leave-running the init is %v", err)
		}
		c.assertCounting(t, "after checkpoint --leave-running")
		if _, err := os.Stat(filepath.Join(dir, "ctcr.json")); err != nil {
			t.Errorf("checkpoint --leave-running wrote no ctcr.json: %v", err)
		}
	})
	t.Run("restore of a running container exits 32", func(t *testing.T) {
		r := runCtcr(t, 20*time.Second, "restore", c.id, "-D", dir)
		if r.code() != 32 {
			t.Errorf("%s: exit status %d, want 32; stderr: %s", r, r.code(), r.stderr())
		}
		c.assertCounting(t, "after the refused restore")
	})
	t.Run("ctcr kill sends TERM to the init", func(t *testing.T) {
		r := runCtcr(t, 20*time.Second, "kill", c.id)
		if r.code() != 0 {
			t.Fatalf("%s: exit status %d, want 0; stderr: %s", r, r.code(), r.stderr())
		}
		c.waitStatus(t, "stopped", 5*time.Second)
	})
	t.Run("checkpoint of a stopped container exits 31", func(t *testing.T) {
		r := runCtcr(t, 20*time.Second, "checkpoint", c.id, "-D", filepath.Join(t.TempDir(), "ck"))
		if r.code() != 31 {
			t.Errorf("%s: exit status %d, want 31; stderr: %s", r, r.code(), r.stderr())
		}
		r = runCtcr(t, 20*time.Second, "kill", c.id, "KILL")
		if r.code() != 31 {
			t.Errorf("%s: exit status %d, want 31; stderr: %s", r, r.code(), r.stderr())
		}
	})
	t.Run("the --leave-running checkpoint restores the stopped container", func(t *testing.T) {
		restoreContainer(t, c, dir)
		c.assertCounting(t, "after restore")
	})
}

// TestContainerHook: runc runs `ctcr hook poststart`, which checkpoints
// the container (with a pre-copy, as its annotation asks) once it wrote
// its ready file and leaves it running; the
// checkpoint restores; `ctcr hook poststop` at runc delete removes the
// lock. Malformed states exit 1 and start nothing.
func TestContainerHook(t *testing.T) {
	needRunc(t)
	dir := filepath.Join(t.TempDir(), "hook-ck")
	c := newContainer(t, "hook", func(s *specs.Spec) {
		s.Annotations = map[string]string{"ctcr.checkpoint.dir": dir, "ctcr.checkpoint.ready-file": "/data/ready", "ctcr.checkpoint.pre-copy": "true"}
		s.Hooks = &specs.Hooks{
			Poststart: []specs.Hook{{Path: ctcrBin, Args: []string{"ctcr", "hook", "poststart"}}},
			Poststop:  []specs.Hook{{Path: ctcrBin, Args: []string{"ctcr", "hook", "poststop"}}},
		}
	})
	c.start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "ctcr.json")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join("/run/ctcr", c.id+".hook.log"))
			t.Fatalf("no checkpoint in %s 30 s after the container started; hook log:\n%s", dir, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Run("the container runs on after the hook's checkpoint", func(t *testing.T) {
		if st := c.status(); st != "running" {
			t.Fatalf("runc says %q, want running", st)
		}
		c.assertCounting(t, "after the hook's checkpoint")
		b, err := os.ReadFile(filepath.Join(dir, "ctcr.json"))
		if err != nil || !bytes.Contains(b, []byte(`"runtime": "runc"`)) {
			t.Errorf("ctcr.json does not record runtime runc (%v):\n%s", err, b)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "stats.json")); err != nil || !bytes.Contains(b, []byte(`"pre_copy_rounds"`)) {
			t.Errorf("stats.json does not tell the pre-copy the annotation asked for (%v):\n%s", err, b)
		}
	})
	t.Run("the hook's checkpoint restores", func(t *testing.T) {
		if out, err := runcCmd(10*time.Second, "", "kill", c.id, "KILL"); err != nil {
			t.Fatalf("runc kill: %v: %s", err, out)
		}
		c.waitStatus(t, "stopped", 5*time.Second)
		restoreContainer(t, c, dir)
		if n := c.assertCounting(t, "after restore"); n < 5 {
			t.Errorf("/data/count is %d after restore, the checkpoint was taken at 5 or later", n)
		}
	})
	t.Run("poststop at runc delete removes the lock", func(t *testing.T) {
		lock := filepath.Join("/run/ctcr", c.id+".lock")
		if _, err := os.Stat(lock); err != nil {
			t.Fatalf("no %s before runc delete: %v", lock, err)
		}
		if out, err := runcCmd(20*time.Second, "", "delete", "-f", c.id); err != nil {
			t.Fatalf("runc delete -f: %v: %s", err, out)
		}
		if _, err := os.Stat(lock); err == nil {
			t.Errorf("%s is still there after runc delete ran the poststop hook", lock)
		}
	})

	id := fmt.Sprintf("ctcrt-badhook-%d", os.Getpid())
	self := os.Getpid()
	for _, tc := range []struct{ name, action, state string }{
		{"malformed JSON", "poststart", `{"id": "` + id},
		{"no id", "poststart", `{"pid": 1, "annotations": {"ctcr.checkpoint.dir": "/tmp/x"}}`},
		{"no pid", "poststart", `{"id": "` + id + `", "annotations": {"ctcr.checkpoint.dir": "/tmp/x"}}`},
		{"no checkpoint dir", "poststart", fmt.Sprintf(`{"id": %q, "pid": %d}`, id, self)},
		{"a bad delay", "poststart", fmt.Sprintf(`{"id": %q, "pid": %d, "annotations": {"ctcr.checkpoint.dir": "/tmp/x", "ctcr.checkpoint.delay": "soon"}}`, id, self)},
		{"malformed JSON at poststop", "poststop", `[`},
	} {
		t.Run("a state with "+tc.name+" exits 1 and does nothing", func(t *testing.T) {
			code, _, stderr := ctcrWithStdin(t, tc.state, "hook", tc.action)
			if code != 1 || !strings.Contains(stderr, "bad OCI state") {
				t.Errorf("ctcr hook %s <<< %s: exit status %d, stderr %q; want 1 and a message about the bad state", tc.action, tc.state, code, stderr)
			}
			for _, f := range []string{id + ".hook.log", id + ".lock"} {
				if _, err := os.Stat(filepath.Join("/run/ctcr", f)); err == nil {
					t.Errorf("the failed hook left /run/ctcr/%s", f)
					os.Remove(filepath.Join("/run/ctcr", f))
				}
			}
		})
	}
	t.Run("an unknown action exits 2", func(t *testing.T) {
		if code, _, stderr := ctcrWithStdin(t, "{}", "hook", "prestart"); code != 2 {
			t.Errorf("ctcr hook prestart: exit status %d, want 2; stderr %q", code, stderr)
		}
	})
}

// TestContribVzctlScripts: contrib/vzctl-chkpnt and vzctl-restore map
// vzctl's stages onto ctcr and pass its exit codes through.
func TestContribVzctlScripts(t *testing.T) {
	needRunc(t)
	scripts, err := filepath.Abs("../contrib")
	if err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, script string, args ...string) (int, string) {
		t.Helper()
		cmd := exec.Command(filepath.Join(scripts, script), args...)
		cmd.Env = append(os.Environ(), "CTCR="+ctcrBin)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := runWithTimeout(cmd, 60*time.Second); err != nil {
			if _, ok := err.(*exec.ExitError); !ok {
				t.Fatalf("%s %v: %v", script, args, err)
			}
		}
		return cmd.ProcessState.ExitCode(), out.String()
	}
	must := func(t *testing.T, script string, args ...string) {
		t.Helper()
		if code, out := run(t, script, args...); code != 0 {
			t.Fatalf("%s %s: exit status %d, want 0: %s", script, strings.Join(args, " "), code, out)
		}
	}
	c := newContainer(t, "vz", nil)
	c.start()
	freezer := func(t *testing.T, want string) {
		t.Helper()
		st, err := c.state()
		if err != nil {
			t.Fatal(err)
		}
		if s, err := freezerState(st.Pid); err != nil || s != want {
			t.Errorf("the container's freezer is %q (%v), want %s", s, err, want)
		}
	}
	dir := filepath.Join(t.TempDir(), "dump")
	t.Run("chkpnt --suspend --dump --resume leaves it running", func(t *testing.T) {
		must(t, "vzctl-chkpnt", c.id, "--dumpfile", dir, "--suspend", "--dump", "--resume")
		freezer(t, "THAWED")
		c.assertCounting(t, "after chkpnt --suspend --dump --resume")
		if _, err := os.Stat(filepath.Join(dir, "ctcr.json")); err != nil {
			t.Errorf("no checkpoint in %s: %v", dir, err)
		}
		os.RemoveAll(dir)
	})
	t.Run("chkpnt stage by stage: suspend, dump, kill", func(t *testing.T) {
		must(t, "vzctl-chkpnt", c.id, "--dumpfile", dir, "--suspend")
		freezer(t, "FROZEN")
		must(t, "vzctl-chkpnt", c.id, "--dumpfile", dir, "--dump")
		freezer(t, "FROZEN")
		must(t, "vzctl-chkpnt", c.id, "--dumpfile", dir, "--kill")
		c.waitStatus(t, "stopped", 5*time.Second)
	})
	t.Run("chkpnt of the stopped container passes exit 31 through", func(t *testing.T) {
		if code, out := run(t, "vzctl-chkpnt", c.id, "--dumpfile", filepath.Join(t.TempDir(), "d")); code != 31 {
			t.Errorf("vzctl-chkpnt of a stopped container: exit %d, want 31: %s", code, out)
		}
	})
	t.Run("restore --undump leaves it suspended, --resume lets it run", func(t *testing.T) {
		must(t, "vzctl-restore", c.id, "--dumpfile", dir, "--undump")
		c.notePid()
		c.waitStatus(t, "paused", 5*time.Second) // runc's word for a frozen cgroup
		freezer(t, "FROZEN")
		must(t, "vzctl-restore", c.id, "--dumpfile", dir, "--resume")
		c.assertCounting(t, "after vzctl-restore --resume")
	})
	t.Run("restore of the running container passes exit 32 through", func(t *testing.T) {
		if code, out := run(t, "vzctl-restore", c.id, "--dumpfile", dir); code != 32 {
			t.Errorf("vzctl-restore of a running container: exit %d, want 32: %s", code, out)
		}
	})
	t.Run("chkpnt and restore with all stages", func(t *testing.T) {
		dir2 := filepath.Join(t.TempDir(), "dump")
		must(t, "vzctl-chkpnt", c.id, "--dumpfile", dir2)
		c.waitStatus(t, "stopped", 5*time.Second)
		must(t, "vzctl-restore", c.id, "--dumpfile", dir2)
		c.notePid()
		c.waitStatus(t, "running", 5*time.Second)
		c.assertCounting(t, "after vzctl-restore")
	})
	t.Run("bad usage exits 2", func(t *testing.T) {
		if code, out := run(t, "vzctl-chkpnt", c.id, "--bogus"); code != 2 {
			t.Errorf("vzctl-chkpnt --bogus: exit %d, want 2: %s", code, out)
		}
		if code, out := run(t, "vzctl-restore"); code != 2 {
			t.Errorf("vzctl-restore without CTID: exit %d, want 2: %s", code, out)
		}
	})
}

// TestContainerFileLocks: a container whose init holds a flock on a file
// is refused without --file-locks (exit 16, the lock named, the container
// running on); with it, the lock is still held after restore.
func TestContainerFileLocks(t *testing.T) {
	const script = `exec 8>/data/lock
/usr/bin/flock 8
i=0
while :; do i=$((i+1)); echo $i > /data/count; sleep 0.2; done`
	c := newContainer(t, "locks", func(s *specs.Spec) { s.Process.Args = []string{"sh", "-c", script} })
	if _, err := os.Stat("/usr/bin/flock"); err != nil {
		t.Skipf("/usr/bin/flock is missing (util-linux): it takes the lock: %v", err)
	}
	if err := c.installHostBinary("/usr/bin/flock"); err != nil {
		t.Fatalf("copy flock into the rootfs: %v", err)
	}
	c.start()
	const probe = "/usr/bin/flock -n /data/lock true; echo $?"
	if got := strings.TrimSpace(c.mustExec(t, probe)); got != "1" {
		t.Fatalf("before the checkpoint flock -n on the init's lock says %q, want 1 (held)", got)
	}
	dir := filepath.Join(t.TempDir(), "ck")
	r := runCtcr(t, 60*time.Second, "checkpoint", c.id, "-D", dir)
	if r.code() != 16 || !strings.Contains(r.stderr(), "lock") || !strings.Contains(r.stderr(), "--file-locks") {
		t.Fatalf("%s: exit status %d, stderr %q; want 16 and a message naming the lock and --file-locks", r, r.code(), r.stderr())
	}
	c.assertCounting(t, "after the refused checkpoint")
	checkpointContainer(t, c, dir, "--file-locks")
	restoreContainer(t, c, dir)
	c.assertCounting(t, "after restore")
	if got := strings.TrimSpace(c.mustExec(t, probe)); got != "1" {
		t.Errorf("after restore flock -n on the init's lock says %q, want 1 (still held)", got)
	}
}

// TestContainerUnixSockets: busybox syslogd in a container listens on its
// /dev/log (a unix datagram socket bound inside the container's root and
// network namespace); after restore logger's messages still reach it,
// and the container can be checkpointed again.
func TestContainerUnixSockets(t *testing.T) {
	const script = `syslogd -n -O /data/messages &
i=0
while :; do i=$((i+1)); echo $i > /data/count; sleep 0.2; done`
	c := newContainer(t, "unixsk", func(s *specs.Spec) { s.Process.Args = []string{"sh", "-c", script} })
	c.start()
	logged := func(msg string) bool {
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if out, err := c.exec("cat /data/messages"); err == nil && strings.Contains(out, msg) {
				return true
			}
		}
		return false
	}
	c.mustExec(t, "logger before-the-checkpoint")
	if !logged("before-the-checkpoint") {
		t.Fatalf("syslogd did not log before the checkpoint")
	}
	dir := filepath.Join(t.TempDir(), "ck")
	checkpointContainer(t, c, dir)
	restoreContainer(t, c, dir)
	c.mustExec(t, "logger after-the-restore")
	if !logged("after-the-restore") {
		out, _ := c.exec("cat /data/messages; ls -l /dev/log")
		t.Errorf("after restore, syslogd did not log logger's message:\n%s", out)
	}
	c.assertCounting(t, "after restore")
	// The restored socket is in the container's network namespace, where
	// the next checkpoint looks for it.
	checkpointContainer(t, c, filepath.Join(t.TempDir(), "ck2"), "--leave-running")
	c.mustExec(t, "logger after-a-second-checkpoint")
	if !logged("after-a-second-checkpoint") {
		t.Errorf("after a second checkpoint with --leave-running, syslogd did not log logger's message")
	}
}

// TestContainerTCPListener: busybox nc listens on TCP port 8080 in a
// container's network namespace, and another pair of nc keeps a
// connection on port 9090 busy with a line every 0.2 s; after restore a
// new client reaches the listener, and the lines keep coming over the
// old connection.
func TestContainerTCPListener(t *testing.T) {
	const script = `nc -l -p 8080 > /data/got &
echo 'while read l; do echo "$l" > /data/line; done' > /data/srv.sh
nc -l -p 9090 -e sh /data/srv.sh &
sleep 0.3
(j=0; while :; do j=$((j+1)); echo $j; sleep 0.2; done) | nc 127.0.0.1 9090 &
i=0
while :; do i=$((i+1)); echo $i > /data/count; sleep 0.2; done`
	c := newContainer(t, "tcp", func(s *specs.Spec) { s.Process.Args = []string{"sh", "-c", script} })
	c.start()
	line := func() int {
		out, _ := c.exec("cat /data/line")
		n, _ := strconv.Atoi(strings.TrimSpace(out))
		return n
	}
	for end := time.Now().Add(5 * time.Second); line() < 3; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("no lines over the connection on port 9090 before the checkpoint")
		}
	}
	dir := filepath.Join(t.TempDir(), "ck")
	checkpointContainer(t, c, dir)
	restoreContainer(t, c, dir)
	before := line()
	for end := time.Now().Add(5 * time.Second); line() <= before+2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the connection on port 9090 carries no new lines after restore: the last is %d", line())
		}
	}
	c.mustExec(t, "echo hello-after-restore | timeout 3 nc 127.0.0.1 8080; true")
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, _ := c.exec("cat /data/got")
		if strings.Contains(out, "hello-after-restore") {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the restored listener did not get the client's line: /data/got is %q", out)
		}
	}
	c.assertCounting(t, "after restore")
}

// TestContainerRuntimeNetns: a runc container joins a network namespace
// made beforehand (as CNI makes one), with a veth to the host. A client
// on the host keeps a TCP connection to a server in the container across
// a checkpoint with --tcp-established: the restored container joins the
// same namespace again, and what the client sent meanwhile is answered.
func TestContainerRuntimeNetns(t *testing.T) {
	e := netnsEchoContainer(t, "netns", 201)
	c, conn, rd, peer, ctIP := e.c, e.conn, e.rd, e.peer, e.ctIP
	ask := func(line string) { t.Helper(); e.ask(t, line) }
	ask("before")

	dir := filepath.Join(t.TempDir(), "ck")
	checkpointContainer(t, c, dir, "--tcp-established")
	// Sent while the container is away: held by the lock, retransmitted
	// to the restored server.
	if _, err := fmt.Fprintf(conn, "during\n"); err != nil {
		t.Fatalf("send while the container is away: %v", err)
	}
	restoreContainer(t, c, dir)
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	if got, err := rd.ReadString('\n'); err != nil || got != "echo:during\n" {
		t.Fatalf("the restored server answered %q (%v) to what was sent while it was away, want echo:during", got, err)
	}
	ask("after")
	if out := c.mustExec(t, "ip addr show "+peer); !strings.Contains(out, ctIP+"/24") {
		t.Errorf("after restore the container's %s is not the runtime's (no %s):\n%s", peer, ctIP, out)
	}
}

// TestContainerUserns: a runc container in a user namespace of its own
// (container root is host uid 100000) keeps its id maps, its credentials
// as seen inside, and the owners of its files across a checkpoint.
func TestContainerUserns(t *testing.T) {
	c := newContainer(t, "userns", func(s *specs.Spec) {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		s.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
		s.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	})
	// The container's root, host uid 100000, must reach its rootfs.
	for _, d := range []string{filepath.Dir(c.bundle), c.bundle} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	c.start()
	const look = "id; cat /proc/1/uid_map /proc/1/gid_map; grep -E '^(Uid|Gid|CapEff)' /proc/1/status; touch /data/mine; ls -ln /data/hello /data/mine | cut -c1-30"
	before := c.mustExec(t, look)
	if !strings.Contains(before, "uid=0(") && !strings.Contains(before, "uid=0 ") {
		t.Fatalf("inside the container id says:\n%s\nwant uid 0", before)
	}
	countAt := c.waitCount(t, 10, 10*time.Second)
	subAt, _ := c.count("sub")
	dir := filepath.Join(t.TempDir(), "ck")
	checkpointContainer(t, c, dir)
	restoreContainer(t, c, dir)
	c.assertCountersContinue(t, countAt, subAt)
	if after := c.mustExec(t, look); after != before {
		t.Errorf("inside, after restore:\n%s\nbefore the checkpoint:\n%s", after, before)
	}
	st, _ := c.state()
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", st.Pid)); err != nil || !strings.Contains(string(b), "100000") {
		t.Errorf("seen from the host, the restored init's uid_map is %q (%v), want 0 -> 100000", b, err)
	}
}

// TestContainerSeccomp: a runc container whose seccomp profile denies
// mkdir keeps its filter across a checkpoint: after restore its init,
// and the processes it forks, are still denied.
func TestContainerSeccomp(t *testing.T) {
	const script = `i=0
while :; do
	i=$((i+1)); echo $i > /data/count
	if mkdir /data/m$i 2>/dev/null; then echo allowed > /data/mkdir; else echo denied > /data/mkdir; fi
	sleep 0.2
done`
	c := newContainer(t, "seccomp", func(s *specs.Spec) {
		s.Process.Args = []string{"sh", "-c", script}
		s.Linux.Seccomp = &specs.LinuxSeccomp{
			DefaultAction: specs.ActAllow,
			Architectures: []specs.Arch{specs.ArchX86_64},
			Syscalls:      []specs.LinuxSyscall{{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno}},
		}
	})
	c.start()
	const look = "grep -E '^(Seccomp|Seccomp_filters|NoNewPrivs):' /proc/1/status; cat /data/mkdir"
	before := c.mustExec(t, look)
	if !strings.Contains(before, "Seccomp:\t2") || !strings.Contains(before, "denied") {
		t.Fatalf("before the checkpoint the container's init is not filtered as its profile says:\n%s", before)
	}
	dir := filepath.Join(t.TempDir(), "ck")
	checkpointContainer(t, c, dir)
	restoreContainer(t, c, dir)
	c.assertCounting(t, "after restore")
	time.Sleep(500 * time.Millisecond) // a few mkdir attempts of the restored tree
	if after := c.mustExec(t, look); after != before {
		t.Errorf("after restore:\n%s\nbefore the checkpoint:\n%s", after, before)
	}
}

// TestContainerSubCgroups: a task moved to cgroups below the
// container's (freezer and pids, with a pids.max of its own) comes back
// in cgroups of the same names, with the same limit, after a checkpoint
// and restore; the others stay in the container's.
func TestContainerSubCgroups(t *testing.T) {
	c := newContainer(t, "subcg", nil)
	c.start()
	init := c.inits[0]
	// The long-lived `sleep 100000` of the container's script.
	var kid string
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", init, init))
	for _, k := range strings.Fields(string(b)) {
		if p, _ := strconv.Atoi(k); isLongSleep(p) {
			kid = k
		}
	}
	if err != nil || kid == "" {
		t.Fatalf("the container's init %d has no sleep 100000 among its children %q: %v", init, b, err)
	}
	kidPid, _ := strconv.Atoi(kid)
	vpid := nsPid(t, kidPid)
	paths := map[string]string{}
	cgFile, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", init))
	for _, l := range strings.Split(string(cgFile), "\n") {
		if f := strings.SplitN(l, ":", 3); len(f) == 3 && (f[1] == "freezer" || f[1] == "pids") {
			paths[f[1]] = f[2]
		}
	}
	if paths["freezer"] == "" || paths["pids"] == "" {
		t.Skipf("no v1 freezer and pids hierarchies: %q", cgFile)
	}
	sub := func(ctrl string) string { return filepath.Join("/sys/fs/cgroup", ctrl, paths[ctrl], "sub") }
	for _, ctrl := range []string{"freezer", "pids"} {
		if err := os.Mkdir(sub(ctrl), 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if pids, err := os.ReadFile(filepath.Join(sub(ctrl), "cgroup.procs")); err == nil {
				for _, p := range strings.Fields(string(pids)) {
					os.WriteFile(filepath.Join(filepath.Dir(sub(ctrl)), "cgroup.procs"), []byte(p), 0o644)
				}
			}
			os.Remove(sub(ctrl))
		})
		if err := os.WriteFile(filepath.Join(sub(ctrl), "cgroup.procs"), []byte(kid), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(sub("pids"), "pids.max"), []byte("50"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "ck")
	checkpointContainer(t, c, dir)
	for _, ctrl := range []string{"freezer", "pids"} {
		os.Remove(sub(ctrl)) // empty now: the restore makes it again
	}
	restoreContainer(t, c, dir)
	c.assertCounting(t, "after restore")
	for _, ctrl := range []string{"freezer", "pids"} {
		procs, err := os.ReadFile(filepath.Join(sub(ctrl), "cgroup.procs"))
		got := strings.Fields(string(procs))
		if err != nil || len(got) != 1 {
			t.Errorf("after restore %s holds %q (%v), want the restored sleep alone", sub(ctrl), procs, err)
			continue
		}
		p, _ := strconv.Atoi(got[0])
		if v := nsPid(t, p); v != vpid {
			t.Errorf("after restore %s holds the task with PID %d in the container, want %d (the sleep)", sub(ctrl), v, vpid)
		}
	}
	if max, err := os.ReadFile(filepath.Join(sub("pids"), "pids.max")); err != nil || strings.TrimSpace(string(max)) != "50" {
		t.Errorf("after restore %s/pids.max is %q (%v), want 50", sub("pids"), max, err)
	}
}

// isLongSleep tells whether pid runs `sleep 100000`, by its whole
// command line: a child the script has forked and that has not exec'd
// yet has the script's command line, which holds "sleep 100000" too.
func isLongSleep(pid int) bool {
	cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return string(cmd) == "sleep\x00100000\x00"
}

// nsPid returns the PID of host task pid in its own PID namespace.
func nsPid(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "NSpid:"); ok {
			f := strings.Fields(v)
			n, _ := strconv.Atoi(f[len(f)-1])
			return n
		}
	}
	t.Fatalf("no NSpid in /proc/%d/status", pid)
	return 0
}

// TestContainerVfork: a container frozen while one of its tasks waits in
// vfork (vforker, whose child execs `sleep 1000` a delay after it is
// ready) cannot be seized as it is: ctcr checkpoint lets it run until the
// child execs, freezes it again and checkpoints it. After restore the
// parent finds its exec'd child alive, and the container counts on.
//
// The child must still wait in vfork when ctcr freezes the container,
// and exec within the 2 s ctcr then lets it run. On a loaded machine
// the freeze may come later than the first delay, 1.5 s: the case is
// then tried again with a new container whose delay is the lateness
// measured (from the ready file's write to the freeze in ctcr's log)
// plus 1 s.
func TestContainerVfork(t *testing.T) {
	delay := 1500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		c := workloadContainer(t, "vfork", "vforker", "vfork child", "late", strconv.Itoa(int(delay.Milliseconds())))
		// The child's delay runs from its write of the ready file,
		// which the test's polling (runc exec) sees late under load.
		ready := time.Now()
		if st, err := c.state(); err == nil && st.Pid > 0 {
			if fi, err := os.Stat(fmt.Sprintf("/proc/%d/root/data/wl/ready", st.Pid)); err == nil {
				ready = fi.ModTime()
			}
		}
		dir := filepath.Join(t.TempDir(), "ck")
		logFile := filepath.Join(t.TempDir(), "checkpoint.log")
		checkpointContainer(t, c, dir, "-v", "--log-file", logFile)
		b, _ := os.ReadFile(logFile)
		if !strings.Contains(string(b), "wait in vfork") {
			late, ok := frozenAfter(string(b), ready)
			if attempt < 3 && ok && late >= delay {
				t.Logf("attempt %d: the container was frozen %v after the ready file, the child had exec'd after %v; again with %v", attempt, late, delay, late+time.Second)
				delay = late + time.Second
				continue
			}
			t.Fatalf("the checkpoint found no task waiting in vfork (the child execs %v after it is ready; the freeze came %v after it, found %v): the case was not exercised; log:\n%s", delay, late, ok, b)
		}
		restoreContainer(t, c, dir)
		c.assertCounting(t, "after restore")
		c.checkWorkload(t, "vforker after restore")
		return
	}
}

// frozenAfter returns how long after since the checkpoint log says the
// container was frozen (its lines start with the local time of day).
func frozenAfter(log string, since time.Time) (time.Duration, bool) {
	for _, l := range strings.Split(log, "\n") {
		f := strings.Fields(l)
		if len(f) < 3 || f[1] != "container" || !strings.Contains(l, " frozen ") {
			continue
		}
		tod, err := time.Parse("15:04:05.000000", f[0])
		if err != nil {
			return 0, false
		}
		s := since.Local()
		at := time.Date(s.Year(), s.Month(), s.Day(), tod.Hour(), tod.Minute(), tod.Second(), tod.Nanosecond(), time.Local)
		return at.Sub(s), true
	}
	return 0, false
}

// TestContainerSysVShmAttached: SysV shared memory attached by a process
// and its child in the container (sysvshm: a segment shared by both, a
// part made read-only, one segment attached twice, one removed while
// attached) is attached again after restore, at the same places with
// the same protections and content, and still shared: the child answers
// the parent through it.
func TestContainerSysVShmAttached(t *testing.T) {
	c := workloadContainer(t, "sysvshm", "sysvshm", "child")
	dir := filepath.Join(t.TempDir(), "ck")
	checkpointContainer(t, c, dir)
	decodeWithCrit(t, filepath.Join(dir, "images"))
	restoreContainer(t, c, dir)
	c.assertCounting(t, "after restore")
	c.checkWorkload(t, "sysvshm after restore")
}

// netnsEchoContainer starts a runc container (named after name) that
// joins a network namespace made beforehand, as CNI makes one, with a
// veth to the host on 10.SUBNET.N.0/24; in it, nc answers each line
// with "echo:LINE" on port 7000, and a loop counts in /data/count. It
// returns the container, a connection from the host to the server, and
// ask, which sends a line and checks the answer.
func netnsEchoContainer(t *testing.T, name string, subnet int) *netnsEcho {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("ip (iproute2) is missing: it makes the namespace and the veth: %v", err)
	}
	n := os.Getpid()%200 + 1
	netns := fmt.Sprintf("ctcrt-%s-%d", name, os.Getpid())
	host, peer := fmt.Sprintf("h%d-%d", subnet, os.Getpid()), fmt.Sprintf("c%d-%d", subnet, os.Getpid())
	hostIP, ctIP := fmt.Sprintf("10.%d.%d.1", subnet, n), fmt.Sprintf("10.%d.%d.2", subnet, n)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", netns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", netns).Run() })
	ip("link", "add", host, "type", "veth", "peer", "name", peer)
	t.Cleanup(func() { exec.Command("ip", "link", "del", host).Run() })
	ip("link", "set", peer, "netns", netns)
	ip("addr", "add", hostIP+"/24", "dev", host)
	ip("link", "set", host, "up")
	ip("-n", netns, "addr", "add", ctIP+"/24", "dev", peer)
	ip("-n", netns, "link", "set", peer, "up")
	ip("-n", netns, "link", "set", "lo", "up")

	const script = `echo 'while read l; do echo "echo:$l"; done' > /data/srv.sh
nc -l -p 7000 -e sh /data/srv.sh &
i=0
while :; do i=$((i+1)); echo $i > /data/count; sleep 0.2; done`
	c := newContainer(t, name, func(s *specs.Spec) {
		s.Process.Args = []string{"sh", "-c", script}
		for i, ns := range s.Linux.Namespaces {
			if ns.Type == specs.NetworkNamespace {
				s.Linux.Namespaces[i].Path = "/var/run/netns/" + netns
			}
		}
	})
	c.start()
	var conn net.Conn
	var err error
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if conn, err = net.DialTimeout("tcp", ctIP+":7000", time.Second); err == nil {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("connect to the container's server at %s:7000: %v", ctIP, err)
		}
	}
	t.Cleanup(func() { conn.Close() })
	return &netnsEcho{c: c, conn: conn, rd: bufio.NewReader(conn), peer: peer, ctIP: ctIP}
}

// netnsEcho is a container netnsEchoContainer made and a client of it.
type netnsEcho struct {
	c          *runcContainer
	conn       net.Conn
	rd         *bufio.Reader
	peer, ctIP string // the container's end of the veth and its address
}

// ask sends line and checks the server's answer.
func (e *netnsEcho) ask(t *testing.T, line string) {
	t.Helper()
	e.conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := fmt.Fprintf(e.conn, "%s\n", line); err != nil {
		t.Fatalf("send %q: %v", line, err)
	}
	if got, err := e.rd.ReadString('\n'); err != nil || got != "echo:"+line+"\n" {
		t.Fatalf("sent %q, the server answered %q (%v)", line, got, err)
	}
}
