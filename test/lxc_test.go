package test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/container"
)

// A privileged LXC container built by hand under a temporary lxcpath: the
// busybox rootfs, no network devices, no consoles or ttys, a tmpfs on
// /data, and containerScript as its init. LXC's tools reach it with
// -P LXCPATH, ctcr with --lxcpath LXCPATH.

// lxcContainer is one test LXC container.
type lxcContainer struct {
	t       *testing.T
	lxcpath string
	name    string
	rootfs  string
	inits   []int    // host PIDs its init had
	cgroups []string // its cgroup paths (as in /proc/PID/cgroup), removed at cleanup
}

func needLXC(t *testing.T) {
	t.Helper()
	for _, bin := range []string{"lxc-start", "lxc-info", "lxc-stop", "lxc-attach", "nsenter"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s is not installed (apt-get install lxc util-linux): the LXC tests run a real LXC container", bin)
		}
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("/bin/busybox is missing (apt-get install busybox-static): the LXC tests build a busybox rootfs")
	}
	needCtcr(t)
}

func newLXCContainer(t *testing.T) *lxcContainer {
	t.Helper()
	needLXC(t)
	c := &lxcContainer{t: t, lxcpath: t.TempDir(), name: fmt.Sprintf("ctcrt-lxc-%d-%d", os.Getpid(), containerSeq.Add(1))}
	dir := filepath.Join(c.lxcpath, c.name)
	c.rootfs = filepath.Join(dir, "rootfs")
	buildBusyboxRootfs(t, c.rootfs)
	if err := os.WriteFile(filepath.Join(c.rootfs, "init.sh"), []byte(containerScript+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	config := strings.Join([]string{
		"lxc.uts.name = h-lxc",
		"lxc.rootfs.path = dir:" + c.rootfs,
		"lxc.net.0.type = empty",
		"lxc.tty.max = 0",
		"lxc.pty.max = 0",
		"lxc.console.path = none",
		"lxc.init.cmd = /bin/sh /init.sh",
		"lxc.mount.auto = proc:mixed sys:ro",
		"lxc.mount.entry = tmpfs data tmpfs nosuid,nodev,mode=755,size=16m 0 0",
		"lxc.autodev = 1",
		"lxc.apparmor.profile = unconfined",
		"",
	}, "\n")
	if err := os.WriteFile(filepath.Join(dir, "config"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.cleanup)
	return c
}

// lxc runs an LXC tool on the container.
func (c *lxcContainer) lxc(tool string, args ...string) (string, error) {
	cmd := exec.Command(tool, append([]string{"-P", c.lxcpath, "-n", c.name}, args...)...)
	out, err := outputWithTimeout(cmd, 30*time.Second)
	if err != nil {
		return out, fmt.Errorf("%s -P %s -n %s %s: %v: %s", tool, c.lxcpath, c.name, strings.Join(args, " "), err, out)
	}
	return out, nil
}

func outputWithTimeout(cmd *exec.Cmd, timeout time.Duration) (string, error) {
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	err := runWithTimeout(cmd, timeout)
	return out.String(), err
}

// start runs lxc-start (which daemonizes: its monitor becomes this test's
// child, the test being a subreaper) and waits until the init counted
// to 5.
func (c *lxcContainer) start() {
	c.t.Helper()
	if out, err := c.lxc("lxc-start", "-l", "DEBUG", "-o", filepath.Join(c.lxcpath, c.name+".log")); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.lxcpath, c.name+".log"))
		c.t.Fatalf("%v\n%s\n%s", err, out, log)
	}
	out, err := c.lxc("lxc-info", "-p", "-H")
	if err != nil {
		c.t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		c.t.Fatalf("lxc-info -p: %q", out)
	}
	c.noteInit(pid)
	c.waitCount(c.t, pid, 5, 10*time.Second)
}

// noteInit records an init PID and its cgroups for cleanup.
func (c *lxcContainer) noteInit(pid int) {
	c.inits = append(c.inits, pid)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.SplitN(line, ":", 3); len(f) == 3 && f[2] != "/" {
			for _, p := range c.cgroups {
				if p == f[2] {
					return
				}
			}
			c.cgroups = append(c.cgroups, f[2])
		}
	}
}

