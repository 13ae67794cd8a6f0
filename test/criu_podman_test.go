package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ctcr/ctcr/test/harness"
)

// podman (Debian's 4.3.1) checkpoints through ctcr found as `criu` on
// PATH. Each test gets its own podman storage and run root in a
// temporary directory, runc as the runtime, the cgroupfs manager, and
// lower default ulimits than podman's (its nofile default is above what
// this machine's root may set without CAP_SYS_RESOURCE).

type podmanEnv struct {
	t     *testing.T
	dir   string
	env   []string
	image string
}

var podmanSeq atomic.Int32

func newPodman(t *testing.T) *podmanEnv {
	t.Helper()
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("podman is not installed (apt-get install podman): the podman tests run real podman containers")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("/bin/busybox is missing (apt-get install busybox-static): the podman tests import a busybox rootfs")
	}
	link := criuLink(t)
	// podman refuses a run root of over 50 characters: t.TempDir()
	// names are longer.
	dir, err := os.MkdirTemp("", "ctcrpm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// runc keeps the state of podman's containers in its own root: a
	// container left there (podman died, or failed to remove it) is
	// deleted by the next test run once this process is gone.
	if err := harness.OwnDir(dir); err != nil {
		t.Fatal(err)
	}
	p := &podmanEnv{t: t, dir: dir, image: fmt.Sprintf("localhost/ctcrt-busybox:%d-%d", os.Getpid(), podmanSeq.Add(1))}
	conf := filepath.Join(p.dir, "containers.conf")
	if err := os.WriteFile(conf, []byte(`[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
log_driver = "k8s-file"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	p.env = append(os.Environ(), "CONTAINERS_CONF="+conf, "PATH="+filepath.Dir(link)+":"+os.Getenv("PATH"))
	t.Cleanup(p.cleanup)
	rootfs := filepath.Join(p.dir, "rootfs")
	buildBusyboxRootfs(t, rootfs)
	cmd := exec.Command("sh", "-c", `tar -C "$0" -c . | podman --root "$1" --runroot "$2" --storage-driver overlay import - "$3"`,
		rootfs, filepath.Join(p.dir, "root"), filepath.Join(p.dir, "run"), p.image)
	cmd.Env = p.env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("podman import of the busybox rootfs: %v\n%s", err, out)
	}
	return p
}

// run runs podman with args and returns its output and how long it took.
func (p *podmanEnv) run(args ...string) (string, time.Duration, error) {
	full := append([]string{"--root", filepath.Join(p.dir, "root"), "--runroot", filepath.Join(p.dir, "run"), "--storage-driver", "overlay"}, args...)
	cmd := exec.Command("podman", full...)
	cmd.Env = p.env
	start := time.Now()
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	err := runWithTimeout(cmd, 90*time.Second)
	return out.String(), time.Since(start), err
}

func (p *podmanEnv) must(args ...string) (string, time.Duration) {
	p.t.Helper()
	out, took, err := p.run(args...)
	if err != nil {
		p.t.Fatalf("podman %s: %v\n%s%s", strings.Join(args, " "), err, out, p.logs())
	}
	return out, took
}

// logs returns ctcr's logs (dump.log, restore.log) of every container,
// for a failure message.
func (p *podmanEnv) logs() string {
	var b strings.Builder
	paths, _ := filepath.Glob(filepath.Join(p.dir, "root", "overlay-containers", "*", "userdata", "*.log"))
	for _, l := range paths {
		if strings.HasSuffix(l, "ctr.log") {
			continue
		}
		data, _ := os.ReadFile(l)
		fmt.Fprintf(&b, "\n--- %s:\n%s", l, data)
	}
	return b.String()
}

func (p *podmanEnv) cleanup() {
	ids, _, _ := p.run("ps", "-aq", "--no-trunc")
	if out, _, err := p.run("rm", "-af", "-t", "0"); err != nil {
		p.t.Logf("cleanup: podman rm -af: %v: %s", err, out)
	}
	p.run("rmi", "-af")
	p.run("system", "reset", "-f")
	// A container podman failed to remove still runs under its conmon:
	// kill what every conmon of this storage holds, then the conmon.
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, c := range procs {
		b, err := os.ReadFile(c)
		if err != nil || !strings.HasSuffix(strings.SplitN(string(b), "\x00", 2)[0], "conmon") || !strings.Contains(string(b), p.dir+"/") {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(c)))
		kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		for _, k := range strings.Fields(string(kids)) {
			if kp, err := strconv.Atoi(k); err == nil {
				syscall.Kill(kp, syscall.SIGKILL)
			}
		}
		syscall.Kill(pid, syscall.SIGKILL)
	}
	// What podman did not remove stays in runc's root (seen stopped
	// there after failed tests): delete it, or `runc list` fills up.
	harness.DeleteContainers("runc", func(_, bundle string) bool { return strings.HasPrefix(bundle, p.dir+"/") })
	// The containers' cgroups, once their tasks are gone.
	for _, id := range strings.Fields(ids) {
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/libpod_parent/libpod-" + id)
		for _, d := range dirs {
			for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
				if err := os.Remove(d); err == nil || os.IsNotExist(err) {
					break
				}
			}
		}
	}
	// What podman left mounted below its storage (overlay's private
	// bind of its home, shm tmpfs), deepest first.
	f, err := os.Open("/proc/self/mountinfo")
	if err == nil {
		var mps []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if fs := strings.Fields(sc.Text()); len(fs) > 4 && strings.HasPrefix(fs[4], p.dir+"/") {
				mps = append(mps, fs[4])
			}
		}
		f.Close()
		sort.Sort(sort.Reverse(sort.StringSlice(mps)))
		for _, mp := range mps {
			exec.Command("umount", "-l", mp).Run()
		}
	}
	// The cgroups podman made for conmon (libpod_parent/conmon), if
	// nothing else uses them.
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/libpod_parent")
	for _, d := range dirs {
		os.Remove(filepath.Join(d, "conmon"))
		os.Remove(d)
	}
}

// start runs a detached container named name with the counting script.
func (p *podmanEnv) start(name string) {
	p.t.Helper()
	// The counter also goes to stdout, a pipe conmon reads (podman
	// logs): the restored tasks must get conmon's new pipes.
	script := strings.Replace(containerScript, "echo $i > /data/count", "echo $i > /data/count; echo tick $i", 1)
	p.must("run", "-d", "--network", "none", "--name", name, p.image, "sh", "-c", script)
	p.waitCount(name, 5, 15*time.Second)
}

// count reads a counter of the container. The script rewrites it with
// `echo $i > file`: a read between the truncation and the write sees it
// empty, and is made again.
func (p *podmanEnv) count(name, file string) (int, error) {
	for try := 0; ; try++ {
		out, _, err := p.run("exec", name, "cat", "/data/"+file)
		if err != nil {
			return 0, fmt.Errorf("%v: %s", err, out)
		}
		if strings.TrimSpace(out) == "" && try < 5 {
			time.Sleep(30 * time.Millisecond)
			continue
		}
		return strconv.Atoi(strings.TrimSpace(out))
	}
}

func (p *podmanEnv) waitCount(name string, n int, timeout time.Duration) int {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, err := p.count(name, "count")
		if err == nil && got >= n {
			return got
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("container %s: /data/count is %d (%v) after %v, want >= %d", name, got, err, timeout, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *podmanEnv) state(name string) string {
	out, _, err := p.run("inspect", "--format", "{{.State.Status}}", name)
	if err != nil {
		return err.Error() + ": " + out
	}
	return strings.TrimSpace(out)
}

// assertContinues checks that the restored container's counters went on
// from countAt and subAt instead of starting over, and still count.
func (p *podmanEnv) assertContinues(name string, countAt, subAt int) {
	p.t.Helper()
	got, err := p.count(name, "count")
	if err != nil || got < countAt {
		p.t.Errorf("%s: /data/count is %d (%v) after restore, below %d read before the checkpoint", name, got, err, countAt)
	}
	p.waitCount(name, got+2, 5*time.Second)
	if sub, err := p.count(name, "sub"); err != nil || sub < subAt {
		p.t.Errorf("%s: /data/sub is %d (%v) after restore, below %d", name, sub, err, subAt)
	}
	// What the restored init prints reaches conmon (inherit_fd of the
	// stdio pipes): podman logs shows a tick after the restore.
	want := fmt.Sprintf("tick %d\n", got+1)
	var logs string
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if logs, _, _ = p.run("logs", name); strings.Contains(logs, want) {
			return
		}
	}
	p.t.Errorf("%s: podman logs has no %q after restore: the restored init's stdout does not reach conmon; last lines: %q", name, want, lastLines(logs, 3))
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func TestCriuPodmanCheckpointRestore(t *testing.T) {
	p := newPodman(t)
	p.start("ck")
	countAt, _ := p.count("ck", "count")
	subAt, _ := p.count("ck", "sub")
	_, took := p.must("container", "checkpoint", "ck")
	t.Logf("podman container checkpoint through ctcr: %v", took)
	if st := p.state("ck"); st != "exited" {
		t.Fatalf("after checkpoint the container is %q, want exited", st)
	}
	_, took = p.must("container", "restore", "ck")
	t.Logf("podman container restore through ctcr: %v", took)
	if st := p.state("ck"); st != "running" {
		t.Fatalf("after restore the container is %q, want running", st)
	}
	p.assertContinues("ck", countAt, subAt)
	if out, _ := p.must("exec", "ck", "cat", "/data/hello"); !strings.Contains(out, "written before the checkpoint") {
		t.Errorf("/data/hello after restore: %q", out)
	}
}

func TestCriuPodmanExportImport(t *testing.T) {
	p := newPodman(t)
	p.start("ex")
	countAt, _ := p.count("ex", "count")
	subAt, _ := p.count("ex", "sub")
	archive := filepath.Join(p.dir, "ex.tar.zst")
	_, took := p.must("container", "checkpoint", "--export", archive, "ex")
	t.Logf("podman container checkpoint --export through ctcr: %v", took)
	out, err := exec.Command("tar", "--zstd", "-tf", archive).CombinedOutput()
	if err != nil {
		t.Fatalf("tar --zstd -tf %s: %v\n%s", archive, err, out)
	}
	for _, want := range []string{"checkpoint/inventory.img", "checkpoint/descriptors.json", "stats-dump", "config.dump", "spec.dump"} {
		if !strings.Contains(string(out), want+"\n") {
			t.Errorf("the exported archive has no %s:\n%s", want, out)
		}
	}
	// A second copy beside the checkpointed one: a new container, a
	// new rootfs and userdata, bound where the old ones were.
	_, took = p.must("container", "restore", "--import", archive, "--name", "ex2")
	t.Logf("podman container restore --import --name through ctcr: %v", took)
	p.assertContinues("ex2", countAt, subAt)
	p.must("rm", "ex")
	_, took = p.must("container", "restore", "--import", archive)
	t.Logf("podman container restore --import through ctcr: %v", took)
	p.assertContinues("ex", countAt, subAt)
	if got := strings.TrimSpace(must1(p.must("exec", "ex2", "hostname"))); got == "" {
		t.Error("runc exec hostname in the imported copy printed nothing")
	}
}

func must1(s string, _ time.Duration) string { return s }

// podmanStats is the part of podman's --print-stats output the test reads.
type podmanStats struct {
	Containers []struct {
		Criu map[string]uint64 `json:"criu_statistics"`
	} `json:"container_statistics"`
}

func TestCriuPodmanPreCheckpointAndStats(t *testing.T) {
	p := newPodman(t)
	p.start("pre")
	p.must("container", "checkpoint", "--pre-checkpoint", "pre")
	if st := p.state("pre"); st != "running" {
		t.Fatalf("after --pre-checkpoint the container is %q, want running", st)
	}
	countAt := p.waitCount("pre", 1, time.Second)
	out, _ := p.must("container", "checkpoint", "--with-previous", "--print-stats", "pre")
	var st podmanStats
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &st); err != nil || len(st.Containers) != 1 {
		t.Fatalf("podman checkpoint --print-stats: %v:\n%s", err, out)
	}
	if c := st.Containers[0].Criu; c["frozen_time"] == 0 || c["pages_written"] == 0 || c["pages_scanned"] <= c["pages_written"] {
		t.Errorf("stats-dump read by podman: %v; want frozen_time and pages_written, and pages_scanned above pages_written (pages left to the pre-checkpoint)", c)
	}
	out, _ = p.must("container", "restore", "--print-stats", "pre")
	st = podmanStats{}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &st); err != nil || len(st.Containers) != 1 {
		t.Fatalf("podman restore --print-stats: %v:\n%s", err, out)
	}
	if c := st.Containers[0].Criu; c["restore_time"] == 0 || c["pages_restored"] == 0 {
		t.Errorf("stats-restore read by podman: %v; want restore_time and pages_restored", c)
	}
	if got, err := p.count("pre", "count"); err != nil || got < countAt {
		t.Errorf("/data/count is %d (%v) after restore, below %d", got, err, countAt)
	}
	p.waitCount("pre", countAt+2, 5*time.Second)
}
