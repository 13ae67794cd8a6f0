package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Real runc (or crun) containers for the container tests: a
// busybox-static rootfs built in a temporary directory, a config.json
// from `runc spec` edited for the test, `runc run -d`. Every container
// gets a unique id, and its cleanup (runc delete -f, /var/lib/ctcr/ID,
// /run/ctcr/ID.*) runs even when the test fails.

// needRunc skips the test unless runc and /bin/busybox (busybox-static)
// are installed.
func needRunc(t *testing.T) {
	t.Helper()
	needRuntime(t, "runc")
}

// needRuntime skips the test unless the OCI runtime (runc or crun) and
// /bin/busybox are installed.
func needRuntime(t *testing.T, runtime string) {
	t.Helper()
	if _, err := exec.LookPath(runtime); err != nil {
		t.Skipf("%s is not installed (apt-get install %s): the container tests run real %s containers", runtime, runtime, runtime)
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("/bin/busybox is missing (apt-get install busybox-static): the container tests build a busybox rootfs")
	}
	needCtcr(t)
}

var containerSeq atomic.Int32

// runcContainer is one test container.
type runcContainer struct {
	t       *testing.T
	runtime string // runc or crun: the binary every command of it runs
	id      string
	bundle  string
	rootfs  string
	spec    *specs.Spec
	inits   []int // host PIDs its init had, reaped at cleanup
}

// containerScript is the init of most test containers: it writes a file
// to its tmpfs, starts two long-lived children (a subshell that counts
// in /data/sub and a sleep) and counts in /data/count every 0.2 s. Only
// the `sleep 0.2`/`sleep 0.3` of the loops come and go.
const containerScript = `trap 'echo term > /data/term; exit 3' TERM
seq 1 3000 > /data/seq
echo "written before the checkpoint" > /data/hello
(j=0; while :; do j=$((j+1)); echo $j > /data/sub; sleep 0.3; done) &
sleep 100000 &
i=0
while :; do
	i=$((i+1)); echo $i > /data/count
	[ $i = 5 ] && touch /data/ready
	sleep 0.2
done`

// newContainer prepares a busybox bundle for a container named after
// name; edit (optional) changes its spec before it is written.
func newContainer(t *testing.T, name string, edit func(*specs.Spec)) *runcContainer {
	t.Helper()
	return newRuntimeContainer(t, "runc", name, edit)
}

