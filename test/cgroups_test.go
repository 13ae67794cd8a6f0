package test

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	cgimg "github.com/checkpoint-restore/go-criu/v7/crit/images/cgroup"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/images"
)

// The cgroups of a plain process tree (--manage-cgroups): the cgtree
// workload's process, child and second thread move themselves into
// fresh cgroups the test makes (v1 memory with limits and a sub-cgroup
// for the child, v1 pids with pids.max, v1 cpu with a sub-cgroup for the
// thread, the named v1 hierarchy name=systemd, and v2 with
// cgroup.max.descendants and a threaded sub-cgroup for the thread). v2
// here has no controller of its own (hybrid: pids and memory are v1's),
// so its properties are the core ones.

// cgHier is one hierarchy the test uses: key as /proc/PID/cgroup names
// it ("" for v2), its mount.
type cgHier struct{ key, mnt string }

var cgHiers = []cgHier{
	{"memory", "/sys/fs/cgroup/memory"},
	{"pids", "/sys/fs/cgroup/pids"},
	{"cpu", "/sys/fs/cgroup/cpu"},
	{"name=systemd", "/sys/fs/cgroup/systemd"},
	{"", "/sys/fs/cgroup/unified"},
}

var cgSeq atomic.Int32

// cgFixture is one set of fresh cgroups: in each hierarchy NAME below the
// test's own cgroup (so a memory limit the test runs under still holds),
// and the sub-cgroups kid (memory) and thr (cpu, v2).
type cgFixture struct {
	t    *testing.T
	name string
	own  map[string]string // the test's (and so ctcr's) cgroups
}

// procCgroups reads /proc/PID/task/TID/cgroup: path by key ("" for v2).
func procCgroups(pid, tid int) (map[string]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/cgroup", pid, tid))
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) == 3 {
			m[f[1]] = f[2]
		}
	}
	return m, nil
}

func needCgroups(t *testing.T) {
	t.Helper()
	needCtcr(t)
	for _, h := range cgHiers {
		var st unix.Statfs_t
		if err := unix.Statfs(h.mnt, &st); err != nil || (st.Type != unix.CGROUP_SUPER_MAGIC && st.Type != unix.CGROUP2_SUPER_MAGIC) {
			t.Skipf("needs a hybrid cgroup layout: %s is not a cgroup mount", h.mnt)
		}
	}
}

func newCgFixture(t *testing.T) *cgFixture {
	t.Helper()
	own, err := procCgroups(os.Getpid(), os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	f := &cgFixture{t: t, name: fmt.Sprintf("ctcr-cgtest-%d-%d", os.Getpid(), cgSeq.Add(1)), own: own}
	t.Cleanup(func() { f.removeAll(f.name, f.name+"-moved") })
	return f
}

// rel is the fixture's cgroup (plus sub) in hierarchy key, as
// /proc/PID/cgroup shows it.
func (f *cgFixture) rel(key, name string, sub ...string) string {
	return path.Join(append([]string{f.own[key], name}, sub...)...)
}

func (f *cgFixture) dir(key, name string, sub ...string) string {
	for _, h := range cgHiers {
		if h.key == key {
			return filepath.Join(h.mnt, f.rel(key, name, sub...))
		}
	}
	f.t.Fatalf("no hierarchy %q", key)
	return ""
}

func (f *cgFixture) write(dir, file, value string) {
	f.t.Helper()
	if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0); err != nil {
		f.t.Fatal(err)
	}
}

func (f *cgFixture) read(dir, file string) string {
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return strings.TrimSpace(string(b))
}

// make creates the fixture's cgroups with their limits.
func (f *cgFixture) make() {
	f.t.Helper()
	for _, d := range []string{f.dir("memory", f.name, "kid"), f.dir("pids", f.name), f.dir("cpu", f.name, "thr"), f.dir("name=systemd", f.name), f.dir("", f.name, "thr")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			f.t.Fatal(err)
		}
	}
	f.write(f.dir("memory", f.name), "memory.limit_in_bytes", "268435456")
	f.write(f.dir("memory", f.name, "kid"), "memory.limit_in_bytes", "134217728")
	f.write(f.dir("pids", f.name), "pids.max", "500")
	f.write(f.dir("cpu", f.name), "cpu.shares", "2048")
	f.write(f.dir("cpu", f.name, "thr"), "cpu.shares", "512")
	f.write(f.dir("", f.name), "cgroup.max.descendants", "7")
	f.write(f.dir("", f.name, "thr"), "cgroup.type", "threaded")
}