// cleanup stops the container whatever state it is in: lxc-stop while
// LXC's monitor runs; else every task in its freezer cgroup is killed (a
// container ctcr restored has no monitor). Then its cgroups, which LXC's
// monitor removes but nobody does after a restore, and its zombies go.
func (c *lxcContainer) cleanup() {
	c.lxc("lxc-stop", "-k")
	for _, cg := range c.cgroups {
		procs, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/freezer", cg, "cgroup.procs"))
		for _, f := range strings.Fields(string(procs)) {
			if p, err := strconv.Atoi(f); err == nil {
				unix.Kill(p, unix.SIGKILL)
			}
		}
	}
	for _, pid := range c.inits {
		reap(pid, 5*time.Second)
	}
	// LXC's monitors were this test's children: collect any left.
	for {
		var ws unix.WaitStatus
		if p, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil); p <= 0 || err != nil {
			break
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, cg := range c.cgroups {
		dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", cg))
		for _, d := range dirs {
			for os.Remove(d) != nil && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond) // killed tasks leave it a moment later
			}
		}
	}
	for _, suffix := range []string{".lock", ".init.json"} {
		os.Remove(filepath.Join("/run/ctcr", c.name+suffix))
	}
}

// mustExec runs script with the container's sh inside all its namespaces
// and root (nsenter): lxc-attach needs LXC's monitor, which a restored
// container no longer has.
func (c *lxcContainer) mustExec(t *testing.T, script string) string {
	t.Helper()
	pid := c.inits[len(c.inits)-1]
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-a", "-r", "-w", "/bin/sh", "-c", script)
	out, err := outputWithTimeout(cmd, 30*time.Second)
	if err != nil {
		t.Fatalf("nsenter -t %d -a -r -w sh -c %q: %v: %s", pid, script, err, out)
	}
	return out
}

