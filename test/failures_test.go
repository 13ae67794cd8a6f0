package test

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/images"
)

// assertFailed checks the failure contract: exit status 1 and one line on
// stderr that names the object (any of names).
func assertFailed(t *testing.T, r *ctcrRun, names ...string) {
	t.Helper()
	stderr := strings.TrimSpace(r.stderr())
	if r.code() != 1 {
		t.Errorf("%s: exit status %d, want 1; stderr: %s", r, r.code(), stderr)
	}
	if stderr == "" || strings.Contains(stderr, "\n") {
		t.Errorf("%s: stderr should be one line, got %q", r, stderr)
	}
	for _, n := range names {
		if strings.Contains(stderr, n) {
			return
		}
	}
	t.Errorf("%s: stderr %q names none of %q", r, stderr, names)
}

// freePID returns a PID that no process has.
func freePID(t *testing.T) int {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	max, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	for pid := max - 1; pid > max/2; pid-- {
		if !exists(pid) {
			return pid
		}
	}
	t.Fatal("no free PID")
	return 0
}

// assertNothingNew fails if a child of this process appeared that was not
// in before: ctcr's leftovers are re-parented here when it exits.
func assertNothingNew(t *testing.T, before map[int]procStat, r *ctcrRun) {
	t.Helper()
	for pid, st := range childrenOf(os.Getpid()) {
		if _, ok := before[pid]; ok || pid == r.cmd.Process.Pid {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		t.Errorf("after the failed %s, process %d (state %c, %q) was left behind: %s",
			r, pid, st.state, strings.ReplaceAll(string(cmdline), "\x00", " "), describe(pid))
		unix.Kill(pid, unix.SIGKILL)
		reap(pid, 5*time.Second)
	}
}

// TestDumpFailures: a failed dump exits 1 naming the task or directory,
// and leaves the task running, neither stopped nor traced, and unharmed.
func TestDumpFailures(t *testing.T) {
	t.Run("dumping a PID that does not exist fails naming the PID", func(t *testing.T) {
		pid := freePID(t)
		r := runCtcr(t, 30*time.Second, "dump", "-t", strconv.Itoa(pid), "-D", filepath.Join(t.TempDir(), "img"))
		assertFailed(t, r, strconv.Itoa(pid))
	})

	// Nested UTS, IPC, network and mount namespaces are kept
	// (TestPlainNestedNamespaces); a nested cgroup namespace is not.
	t.Run("a task in another namespace than its tree's root is refused naming it and the namespace", func(t *testing.T) {
		needCtcr(t)
		cmd := exec.Command("sh", "-c", "unshare --cgroup sleep 100 & sleep 100")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Kill(-cmd.Process.Pid, unix.SIGKILL); cmd.Wait() })
		var child int
		for end := time.Now().Add(10 * time.Second); child == 0 && time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			for pid := range childrenOf(cmd.Process.Pid) {
				if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(b)) == "sleep" {
					var a, b unix.Stat_t
					if unix.Stat(fmt.Sprintf("/proc/%d/ns/cgroup", pid), &a) == nil && unix.Stat("/proc/self/ns/cgroup", &b) == nil && a.Ino != b.Ino {
						child = pid
					}
				}
			}
		}
		if child == 0 {
			t.Fatal("no child in its own cgroup namespace within 10 s")
		}
		r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(cmd.Process.Pid), "-D", filepath.Join(t.TempDir(), "img"))
		assertFailed(t, r, fmt.Sprintf("task %d is in another cgroup namespace", child))
		if err := assertRunnable(cmd.Process.Pid); err != nil {
			t.Errorf("after the refused dump: %v", err)
		}
	})

	// SysV shared memory of the host's IPC namespace is kept now
	// (TestHostSysV), and refused only when another process uses it.

	t.Run("an fd whose SIGIO owner is outside the tree is refused naming it", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "sigio", "outside")
		r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", filepath.Join(t.TempDir(), "img"))
		assertFailed(t, r, fmt.Sprintf("SIGIO owner, process %d, is outside the tree", os.Getpid()))
		w.checkPasses(30*time.Second, "sigio after the refused dump")
	})

	cases := []struct {
		name     string
		workload string
		args     []string
		// imgDir returns the image directory to dump into.
		imgDir func(t *testing.T, w *workload) string
	}{
		{
			name:     "dumping into a directory that cannot be created fails and leaves the task running",
			workload: "counter",
			imgDir: func(t *testing.T, w *workload) string {
				return filepath.Join(w.path("out"), "img") // out is a regular file
			},
		},
		{
			name:     "a dump that runs out of space fails and leaves the task running unharmed",
			workload: "bigmem",
			args:     []string{"64"},
			imgDir: func(t *testing.T, w *workload) string {
				mnt := t.TempDir()
				if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
					t.Skipf("cannot mount a small tmpfs: %v", err)
				}
				t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
				return filepath.Join(mnt, "img")
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			needCtcr(t)
			w := startWorkload(t, c.workload, c.args...)
			img := c.imgDir(t, w)
			r := runCtcr(t, 120*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img)
			w.logs = append(w.logs, r.errP)
			assertFailed(t, r, strconv.Itoa(w.pid), img)
			if err := assertRunnable(w.pid); err != nil {
				t.Fatalf("after the failed dump the task is %v", err)
			}
			w.checkPasses(60*time.Second, "the task that survived a failed dump")
		})
	}
}