// newRuntimeContainer is newContainer for the OCI runtime given.
func newRuntimeContainer(t *testing.T, runtime, name string, edit func(*specs.Spec)) *runcContainer {
	t.Helper()
	needRuntime(t, runtime)
	c := &runcContainer{t: t, runtime: runtime, id: fmt.Sprintf("ctcrt-%s-%d-%d", name, os.Getpid(), containerSeq.Add(1))}
	c.bundle = t.TempDir()
	c.rootfs = filepath.Join(c.bundle, "rootfs")
	buildBusyboxRootfs(t, c.rootfs)
	if out, err := c.cmd(30*time.Second, c.bundle, "spec"); err != nil {
		t.Fatalf("%s spec: %v\n%s", runtime, err, out)
	}
	b, err := os.ReadFile(filepath.Join(c.bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	c.spec = &specs.Spec{}
	if err := json.Unmarshal(b, c.spec); err != nil {
		t.Fatal(err)
	}
	c.spec.Process.Terminal = false
	c.spec.Process.Args = []string{"sh", "-c", containerScript}
	c.spec.Root.Readonly = false
	c.spec.Hostname = "h-" + name
	c.spec.Mounts = append(c.spec.Mounts, specs.Mount{Destination: "/data", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=755", "size=16m"}})
	if edit != nil {
		edit(c.spec)
	}
	b, err = json.MarshalIndent(c.spec, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.bundle, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.cleanup)
	return c
}

// buildBusyboxRootfs makes a root file system of busybox-static and its
// applets in rootfs, with /data for the workload's files.
func buildBusyboxRootfs(t *testing.T, rootfs string) {
	t.Helper()
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "data", "etc"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, "/bin/busybox", filepath.Join(rootfs, "bin/busybox"), 0o755)
	out, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	for _, app := range strings.Fields(string(out)) {
		if app == "busybox" {
			continue // it lists itself
		}
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", app)); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(rootfs, "etc/passwd"), []byte("root:x:0:0:root:/:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(rootfs, "etc/group"), []byte("root:x:0:\n"), 0o644)
}

// start runs the container detached (runDetached) and waits until its
// init has counted to 5 (tmpfs written, children started).
func (c *runcContainer) start() {
	c.t.Helper()
	c.runDetached(c.t)
	c.waitCount(c.t, 5, 10*time.Second)
}

// runDetached runs `RUNTIME run -d` for the container, its stdio on the
// log file (logFile), and returns its init's host PID, recorded for
// cleanup. A run that fails, or a container whose init is already gone
// when the runtime returns, fails the test with the runtime's output,
// which holds the init's last words.
func (c *runcContainer) runDetached(t *testing.T) int {
	t.Helper()
	logf, err := os.Create(c.logFile())
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	argv := c.runArgv()
	cmd := exec.Command(argv[0], append(argv[1:], "run", "-d", c.id)...)
	cmd.Dir = c.bundle
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := runWithTimeout(cmd, 30*time.Second); err != nil {
		b, _ := os.ReadFile(logf.Name())
		t.Fatalf("%s run -d %s: %v\n%s", c.runtime, c.id, err, b)
	}
	c.notePid()
	if len(c.inits) == 0 {
		time.Sleep(200 * time.Millisecond) // for the init's last words
		b, _ := os.ReadFile(logf.Name())
		t.Fatalf("%s state of %s gives no init: its output:\n%s", c.runtime, c.id, b)
	}
	return c.inits[len(c.inits)-1]
}

func (c *runcContainer) cleanup() {
	if out, err := c.cmd(30*time.Second, "", "delete", "-f", c.id); err != nil {
		if _, serr := c.state(); serr == nil {
			c.t.Logf("cleanup: %s delete -f %s: %v: %s (the next test run deletes it)", c.runtime, c.id, err, out)
		}
	}
	c.notePid()
	for _, pid := range c.inits {
		// The test process is a subreaper: an init whose runc exited is
		// its child. Collect the zombie, or wait for it to vanish.
		reap(pid, 5*time.Second)
	}
	os.RemoveAll(filepath.Join("/var/lib/ctcr", c.id))
	for _, suffix := range []string{".lock", ".hook.log"} {
		os.Remove(filepath.Join("/run/ctcr", c.id+suffix))
	}
}

// notePid records the init's current host PID for cleanup.
func (c *runcContainer) notePid() {
	if st, err := c.state(); err == nil && st.Pid > 0 {
		for _, p := range c.inits {
			if p == st.Pid {
				return
			}
		}
		c.inits = append(c.inits, st.Pid)
	}
}

// runcStateOut is the output of `runc state` (and `crun state`).
type runcStateOut struct {
	Status string `json:"status"`
	Pid    int    `json:"pid"`
}

func (c *runcContainer) state() (runcStateOut, error) {
	var st runcStateOut
	out, err := c.cmd(10*time.Second, "", "state", c.id)
	if err != nil {
		return st, fmt.Errorf("%s state %s: %v: %s", c.runtime, c.id, err, out)
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("%s state %s: %v: %s", c.runtime, c.id, err, out)
	}
	return st, nil
}

// status is runc's status of the container, or the error text.
func (c *runcContainer) status() string {
	st, err := c.state()
	if err != nil {
		return err.Error()
	}
	return st.Status
}

// waitStatus waits until runc reports want.
func (c *runcContainer) waitStatus(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := c.status()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s: %s state says %q after %v, want %q", c.id, c.runtime, got, timeout, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// exec runs script with sh inside the container (runc exec).
func (c *runcContainer) exec(script string) (string, error) {
	out, err := c.cmd(30*time.Second, "", "exec", c.id, "sh", "-c", script)
	if err != nil {
		return string(out), fmt.Errorf("%s exec %s sh -c %q: %v: %s", c.runtime, c.id, script, err, out)
	}
	return string(out), nil
}

// mustExec is exec that fails the test on error.
// waitFileHolds waits up to 20 s until the file at path in the
// container holds want, and returns its content.
func (c *runcContainer) waitFileHolds(t *testing.T, path, want string) string {
	t.Helper()
	var out string
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		o, err := c.exec("cat " + path)
		if err == nil && strings.Contains(o, want) {
			return o
		}
		out = o
	}
	t.Fatalf("%s in the container never held %q: %q", path, want, out)
	return ""
}

func (c *runcContainer) mustExec(t *testing.T, script string) string {
	t.Helper()
	out, err := c.exec(script)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// count reads a counter file of the container from the host, through
// its init's root: the file is on the container's tmpfs.
func (c *runcContainer) count(name string) (int, error) {
	st, err := c.state()
	if err != nil {
		return 0, err
	}
	if st.Pid <= 0 {
		return 0, fmt.Errorf("container %s is %s", c.id, st.Status)
	}
	// The shell's `echo N > /data/NAME` truncates the file before it
	// writes: a read in between finds it empty, and is made again.
	path := fmt.Sprintf("/proc/%d/root/data/%s", st.Pid, name)
	for try := 0; ; try++ {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, err
		}
		if s := strings.TrimSpace(string(b)); s != "" || try == 20 {
			return strconv.Atoi(s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitCount waits until /data/count reaches at least n.
func (c *runcContainer) waitCount(t *testing.T, n int, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, err := c.count("count")
		if err == nil && got >= n {
			return got
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(c.logFile())
			t.Fatalf("container %s: /data/count is %d (%v) after %v, want >= %d; %s log: %s", c.id, got, err, timeout, n, c.runtime, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// assertCounting fails unless /data/count moves within a few seconds.
func (c *runcContainer) assertCounting(t *testing.T, what string) int {
	t.Helper()
	first, err := c.count("count")
	if err != nil {
		t.Fatalf("%s: container %s: /data/count: %v", what, c.id, err)
	}
	return c.waitCountMsg(t, first+2, 5*time.Second, what)
}

// assertCountersContinue checks after a restore that the init's counter
// and its child subshell's went on from countAt and subAt, read before
// the checkpoint, instead of starting over, and that the init counts.
func (c *runcContainer) assertCountersContinue(t *testing.T, countAt, subAt int) {
	t.Helper()
	got, err := c.count("count")
	if err != nil {
		t.Fatal(err)
	}
	if got < countAt {
		t.Errorf("/data/count is %d after restore, below %d read before the checkpoint: the loop started over", got, countAt)
	}
	c.assertCounting(t, "after restore")
	if sub, err := c.count("sub"); err != nil || sub < subAt {
		t.Errorf("/data/sub (the child subshell's counter) is %d (%v) after restore, below %d", sub, err, subAt)
	}
}

func (c *runcContainer) waitCountMsg(t *testing.T, n int, timeout time.Duration, what string) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, err := c.count("count")
		if err == nil && got >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: container %s: /data/count stuck at %d (%v) for %v, want >= %d", what, c.id, got, err, timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runcCmd runs runc with args in dir (if not empty).
func runcCmd(timeout time.Duration, dir string, args ...string) ([]byte, error) {
	return runtimeCmd(timeout, dir, "runc", args...)
}

// cmd runs the container's runtime with args in dir (if not empty).
func (c *runcContainer) cmd(timeout time.Duration, dir string, args ...string) ([]byte, error) {
	return runtimeCmd(timeout, dir, c.runtime, args...)
}

// logFile is where start sends the runtime's output.
func (c *runcContainer) logFile() string {
	return filepath.Join(c.bundle, c.runtime+".log")
}

// runArgv is the command that runs `RUNTIME run` for this container.
// crun 1.8 refuses to create a container on a hybrid cgroup hierarchy
// whose cgroup2 part has any controller available ("cgroups in hybrid
// mode not supported, drop all controllers from cgroupv2"), even with
// --cgroup-manager=disabled; the hosts the tests run on have hugetlb
// there. crun uses only the v1 controllers and the bare unified
// hierarchy in hybrid mode, so it is run in a private mount namespace in
// which that cgroup.controllers is an empty file. Nothing of that
// namespace outlives `crun run -d` (the container gets a mount namespace
// of its own); every other crun command runs unchanged.
func (c *runcContainer) runArgv() []string {
	if c.runtime != "crun" || !hybridWithV2Controllers() {
		return []string{c.runtime}
	}
	empty := filepath.Join(c.bundle, "no-controllers")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		c.t.Fatal(err)
	}
	return []string{"unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount --bind "$0" /sys/fs/cgroup/unified/cgroup.controllers && exec crun "$@"`, empty}
}

// hybridWithV2Controllers reports whether /sys/fs/cgroup is a hybrid
// hierarchy (a tmpfs with cgroup2 on unified/) whose cgroup2 root lists
// controllers.
func hybridWithV2Controllers() bool {
	var fs unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &fs); err != nil || fs.Type != unix.TMPFS_MAGIC {
		return false
	}
	b, err := os.ReadFile("/sys/fs/cgroup/unified/cgroup.controllers")
	return err == nil && len(bytes.TrimSpace(b)) > 0
}

// runtimeCmd runs runtime (runc or crun) with args in dir (if not empty).
func runtimeCmd(timeout time.Duration, dir, runtime string, args ...string) ([]byte, error) {
	var out bytes.Buffer
	err := runtimeRun(timeout, dir, runtime, &out, &out, args...)
	return out.Bytes(), err
}

// runtimeStdout runs the runtime like runtimeCmd but returns its stdout
// alone, for output to parse: `runc list` warns on stderr about a
// container another test deletes meanwhile.
func runtimeStdout(timeout time.Duration, runtime string, args ...string) (stdout, stderr []byte, err error) {
	var out, errOut bytes.Buffer
	err = runtimeRun(timeout, "", runtime, &out, &errOut, args...)
	return out.Bytes(), errOut.Bytes(), err
}

func runtimeRun(timeout time.Duration, dir, runtime string, stdout, stderr io.Writer, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, runtime, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v", timeout)
	}
	return err
}

func runWithTimeout(cmd *exec.Cmd, timeout time.Duration) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		return fmt.Errorf("timed out after %v", timeout)
	}
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}

var lddLib = regexp.MustCompile(`(?m)(/\S+) \(0x`)

// installHostBinary copies a dynamically linked host binary and the
// libraries ldd names into the rootfs, at the same paths.
func (c *runcContainer) installHostBinary(bin string) error {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return fmt.Errorf("ldd %s: %v", bin, err)
	}
	files := []string{bin}
	for _, m := range lddLib.FindAllStringSubmatch(string(out), -1) {
		files = append(files, m[1])
	}
	for _, f := range files {
		real, err := filepath.EvalSymlinks(f)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(real)
		if err != nil {
			return err
		}
		dst := filepath.Join(c.rootfs, f)
		os.MkdirAll(filepath.Dir(dst), 0o755)
		os.Remove(dst) // busybox may have put a symlink there
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// ctcrWithStdin runs ctcr with args and stdin, as a runtime runs a hook.
func ctcrWithStdin(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	needCtcr(t)
	cmd := exec.Command(ctcrBin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := runWithTimeout(cmd, 30*time.Second); err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("ctcr %s: %v", strings.Join(args, " "), err)
		}
	}
	return cmd.ProcessState.ExitCode(), o.String(), e.String()
}

// workloadContainer starts a runc container named after name whose init
// runs the workload (with args, its files in /data/wl) in the background
// before containerScript, and waits until the workload's ready file
// holds ready.
func workloadContainer(t *testing.T, name, workload, ready string, args ...string) *runcContainer {
	t.Helper()
	bin := workloadBin(t, workload)
	cmd := strings.Join(append([]string{bin, "/data/wl"}, args...), " ")
	script := "mkdir -p /data/wl; " + cmd + " > /data/wl/out 2>&1 &\n" + containerScript
	c := newContainer(t, name, func(s *specs.Spec) { s.Process.Args = []string{"sh", "-c", script} })
	if err := c.installHostBinary(bin); err != nil {
		t.Fatalf("copy %s into the rootfs: %v", workload, err)
	}
	c.start()
	c.waitFileHolds(t, "/data/wl/ready", ready)
	return c
}

// checkWorkload asks the workload of a workloadContainer to check itself
// and wants it to pass.
func (c *runcContainer) checkWorkload(t *testing.T, what string) {
	t.Helper()
	c.mustExec(t, "touch /data/wl/check")
	if res := c.waitFileHolds(t, "/data/wl/result", "PASS"); !strings.HasPrefix(res, "PASS") {
		t.Errorf("%s: %s", what, res)
	}
}