func (c *lxcContainer) count(pid int, name string) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/data/%s", pid, name))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func (c *lxcContainer) waitCount(t *testing.T, pid, n int, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, err := c.count(pid, "count")
		if err == nil && got >= n {
			return got
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(c.lxcpath, c.name+".log"))
			t.Fatalf("container %s: /data/count of init %d is %d (%v) after %v, want >= %d; LXC log:\n%s", c.name, pid, got, err, timeout, n, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ctcr runs ctcr with --lxcpath for this container.
func (c *lxcContainer) ctcr(t *testing.T, args ...string) *ctcrRun {
	t.Helper()
	return runCtcr(t, 60*time.Second, append(args, "--lxcpath", c.lxcpath)...)
}

// initByCtcr is the container's init as `ctcr ps` sees it (PID 1
// inside), or 0.
func (c *lxcContainer) initByCtcr(t *testing.T) int {
	t.Helper()
	r := c.ctcr(t, "ps", c.name, "--json")
	if r.code() != 0 {
		t.Fatalf("%s: exit %d: %s", r, r.code(), r.stderr())
	}
	var ps []container.Process
	if err := json.Unmarshal([]byte(r.stdout()), &ps); err != nil {
		t.Fatalf("%s: %v: %s", r, err, r.stdout())
	}
	for _, p := range ps {
		if p.NSPid == 1 {
			return p.Pid
		}
	}
	return 0
}

// TestLXCCheckpointRestore: an LXC container is checkpointed (and so
// stopped) and restored twice; seen from inside it counts on and keeps
// its tmpfs files, hostname and PIDs. LXC's own tools lose track of it
// at the checkpoint (its monitor exits with the init); ctcr's commands
// keep finding it.
func TestLXCCheckpointRestore(t *testing.T) {
	c := newLXCContainer(t)
	c.start()
	oldPid := c.inits[0]
	const inside = "md5sum /data/seq; cat /data/hello; hostname; readlink /proc/1/exe; tr '\\0' ' ' < /proc/1/cmdline; echo; grep -c . /proc/mounts"
	sums := c.mustExec(t, inside)
	if !strings.Contains(sums, "h-lxc\n") {
		t.Fatalf("the container's hostname is not h-lxc:\n%s", sums)
	}
	if out, err := c.lxc("lxc-attach", "--", "cat", "/data/hello"); err != nil || out != "written before the checkpoint\n" {
		t.Fatalf("lxc-attach before the checkpoint: %q, %v", out, err)
	}
	before := psInside(t, c)
	if len(before) != 3 {
		t.Fatalf("before the checkpoint the container runs %d long-lived processes, want 3 (init, counting subshell, sleep):\n%s", len(before), strings.Join(before, "\n"))
	}

	pid := oldPid
	for round := 1; round <= 2; round++ {
		countAt := c.waitCount(t, pid, 10*round, 10*time.Second)
		subAt, _ := c.count(pid, "sub")
		dir := filepath.Join(t.TempDir(), "ck")
		if r := c.ctcr(t, "checkpoint", c.name, "-D", dir); r.code() != 0 {
			t.Fatalf("round %d: %s: exit %d\n%s", round, r, r.code(), r.stderr())
		}
		if exists(pid) {
			if st, err := readStat(pid); err == nil && st.state != 'Z' {
				t.Fatalf("round %d: after ctcr checkpoint the init %d still runs: %s", round, pid, describe(pid))
			}
		}
		reap(pid, 5*time.Second)
		if r := c.ctcr(t, "checkpoint", c.name, "-D", filepath.Join(t.TempDir(), "ck")); r.code() != 31 {
			t.Errorf("round %d: %s of the checkpointed container: exit %d, want 31\n%s", round, r, r.code(), r.stderr())
		}
		if r := c.ctcr(t, "restore", c.name, "-D", dir); r.code() != 0 {
			t.Fatalf("round %d: %s: exit %d\n%s", round, r, r.code(), r.stderr())
		}
		pid = c.initByCtcr(t)
		if pid == 0 {
			t.Fatalf("round %d: after restore ctcr ps shows no PID 1 in %s", round, c.name)
		}
		c.noteInit(pid)
		t.Run(fmt.Sprintf("round %d: the counters continue from where they were", round), func(t *testing.T) {
			got, err := c.count(pid, "count")
			if err != nil {
				t.Fatal(err)
			}
			if got < countAt {
				t.Errorf("/data/count is %d after restore, below %d read before the checkpoint: the loop started over", got, countAt)
			}
			c.waitCount(t, pid, got+2, 5*time.Second)
			if sub, err := c.count(pid, "sub"); err != nil || sub < subAt {
				t.Errorf("/data/sub (the child subshell's counter) is %d (%v) after restore, below %d", sub, err, subAt)
			}
		})
		t.Run(fmt.Sprintf("round %d: tmpfs files, hostname, PID 1, mounts and the process tree are the same inside", round), func(t *testing.T) {
			if after := c.mustExec(t, inside); after != sums {
				t.Errorf("seen from inside, after restore:\n%s\nbefore the checkpoint:\n%s", after, sums)
			}
			if after := psInside(t, c); strings.Join(after, "\n") != strings.Join(before, "\n") {
				t.Errorf("processes inside after restore:\n%s\nbefore the checkpoint:\n%s", strings.Join(after, "\n"), strings.Join(before, "\n"))
			}
		})
		if r := c.ctcr(t, "restore", c.name, "-D", dir); r.code() != 32 {
			t.Errorf("round %d: %s of the running restored container: exit %d, want 32\n%s", round, r, r.code(), r.stderr())
		}
	}
	// What LXC's tools say of the restored container: its monitor exited
	// with the first init, so they call it stopped and cannot reach it.
	if out, _ := c.lxc("lxc-info", "-s", "-H"); strings.TrimSpace(out) != "RUNNING" {
		t.Logf("after restore lxc-info says %q: LXC's monitor, which it asks, ended at the checkpoint", strings.TrimSpace(out))
	}
	t.Run("ctcr kill ends the restored container", func(t *testing.T) {
		if r := c.ctcr(t, "kill", c.name, "KILL"); r.code() != 0 {
			t.Fatalf("%s: exit %d\n%s", r, r.code(), r.stderr())
		}
		reap(pid, 5*time.Second)
		if r := c.ctcr(t, "checkpoint", c.name, "-D", filepath.Join(t.TempDir(), "ck")); r.code() != 31 {
			t.Errorf("%s of the killed container: exit %d, want 31\n%s", r, r.code(), r.stderr())
		}
	})
}

// TestLXCUnknownContainer: a checkpoint of a name no lxcpath holds exits 1
// and names the LXC config files it looked for, --lxcpath's first.
func TestLXCUnknownContainer(t *testing.T) {
	needLXC(t)
	lxcpath := t.TempDir()
	id := fmt.Sprintf("ctcrt-lxc-nosuch-%d", os.Getpid())
	t.Cleanup(func() { os.Remove(filepath.Join("/run/ctcr", id+".lock")) })
	r := runCtcr(t, 20*time.Second, "checkpoint", id, "--lxcpath", lxcpath, "-D", filepath.Join(t.TempDir(), "ck"))
	if r.code() != 1 {
		t.Errorf("%s: exit status %d, want 1; stderr: %s", r, r.code(), r.stderr())
	}
	for _, place := range []string{filepath.Join(lxcpath, id, "config"), "/var/lib/lxc/" + id + "/config"} {
		if !strings.Contains(r.stderr(), place) {
			t.Errorf("%s: stderr does not name %s: %s", r, place, r.stderr())
		}
	}
}