// TestRestoreFailures: a failed restore exits 1 naming what failed and
// leaves no process behind.
func TestRestoreFailures(t *testing.T) {
	t.Run("restoring while the PID is still in use fails with in use and harms nobody", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "counter")
		img := filepath.Join(t.TempDir(), "img")
		d := runCtcr(t, 120*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img, "--leave-running")
		if d.code() != 0 {
			t.Fatalf("%s: exit status %d; stderr: %s", d, d.code(), d.stderr())
		}
		before := childrenOf(os.Getpid())
		r := runCtcr(t, 120*time.Second, "restore", "-D", img)
		assertFailed(t, r, "in use")
		if !strings.Contains(r.stderr(), strconv.Itoa(w.pid)) {
			t.Errorf("%s: stderr %q does not name PID %d", r, r.stderr(), w.pid)
		}
		assertNothingNew(t, before, r)
		if err := assertRunnable(w.pid); err != nil {
			t.Fatalf("the original task is %v", err)
		}
		w.checkPasses(30*time.Second, "the original task")
	})

	t.Run("restoring from a missing directory fails naming it", func(t *testing.T) {
		needCtcr(t)
		missing := filepath.Join(t.TempDir(), "no-such-images")
		before := childrenOf(os.Getpid())
		r := runCtcr(t, 30*time.Second, "restore", "-D", missing)
		assertFailed(t, r, missing)
		assertNothingNew(t, before, r)
	})

	damaged := []struct {
		name string
		// file is the image file to damage, given the task's PID.
		file func(pid int) string
		// damage changes the file's bytes.
		damage func(b []byte) []byte
		// names are the substrings of which the error must hold one.
		names func(pid int, file string) []string
	}{
		{
			name:   "restoring from a truncated core-PID.img fails naming the file",
			file:   func(pid int) string { return fmt.Sprintf("core-%d.img", pid) },
			damage: truncateHalf,
			names:  func(pid int, f string) []string { return []string{f} },
		},
		{
			name:   "restoring from a truncated pages-1.img fails naming the file",
			file:   func(int) string { return "pages-1.img" },
			damage: truncateHalf,
			names:  func(pid int, f string) []string { return []string{f} },
		},
		{
			name:   "restoring from a corrupted mm-PID.img fails naming the file or the task",
			file:   func(pid int) string { return fmt.Sprintf("mm-%d.img", pid) },
			damage: flipMiddle,
			names:  func(pid int, f string) []string { return []string{f, strconv.Itoa(pid)} },
		},
		{
			name:   "restoring from a corrupted inventory.img fails naming the file",
			file:   func(int) string { return "inventory.img" },
			damage: flipMiddle,
			names:  func(pid int, f string) []string { return []string{f} },
		},
	}
	for _, c := range damaged {
		t.Run(c.name, func(t *testing.T) {
			needCtcr(t)
			w := startWorkload(t, "counter")
			img := filepath.Join(t.TempDir(), "img")
			dump(t, w, img, false, 0)
			file := c.file(w.pid)
			p := filepath.Join(img, file)
			b, err := os.ReadFile(p)
			if err != nil {
				ents, _ := os.ReadDir(img)
				var names []string
				for _, e := range ents {
					names = append(names, e.Name())
				}
				t.Fatalf("the dump has no %s: %v (it holds %v)", file, err, names)
			}
			if err := os.WriteFile(p, c.damage(b), 0o644); err != nil {
				t.Fatal(err)
			}
			before := childrenOf(os.Getpid())
			r := startCtcr(t, "restore", "-D", img)
			w.logs = append(w.logs, r.errP)
			if err := r.wait(60 * time.Second); err != nil {
				t.Fatalf("restore from a damaged %s: %v%s", file, err, w.report())
			}
			assertFailed(t, r, c.names(w.pid, file)...)
			if exists(w.pid) {
				t.Errorf("after the failed restore PID %d exists: %s", w.pid, describe(w.pid))
			}
			assertNothingNew(t, before, r)
		})
	}
}