// args are cgtree's: where each of its tasks moves itself.
func (f *cgFixture) args() []string {
	main := []string{f.dir("memory", f.name), f.dir("pids", f.name), f.dir("cpu", f.name), f.dir("name=systemd", f.name), f.dir("", f.name)}
	return []string{
		"main=" + strings.Join(main, ","),
		"child=" + f.dir("memory", f.name, "kid"),
		"thread=" + f.dir("cpu", f.name, "thr") + "," + f.dir("", f.name, "thr"),
	}
}

// removeAll removes the cgroups named name (and below) in every
// hierarchy, children first, waiting for tasks that are exiting.
func (f *cgFixture) removeAll(names ...string) {
	for _, name := range names {
		for _, h := range cgHiers {
			top := f.dir(h.key, name)
			var dirs []string
			filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
			for i := len(dirs) - 1; i >= 0; i-- {
				deadline := time.Now().Add(5 * time.Second)
				for {
					err := unix.Rmdir(dirs[i])
					if err == nil || errors.Is(err, unix.ENOENT) {
						break
					}
					if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
						f.t.Errorf("cgroup %s left behind: %v", dirs[i], err)
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}
	}
}

// cgRun is the workload placed in the fixture and its ids.
type cgRun struct {
	w          *workload
	child, tid int
	img        string
	f          *cgFixture
	expect     map[int]map[string]string // tid -> hierarchy -> path
}

// startPlaced makes the cgroups, starts cgtree in them, and checks that
// its tasks are where the test expects before anything is dumped.
func startPlaced(t *testing.T, extra ...string) *cgRun {
	t.Helper()
	f := newCgFixture(t)
	f.make()
	w := startWorkload(t, "cgtree", append(f.args(), extra...)...)
	r := &cgRun{w: w, f: f, img: filepath.Join(t.TempDir(), "img")}
	var err error
	if r.child, err = strconv.Atoi(strings.TrimSpace(wlValue(w, "child"))); err != nil {
		t.Fatalf("ready: child: %v", err)
	}
	if r.tid, err = strconv.Atoi(strings.TrimSpace(wlValue(w, "tid"))); err != nil {
		t.Fatalf("ready: tid: %v", err)
	}
	r.expect = r.placement(f.name)
	r.checkPlaced(w.pid, "before the dump")
	return r
}

// placement is where each task is when the fixture's cgroups are named
// name (another one after --cgroup-root).
func (r *cgRun) placement(name string) map[int]map[string]string {
	f := r.f
	main := map[string]string{}
	for _, h := range cgHiers {
		main[h.key] = f.rel(h.key, name)
	}
	thread, child := map[string]string{}, map[string]string{}
	for k, v := range main {
		thread[k], child[k] = v, v
	}
	thread["cpu"], thread[""] = f.rel("cpu", name, "thr"), f.rel("", name, "thr")
	child["memory"] = f.rel("memory", name, "kid")
	return map[int]map[string]string{r.w.pid: main, r.tid: thread, r.child: child}
}

// checkPlaced compares /proc/PID/task/TID/cgroup of each task with
// r.expect; pid is the process the thread r.tid belongs to.
func (r *cgRun) checkPlaced(pid int, when string) {
	t := r.w.t
	t.Helper()
	for id, want := range r.expect {
		p := pid
		if id == r.child {
			p = r.child
		}
		got, err := procCgroups(p, id)
		if err != nil {
			t.Errorf("%s: cgroups of task %d: %v", when, id, err)
			continue
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: task %d is in %q cgroup %s, want %s", when, id, k, got[k], v)
			}
		}
	}
}

// wlValue reads "key VALUE" from the workload's ready file.
func wlValue(w *workload, key string) string {
	for _, l := range strings.Split(w.read("ready"), "\n") {
		if v, ok := strings.CutPrefix(l, key+" "); ok {
			return v
		}
	}
	return ""
}

// dumpKill dumps the workload (killing it) and reaps its child.
func (r *cgRun) dumpKill() {
	t := r.w.t
	t.Helper()
	dump(t, r.w, r.img, false, 0)
	if _, _, err := reap(r.child, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// restore runs ctcr restore -d with extra flags and wants exit status 0.
func (r *cgRun) restore(extra ...string) {
	t := r.w.t
	t.Helper()
	args := append([]string{"restore", "-D", r.img, "-d", "-v"}, extra...)
	c := runCtcr(t, 120*time.Second, args...)
	r.w.logs = append(r.w.logs, c.errP)
	if c.code() != 0 {
		t.Fatalf("%s: exit status %d, want 0; stderr: %s%s", c, c.code(), c.stderr(), r.w.report())
	}
}

// checkPasses lets the restored tree check itself and reaps it.
func (r *cgRun) checkPasses() {
	t := r.w.t
	t.Helper()
	r.w.requestCheck()
	ws, reaped, err := reap(r.w.pid, 60*time.Second)
	if err != nil {
		t.Fatalf("%v%s", err, r.w.report())
	}
	if reaped && (!ws.Exited() || ws.ExitStatus() != 0) {
		t.Errorf("the restored task ended with %s, want exit status 0%s", exitText(ws), r.w.report())
	}
	r.w.assertPassed()
}

// checkLimits compares the fixture's property files (named name) with
// the values make wrote.
func (r *cgRun) checkLimits(name string) {
	t := r.w.t
	t.Helper()
	f := r.f
	for _, c := range []struct{ dir, file, want string }{
		{f.dir("memory", name), "memory.limit_in_bytes", "268435456"},
		{f.dir("memory", name, "kid"), "memory.limit_in_bytes", "134217728"},
		{f.dir("pids", name), "pids.max", "500"},
		{f.dir("cpu", name), "cpu.shares", "2048"},
		{f.dir("cpu", name, "thr"), "cpu.shares", "512"},
		{f.dir("", name), "cgroup.max.descendants", "7"},
		{f.dir("", name, "thr"), "cgroup.type", "threaded"},
	} {
		if got := f.read(c.dir, c.file); got != c.want {
			t.Errorf("after restore %s/%s = %s, want %s", c.dir, c.file, got, c.want)
		}
	}
}

func TestCgroupsOfPlainTree(t *testing.T) {
	needCgroups(t)

	t.Run("tasks and threads go back into their cgroups, made again with their limits", func(t *testing.T) {
		r := startPlaced(t)
		r.dumpKill()
		decodeWithCrit(t, r.img)
		r.f.removeAll(r.f.name)
		if t.Failed() {
			return
		}
		r.restore()
		r.checkPlaced(r.w.pid, "after restore")
		r.checkLimits(r.f.name)
		r.checkPasses()
	})

	t.Run("in a process of many threads the one thread elsewhere is found and put back", func(t *testing.T) {
		// 80 more threads: the dump checks them against their cgroups'
		// thread lists instead of reading each one's cgroup file.
		r := startPlaced(t, "idle=80")
		r.dumpKill()
		r.f.removeAll(r.f.name)
		r.restore()
		r.checkPlaced(r.w.pid, "after restore")
		r.checkPasses()
	})

	t.Run("soft mode moves tasks into cgroups that still exist and keeps their settings", func(t *testing.T) {
		r := startPlaced(t)
		r.dumpKill()
		r.f.write(r.f.dir("pids", r.f.name), "pids.max", "600")
		r.restore("--manage-cgroups=soft")
		r.checkPlaced(r.w.pid, "after restore")
		if got := r.f.read(r.f.dir("pids", r.f.name), "pids.max"); got != "600" {
			t.Errorf("soft mode wrote pids.max of an existing cgroup: %s, want 600 (as set after the dump)", got)
		}
		r.checkPasses()
	})

	t.Run("full mode writes the saved limits into existing cgroups", func(t *testing.T) {
		r := startPlaced(t)
		r.dumpKill()
		r.f.write(r.f.dir("pids", r.f.name), "pids.max", "600")
		r.restore("--manage-cgroups=full")
		r.checkPlaced(r.w.pid, "after restore")
		r.checkLimits(r.f.name)
		r.checkPasses()
	})

	t.Run("props mode writes the saved limits into the cgroups that exist", func(t *testing.T) {
		r := startPlaced(t)
		r.dumpKill()
		r.f.write(r.f.dir("pids", r.f.name), "pids.max", "600")
		r.f.write(r.f.dir("cpu", r.f.name, "thr"), "cpu.shares", "1024")
		r.restore("--manage-cgroups=props")
		r.checkPlaced(r.w.pid, "after restore")
		r.checkLimits(r.f.name)
		r.checkPasses()
	})

	t.Run("strict mode refuses a cgroup that exists and leaves nothing", func(t *testing.T) {
		r := startPlaced(t)
		r.dumpKill()
		c := runCtcr(t, 60*time.Second, "restore", "-D", r.img, "-d", "--manage-cgroups=strict")
		if c.code() != 1 || !strings.Contains(c.stderr(), r.f.name) || !strings.Contains(c.stderr(), "strict") {
			t.Errorf("%s: exit status %d, stderr %q; want 1 and a line naming the cgroup %s and strict", c, c.code(), c.stderr(), r.f.name)
		}
		if exists(r.w.pid) {
			t.Errorf("a refused restore left task %d: %s", r.w.pid, describe(r.w.pid))
		}
		// The same checkpoint restores once the cgroups are gone.
		r.f.removeAll(r.f.name)
		r.restore("--manage-cgroups=strict")
		r.checkPlaced(r.w.pid, "after restore")
		r.checkLimits(r.f.name)
		r.checkPasses()
	})

	t.Run("none mode refuses a missing cgroup and makes none", func(t *testing.T) {
		r := startPlaced(t)
		r.dumpKill()
		r.f.removeAll(r.f.name)
		c := runCtcr(t, 60*time.Second, "restore", "-D", r.img, "-d", "--manage-cgroups=none")
		if c.code() != 1 || !strings.Contains(c.stderr(), r.f.name) || !strings.Contains(c.stderr(), "does not exist") {
			t.Errorf("%s: exit status %d, stderr %q; want 1 and a line naming the missing cgroup %s", c, c.code(), c.stderr(), r.f.name)
		}
		for _, h := range cgHiers {
			if _, err := os.Stat(r.f.dir(h.key, r.f.name)); err == nil {
				t.Errorf("--manage-cgroups=none made %s", r.f.dir(h.key, r.f.name))
			}
		}
		if exists(r.w.pid) {
			t.Errorf("a refused restore left task %d: %s", r.w.pid, describe(r.w.pid))
		}
	})

	t.Run("ignore mode leaves every task in ctcr's cgroups", func(t *testing.T) {
		r := startPlaced(t)
		r.dumpKill()
		r.f.removeAll(r.f.name)
		r.restore("--manage-cgroups=ignore")
		for id := range r.expect {
			own := map[string]string{}
			for _, h := range cgHiers {
				own[h.key] = r.f.own[h.key]
			}
			r.expect[id] = own
		}
		r.checkPlaced(r.w.pid, "after restore")
		for _, h := range cgHiers {
			if _, err := os.Stat(r.f.dir(h.key, r.f.name)); err == nil {
				t.Errorf("--manage-cgroups=ignore made %s", r.f.dir(h.key, r.f.name))
			}
		}
		// The tasks find themselves elsewhere: the workload says so.
		r.w.requestCheck()
		if _, _, err := reap(r.w.pid, 60*time.Second); err != nil {
			t.Fatal(err)
		}
		if res := r.w.read("result"); !strings.Contains(res, "cgroups were") {
			t.Errorf("cgtree restored outside its cgroups reported %q, want a FAIL naming its cgroups", res)
		}
	})

	t.Run("--cgroup-root puts the tree's cgroups under another one", func(t *testing.T) {
		r := startPlaced(t)
		r.dumpKill()
		r.f.removeAll(r.f.name)
		moved := r.f.name + "-moved"
		var flags []string
		for _, h := range cgHiers {
			k := h.key
			if k == "" {
				k = "unified"
			}
			flags = append(flags, "--cgroup-root", k+":"+r.f.rel(h.key, moved))
		}
		r.restore(flags...)
		r.expect = r.placement(moved)
		r.checkPlaced(r.w.pid, "after restore")
		r.checkLimits(moved)
		for _, h := range cgHiers {
			if _, err := os.Stat(r.f.dir(h.key, r.f.name)); err == nil {
				t.Errorf("restore with --cgroup-root made the old %s", r.f.dir(h.key, r.f.name))
			}
		}
		// cgtree checks its cgroups read as they did: they do not.
		r.w.requestCheck()
		if _, _, err := reap(r.w.pid, 60*time.Second); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("an image naming a cgroup with .. is refused before anything is made", func(t *testing.T) {
		r := startPlaced(t)
		r.dumpKill()
		r.f.removeAll(r.f.name)
		p := filepath.Join(r.img, "cgroup.img")
		e := &cgimg.CgroupEntry{}
		if err := images.ReadOne(p, images.Cgroup, e); err != nil {
			t.Fatal(err)
		}
		bad := false
		for _, s := range e.GetSets() {
			for _, c := range s.GetCtls() {
				if c.GetName() == "pids" && strings.HasSuffix(c.GetPath(), r.f.name) {
					*c.Path = c.GetPath() + "/../../escape"
					bad = true
				}
			}
		}
		if !bad {
			t.Fatalf("cgroup.img names no pids cgroup %s", r.f.name)
		}
		if err := images.ReplaceFile(p, images.Cgroup, e); err != nil {
			t.Fatal(err)
		}
		if err := images.UpdateManifest(r.img, "cgroup.img"); err != nil {
			t.Fatal(err)
		}
		c := runCtcr(t, 60*time.Second, "restore", "-D", r.img, "-d")
		if c.code() != 1 || !strings.Contains(c.stderr(), "cgroup.img") || !strings.Contains(c.stderr(), "escape") {
			t.Errorf("%s: exit status %d, stderr %q; want 1 and a line naming cgroup.img and the path", c, c.code(), c.stderr())
		}
		for _, h := range cgHiers {
			if _, err := os.Stat(r.f.dir(h.key, r.f.name)); err == nil {
				t.Errorf("a refused restore made %s", r.f.dir(h.key, r.f.name))
			}
		}
		if exists(r.w.pid) {
			t.Errorf("a refused restore left task %d: %s", r.w.pid, describe(r.w.pid))
		}
	})

	t.Run("a restore that fails once tasks are in their cgroups removes the cgroups it made", func(t *testing.T) {
		r := startPlaced(t)
		r.dumpKill()
		r.f.removeAll(r.f.name)
		// The workload's stdout, which its fd 1 names, is gone: the
		// restore fails at the files stage, after every task was made
		// and moved into its cgroups.
		if err := os.Rename(r.w.path("out"), r.w.path("out.moved")); err != nil {
			t.Fatal(err)
		}
		c := runCtcr(t, 60*time.Second, "restore", "-D", r.img, "-d", "-v")
		if c.code() != 1 {
			t.Fatalf("%s: exit status %d, want 1; stderr: %s", c, c.code(), c.stderr())
		}
		if !strings.Contains(c.stderr(), "tasks created") {
			t.Errorf("the restore failed before it made tasks, so this checks nothing: %s", c.stderr())
		}
		if exists(r.w.pid) {
			t.Errorf("a failed restore left task %d: %s", r.w.pid, describe(r.w.pid))
		}
		for _, h := range cgHiers {
			if _, err := os.Stat(r.f.dir(h.key, r.f.name)); err == nil {
				t.Errorf("a failed restore left the cgroup %s it made", r.f.dir(h.key, r.f.name))
			}
		}
	})

	t.Run("a tree in ctcr's own cgroups writes no cgroup image", func(t *testing.T) {
		w := startWorkload(t, "cgtree")
		child, _ := strconv.Atoi(strings.TrimSpace(wlValue(w, "child")))
		img := filepath.Join(t.TempDir(), "img")
		dump(t, w, img, false, 0)
		reap(child, 10*time.Second)
		if _, err := os.Stat(filepath.Join(img, "cgroup.img")); err == nil {
			t.Errorf("the dump of a tree in ctcr's own cgroups wrote cgroup.img")
		}
		r := &cgRun{w: w, img: img, child: child}
		r.restore()
		r.checkPasses()
	})
}