// TestRestoreEveryDamagedImage: each image of checkpoints rich in
// sockets (unix, TCP with a connection in repair, UDP, fds in flight)
// and ptys with bytes buffered, truncated to half or with its middle
// third inverted, either restores or makes restore fail with exit 1 and
// one line naming what failed: never a panic, never a hang, never a
// process left behind.
func TestRestoreEveryDamagedImage(t *testing.T) {
	needCtcr(t)
	damages := []struct {
		name string
		f    func([]byte) []byte
	}{{"truncated", truncateHalf}, {"inverted", flipMiddle}}
	for _, wl := range [][]string{{"inet", "conn"}, {"tty"}, {"scmrights"}} {
		t.Run(wl[0], func(t *testing.T) {
			w := startWorkload(t, wl[0], wl[1:]...)
			img := filepath.Join(t.TempDir(), "img")
			dump(t, w, img, false, 0)
			ents, err := os.ReadDir(img)
			if err != nil {
				t.Fatal(err)
			}
			codes := map[int]int{}
			defer func() { t.Logf("%d images, restores by exit status: %v", len(ents), codes) }()
			for _, e := range ents {
				p := filepath.Join(img, e.Name())
				good, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				for _, d := range damages {
					if err := os.WriteFile(p, d.f(good), 0o644); err != nil {
						t.Fatal(err)
					}
					before := childrenOf(os.Getpid())
					pidfile := filepath.Join(t.TempDir(), "pid")
					r := startCtcr(t, "restore", "-D", img, "-d", "--pidfile", pidfile)
					if err := r.wait(60 * time.Second); err != nil {
						t.Fatalf("restore with %s %s: %v", d.name, e.Name(), err)
					}
					stderr := strings.TrimSpace(r.stderr())
					codes[r.code()]++
					switch r.code() {
					case 0:
						// Nothing a reader can tell: the restored task runs
						// on whatever it got. End it.
						if b, err := os.ReadFile(pidfile); err == nil {
							if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
								unix.Kill(pid, unix.SIGKILL)
								reap(pid, 10*time.Second)
							}
						}
					case 1:
						if stderr == "" || strings.Contains(stderr, "\n") || strings.Contains(stderr, "panic") {
							t.Errorf("restore with %s %s: stderr should be one line, got %q", d.name, e.Name(), stderr)
						}
						if exists(w.pid) {
							t.Errorf("after the failed restore with %s %s, PID %d exists: %s", d.name, e.Name(), w.pid, describe(w.pid))
						}
					default:
						t.Errorf("restore with %s %s: exit status %d, want 0 or 1; stderr: %s", d.name, e.Name(), r.code(), stderr)
					}
					assertNothingNew(t, before, r)
				}
				if err := os.WriteFile(p, good, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func truncateHalf(b []byte) []byte { return b[:len(b)/2] }

// flipMiddle inverts the middle third of the file (at least one byte):
// varints and lengths there turn into nonsense a reader must refuse.
func flipMiddle(b []byte) []byte {
	out := append([]byte(nil), b...)
	n := max(len(out)/3, 1)
	start := (len(out) - n) / 2
	for i := start; i < start+n && i < len(out); i++ {
		out[i] ^= 0xff
	}
	return out
}

// TestUsage: bad usage exits 2 with a message on stderr.
func TestUsage(t *testing.T) {
	gone := strconv.Itoa(freePID(t))
	cases := []struct {
		name string
		args []string
	}{
		{"dump without -t is bad usage", []string{"dump", "-D", "/tmp/ctcr-usage-img"}},
		{"dump with a PID that is not a number is bad usage", []string{"dump", "-t", "abc", "-D", "/tmp/ctcr-usage-img"}},
		{"dump without -D is bad usage", []string{"dump", "-t", gone}},
		{"restore without -D is bad usage", []string{"restore"}},
		{"an unknown flag is bad usage", []string{"dump", "-t", gone, "-D", "/tmp/ctcr-usage-img", "--no-such-flag"}},
		{"an unknown command is bad usage", []string{"no-such-command"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := runCtcr(t, 30*time.Second, c.args...)
			if r.code() != 2 {
				t.Errorf("%s: exit status %d, want 2; stderr: %s", r, r.code(), r.stderr())
			}
			if strings.TrimSpace(r.stderr()) == "" {
				t.Errorf("%s: nothing on stderr", r)
			}
		})
	}
	os.RemoveAll("/tmp/ctcr-usage-img")
}

// TestRestoreOtherVdsoRefused: a checkpoint that ran with a vDSO that
// has a function this kernel's lacks (as on another kernel build; here
// vdso.json is edited), which no proxy can stand in for, is refused with
// exit 1, naming the function, and leaves no task; with its own vDSO it
// restores. (A vDSO whose functions are only elsewhere gets a proxy:
// TestVdsoProxy.)
func TestRestoreOtherVdsoRefused(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "counter")
	img := filepath.Join(t.TempDir(), "img")
	dump(t, w, img, false, 0)
	path := filepath.Join(img, "vdso.json")
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the dump wrote no vdso.json: %v", err)
	}
	var v struct {
		Size    uint64            `json:"size"`
		Symbols map[string]uint64 `json:"symbols"`
		SHA256  string            `json:"sha256"`
	}
	const fn = "__vdso_clock_gettime@LINUX_2.6"
	if err := json.Unmarshal(good, &v); err != nil || v.Size == 0 || v.Symbols[fn] == 0 {
		t.Fatalf("vdso.json %s (%v): want its size and where %s is", good, err, fn)
	}
	// Another kernel build: one more function, right after
	// clock_gettime.
	const extra = "__vdso_ctcr_test@LINUX_2.6"
	v.Symbols[extra] = v.Symbols[fn] + 16
	other, _ := json.Marshal(v)
	if err := os.WriteFile(path, other, 0o600); err != nil {
		t.Fatal(err)
	}
	// A checkpoint made there: its manifest holds vdso.json as it is.
	if err := images.WriteManifest(img); err != nil {
		t.Fatal(err)
	}
	if out := runCtcr(t, 10*time.Second, "show", img).stdout(); !strings.Contains(out, "vDSO: a restore here is refused") || !strings.Contains(out, extra) {
		t.Errorf("ctcr show does not say a restore here is refused for want of %s:\n%s", extra, out)
	}
	r := runCtcr(t, 60*time.Second, "restore", "-D", img)
	if r.code() != 1 || !strings.Contains(r.stderr(), "vDSO") || !strings.Contains(r.stderr(), extra) {
		t.Errorf("%s with another kernel's vDSO: exit %d, want 1 naming the vDSO and %s; stderr: %s", r, r.code(), extra, r.stderr())
	}
	if exists(w.pid) {
		t.Errorf("task %d exists after the refused restore", w.pid)
	}
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := images.WriteManifest(img); err != nil {
		t.Fatal(err)
	}
	restoreDetached(t, w, img, scenario{}, nil)
}

// TestAmbientCapabilities: a task with ambient capabilities (which
// CRIU's creds_entry cannot hold: caps.json does) gets them back, with
// its inheritable and permitted sets.
func TestAmbientCapabilities(t *testing.T) {
	needCtcr(t)
	cmd := exec.Command("/bin/sleep", "100")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, AmbientCaps: []uintptr{unix.CAP_NET_BIND_SERVICE, unix.CAP_NET_RAW}}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start a task with ambient capabilities: %v", err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL); reap(pid, 5*time.Second) })
	caps := func() map[string]string {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.HasPrefix(k, "Cap") {
				out[k] = strings.TrimSpace(v)
			}
		}
		return out
	}
	before := caps()
	if before["CapAmb"] != fmt.Sprintf("%016x", 1<<unix.CAP_NET_BIND_SERVICE|1<<unix.CAP_NET_RAW) {
		t.Fatalf("the task's CapAmb is %s before the dump", before["CapAmb"])
	}
	img := filepath.Join(t.TempDir(), "img")
	if r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(pid), "-D", img); r.code() != 0 {
		t.Fatalf("%s: exit %d: %s", r, r.code(), r.stderr())
	}
	cmd.Wait()
	if r := runCtcr(t, 60*time.Second, "restore", "-D", img, "-d"); r.code() != 0 {
		t.Fatalf("%s: exit %d: %s", r, r.code(), r.stderr())
	}
	if after := caps(); !maps.Equal(after, before) {
		t.Errorf("capabilities after restore %v, before the dump %v", after, before)
	}
}
