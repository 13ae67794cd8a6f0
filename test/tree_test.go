package test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// treeScenario dumps a whole process tree, or a process with many threads,
// restores it in the foreground and lets it check itself.
type treeScenario struct {
	name     string
	workload string
	args     []string
	// prepare builds or registers a workload that is not a C program.
	prepare func(t *testing.T)
	// tasks is what dump --json and restore --json must report: processes,
	// zombies included, threads not.
	tasks int
	// beforeDump checks the running workload from outside and returns the
	// PIDs of every process of the tree, the root first.
	beforeDump func(t *testing.T, w *workload) []int
	// afterRestore checks the restored tree from outside before it is told
	// to check itself; ctcrPid is `ctcr restore`, the root's new parent.
	afterRestore func(t *testing.T, w *workload, ctcrPid int)
}

var treeScenarios = []treeScenario{
	{
		name:         "a tree of 100 processes keeps its PIDs, parents, sessions, groups, zombies and orphans",
		workload:     "tree",
		args:         []string{"full"},
		tasks:        100,
		beforeDump:   checkTreeShape,
		afterRestore: checkTreeIDs,
	},
	{
		name:         "a group whose leader exited keeps its id, its members re-parented to the subreaper root",
		workload:     "tree",
		args:         []string{"dead-group"},
		tasks:        3,
		beforeDump:   checkTreeShape,
		afterRestore: checkTreeIDs,
	},
	{
		name:         "a session whose leader exited keeps its id and its groups, its members re-parented to the subreaper root",
		workload:     "tree",
		args:         []string{"dead-session"},
		tasks:        4,
		beforeDump:   checkTreeShape,
		afterRestore: checkTreeIDs,
	},
	{
		name:         "64 counting threads keep their TIDs, names, masks, alternate stacks and counts",
		workload:     "threads",
		args:         []string{"64"},
		tasks:        1,
		beforeDump:   checkThreads,
		afterRestore: checkThreadsRestored,
	},
	{
		name:       "a Go program hashing in goroutines keeps its chains right and goes on",
		workload:   "gocompute",
		prepare:    buildGoWorkload,
		tasks:      1,
		beforeDump: checkGoRuntime,
	},
	{
		name:     "a Python program counting in threads goes on counting",
		workload: "pythreads",
		prepare:  registerPython,
		tasks:    1,
	},
}

// TestDumpRestoreTrees dumps each multi-task workload (killing it),
// restores it with `ctcr restore --json`, checks it from /proc, then lets
// it check itself; ctcr must exit 0, the root's status.
func TestDumpRestoreTrees(t *testing.T) {
	for _, sc := range treeScenarios {
		t.Run(sc.name, func(t *testing.T) { runTreeScenario(t, sc, nil) })
	}
}

// runTreeScenario runs sc; dumpArgs, if set, runs just before the dump
// into img and returns extra arguments for it; restoreArgs are extra
// arguments of the restore.
func runTreeScenario(t *testing.T, sc treeScenario, dumpArgs func(t *testing.T, w *workload, img string) []string, restoreArgs ...string) {
	needCtcr(t)
	if sc.prepare != nil {
		sc.prepare(t)
	}
	w := startWorkload(t, sc.workload, sc.args...)
	t.Cleanup(func() { killByDir(t, w.dir) })
	pids := []int{w.pid}
	if sc.beforeDump != nil {
		pids = sc.beforeDump(t, w)
	}
	if t.Failed() {
		return
	}
	img := filepath.Join(t.TempDir(), "img")
	var extra []string
	if dumpArgs != nil {
		extra = dumpArgs(t, w, img)
	}
	dumpTree(t, w, img, sc.tasks, pids, extra...)
	r := startCtcr(t, append([]string{"restore", "-D", img, "--json"}, restoreArgs...)...)
	w.logs = append(w.logs, r.errP)
	rep := waitRestoreJSON(t, r, w)
	if rep.PID != w.pid || rep.Tasks != sc.tasks {
		t.Errorf("restore --json: pid %d tasks %d, want %d %d", rep.PID, rep.Tasks, w.pid, sc.tasks)
	}
	t.Logf("restore: %d tasks in %.3f s (%.2f ms per task)", rep.Tasks, rep.RestoreSeconds, 1000*rep.RestoreSeconds/float64(max(rep.Tasks, 1)))
	if sc.afterRestore != nil {
		sc.afterRestore(t, w, r.cmd.Process.Pid)
	}
	w.requestCheck()
	if err := r.wait(120 * time.Second); err != nil {
		t.Fatalf("%v%s", err, w.report())
	}
	if r.code() != 0 {
		t.Errorf("%s: exit status %d, want 0 (the restored root's own status)%s", r, r.code(), w.report())
		return
	}
	w.assertPassed()
}

// TestTreeWorkloadsCheckThemselves runs each workload of
// TestDumpRestoreTrees without ctcr: told to check right away, it must pass.
func TestTreeWorkloadsCheckThemselves(t *testing.T) {
	for _, sc := range treeScenarios {
		t.Run(strings.Join(append([]string{sc.workload}, sc.args...), " ")+" passes when it is never dumped", func(t *testing.T) {
			if sc.prepare != nil {
				sc.prepare(t)
			}
			w := startWorkload(t, sc.workload, sc.args...)
			t.Cleanup(func() { killByDir(t, w.dir) })
			if sc.beforeDump != nil {
				sc.beforeDump(t, w)
			}
			w.requestCheck()
			ps, err := w.waitOriginal(60 * time.Second)
			if err != nil {
				t.Fatalf("%v%s", err, w.report())
			}
			if ps.ExitCode() != 0 {
				t.Errorf("%s: %v, want exit status 0%s", w.name, ps, w.report())
			}
			w.assertPassed()
		})
	}
}

// dumpTree dumps the tree rooted at w with --json (and the extra
// arguments), checks the task count, and reaps every process of it: the
// root here, the others wherever they went (orphans come to this
// subreaper) so that their PIDs are free.
func dumpTree(t *testing.T, w *workload, img string, tasks int, pids []int, extra ...string) {
	t.Helper()
	logFile := filepath.Join(t.TempDir(), "dump.log")
	w.logs = append(w.logs, logFile)
	r := runCtcr(t, 120*time.Second, append([]string{"dump", "-t", strconv.Itoa(w.pid), "-D", img, "--json", "-v", "--log-file", logFile}, extra...)...)
	w.logs = append(w.logs, r.errP)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d, want 0; stderr: %s%s", r, r.code(), r.stderr(), w.report())
	}
	var rep dumpReport
	if err := json.Unmarshal([]byte(r.stdout()), &rep); err != nil {
		t.Errorf("%s printed %q: %v", r, r.stdout(), err)
	} else {
		if rep.PID != w.pid || rep.Tasks != tasks {
			t.Errorf("dump --json: pid %d tasks %d, want %d %d", rep.PID, rep.Tasks, w.pid, tasks)
		}
		t.Logf("dump: %d tasks, %d bytes of pages, frozen %.3f s, dump %.3f s (%.2f ms per task)",
			rep.Tasks, rep.PagesBytes, rep.FrozenSeconds, rep.DumpSeconds, 1000*rep.DumpSeconds/float64(max(rep.Tasks, 1)))
	}
	ps, err := w.waitOriginal(10 * time.Second)
	if err != nil {
		t.Fatalf("after a dump without --leave-running: %v", err)
	}
	if ps.Exited() {
		t.Errorf("the dumped root exited by itself (%v) instead of being killed by ctcr", ps)
	}
	for _, pid := range pids[1:] {
		if _, _, err := reap(pid, 10*time.Second); err != nil {
			t.Fatalf("after the dump killed the tree: %v", err)
		}
	}
}

// waitRestoreJSON waits for the report restore --json prints once the
// tree runs.
func waitRestoreJSON(t *testing.T, r *ctcrRun, w *workload) restoreReport {
	t.Helper()
	deadline := time.Now().Add(120 * time.Second)
	for !strings.Contains(r.stdout(), "}") && !r.exited() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !strings.Contains(r.stdout(), "}") {
		r.wait(time.Second)
		t.Fatalf("%s printed no JSON report (exited: %v, status %v); stderr: %s%s", r, r.exited(), r.status, r.stderr(), w.report())
	}
	var rep restoreReport
	line, _, _ := strings.Cut(strings.TrimSpace(r.stdout()), "\n")
	if err := json.Unmarshal([]byte(line), &rep); err != nil {
		t.Fatalf("restore --json printed %q: %v", r.stdout(), err)
	}
	return rep
}

// killByDir kills every process whose command line names dir (forked
// children keep their parent's) and waits for them to go.
func killByDir(t *testing.T, dir string) {
	for round := 0; round < 3; round++ {
		var pids []int
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if strings.Contains(string(cmdline), dir) {
				pids = append(pids, pid)
			}
		}
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
		for _, pid := range pids {
			if _, _, err := reap(pid, 10*time.Second); err != nil {
				t.Logf("cleanup: %v", err)
			}
		}
	}
}

// taskIDs is a task's place in the tree, from /proc/PID/stat.
type taskIDs struct {
	state           byte
	ppid, pgid, sid int
}

func readTaskIDs(pid int) (taskIDs, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return taskIDs{}, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	var ids taskIDs
	if i < 0 {
		return ids, fmt.Errorf("/proc/%d/stat: no ')' in %q", pid, s)
	}
	if _, err := fmt.Sscanf(s[i+2:], "%c %d %d %d", &ids.state, &ids.ppid, &ids.pgid, &ids.sid); err != nil {
		return ids, fmt.Errorf("/proc/%d/stat: %q: %v", pid, s, err)
	}
	return ids, nil
}

// sameIDs compares parent, group, session and being a zombie.
func sameIDs(a, b taskIDs) bool {
	return a.ppid == b.ppid && a.pgid == b.pgid && a.sid == b.sid && (a.state == 'Z') == (b.state == 'Z')
}

// treeRecord is what the tree workload wrote to DIR/ready.
type treeRecord struct {
	root   int
	want   int             // tasks the tree should have
	tasks  map[int]taskIDs // by PID
	order  []int           // PIDs as listed, the root first
	zombie map[int]string  // PID -> "exit 42" / "signal 12"
	dead   map[string][]int
}

func readTreeRecord(t *testing.T, w *workload) treeRecord {
	t.Helper()
	rec := treeRecord{tasks: map[int]taskIDs{}, zombie: map[int]string{}, dead: map[string][]int{}}
	for _, line := range strings.Split(w.read("ready"), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		n := func(i int) int {
			v, err := strconv.Atoi(f[i])
			if err != nil {
				t.Fatalf("ready: %q: %v", line, err)
			}
			return v
		}
		switch {
		case f[0] == "root":
			rec.root = n(1)
		case f[0] == "tasks":
			rec.want = n(1)
		case f[0] == "task" && len(f) == 6:
			pid := n(1)
			rec.tasks[pid] = taskIDs{state: f[5][0], ppid: n(2), pgid: n(3), sid: n(4)}
			rec.order = append(rec.order, pid)
		case f[0] == "zombie" && len(f) == 4:
			rec.zombie[n(1)] = f[2] + " " + f[3]
		case strings.HasPrefix(f[0], "dead-"):
			rec.dead[f[0]] = append(rec.dead[f[0]], n(1))
		}
	}
	return rec
}

// checkTreeShape makes sure the tree workload built what it claims: its
// tasks as /proc shows them, and in the full tree 100 tasks, several
// sessions and groups, two zombies, orphans re-parented to the root, and a
// session and a group whose leaders are gone.
func checkTreeShape(t *testing.T, w *workload) []int {
	t.Helper()
	rec := readTreeRecord(t, w)
	if rec.root != w.pid || len(rec.order) != rec.want || rec.order[0] != w.pid {
		t.Fatalf("ready: root %d with %d tasks, want root %d first of %d:\n%s", rec.root, len(rec.order), w.pid, rec.want, w.read("ready"))
	}
	sessions, groups := map[int]bool{}, map[int]bool{}
	orphans := 0
	for _, pid := range rec.order {
		ids := rec.tasks[pid]
		sessions[ids.sid], groups[ids.pgid] = true, true
		if ids.ppid == rec.root && (slices.Contains(rec.dead["dead-session-leader"], ids.sid) || slices.Contains(rec.dead["dead-group-leader"], ids.pgid)) {
			orphans++ // a child of a dead leader, re-parented to the root
		}
		if got, err := readTaskIDs(pid); err != nil || !sameIDs(got, ids) {
			t.Errorf("task %d: /proc says %+v (%v), ready says %+v", pid, got, err, ids)
		}
	}
	for pid, what := range rec.zombie {
		if rec.tasks[pid].state != 'Z' {
			t.Errorf("zombie %d (%s) is in state %c", pid, what, rec.tasks[pid].state)
		}
	}
	for kind, pids := range rec.dead {
		for _, pid := range pids {
			if _, listed := rec.tasks[pid]; listed || exists(pid) {
				t.Errorf("%s %d still exists", kind, pid)
			}
			used := false
			for _, ids := range rec.tasks {
				used = used || (kind == "dead-session-leader" && ids.sid == pid) || (kind == "dead-group-leader" && ids.pgid == pid)
			}
			if kind != "dead-parent" && !used {
				t.Errorf("%s %d: no task has that id", kind, pid)
			}
		}
	}
	plain := len(sessions) < 3 || len(groups) < 10 || len(rec.zombie) != 2 || orphans < 18 ||
		len(rec.dead["dead-session-leader"]) != 1 || len(rec.dead["dead-group-leader"]) < 2
	if len(rec.order) == 100 && plain {
		t.Errorf("the tree is too plain: %d sessions, %d groups, %d zombies, %d orphans, dead leaders %v", len(sessions), len(groups), len(rec.zombie), orphans, rec.dead)
	}
	t.Logf("tree: %d tasks, %d sessions, %d groups, %d zombies, %d orphans, dead leaders %v",
		len(rec.order), len(sessions), len(groups), len(rec.zombie), orphans, rec.dead)
	return rec.order
}

// checkTreeIDs checks every restored task from /proc against ready; the
// root's parent is now ctcr. The PIDs of the dead leaders must be free:
// the helpers that stood in for them are gone.
func checkTreeIDs(t *testing.T, w *workload, ctcrPid int) {
	t.Helper()
	rec := readTreeRecord(t, w)
	bad := 0
	for _, pid := range rec.order {
		want := rec.tasks[pid]
		if pid == rec.root {
			want.ppid = ctcrPid
		}
		got, err := readTaskIDs(pid)
		if err != nil {
			t.Errorf("task %d was not restored: %v", pid, err)
			bad++
		} else if !sameIDs(got, want) {
			t.Errorf("task %d: restored with state %c ppid %d pgid %d sid %d, want state %c ppid %d pgid %d sid %d",
				pid, got.state, got.ppid, got.pgid, got.sid, want.state, want.ppid, want.pgid, want.sid)
			bad++
		}
		if bad > 10 {
			t.Fatalf("more than 10 tasks differ%s", w.report())
		}
	}
	for kind, pids := range rec.dead {
		for _, pid := range pids {
			deadline := time.Now().Add(5 * time.Second)
			for exists(pid) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if exists(pid) {
				t.Errorf("%s %d: a process still holds its PID 5 s after restore: %s", kind, pid, describe(pid))
			}
		}
	}
}

// threadTIDs returns the TIDs the threads workload listed in ready, thread 0 first.
func threadTIDs(t *testing.T, w *workload) []int {
	t.Helper()
	var tids []int
	for _, line := range strings.Split(w.read("ready"), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && strings.HasPrefix(f[0], "thread") {
			tid, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("ready: %q", line)
			}
			tids = append(tids, tid)
		}
	}
	return tids
}

func listTasks(pid int) []int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var tids []int
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	slices.Sort(tids)
	return tids
}

// checkThreads checks that the workload runs the threads its ready lists,
// with their names.
func checkThreads(t *testing.T, w *workload) []int {
	t.Helper()
	checkThreadsRestored(t, w, 0)
	return []int{w.pid}
}

func checkThreadsRestored(t *testing.T, w *workload, _ int) {
	t.Helper()
	tids := threadTIDs(t, w)
	want := append([]int{w.pid}, tids...)
	slices.Sort(want)
	if got := listTasks(w.pid); !slices.Equal(got, want) {
		t.Errorf("/proc/%d/task lists %d threads %v, want %d: %v", w.pid, len(got), got, len(want), want)
	}
	for i, tid := range tids {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/comm", w.pid, tid))
		if got, want := strings.TrimSpace(string(comm)), fmt.Sprintf("cnt-%d", i); got != want {
			t.Errorf("thread %d (TID %d) is named %q, want %q", i, tid, got, want)
		}
	}
}

// checkGoRuntime makes sure the Go workload runs several threads and only
// has fds ctcr restores (no netpoller epoll or eventfd).
func checkGoRuntime(t *testing.T, w *workload) []int {
	t.Helper()
	if n := len(listTasks(w.pid)); n < 4 {
		t.Errorf("the Go workload runs %d threads, want several", n)
	}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", w.pid))
	for _, e := range ents {
		link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", w.pid, e.Name()))
		if strings.HasPrefix(link, "anon_inode:") || strings.HasPrefix(link, "pipe:") || strings.HasPrefix(link, "socket:") {
			t.Errorf("the Go workload holds fd %s -> %s, which ctcr does not restore yet: the workload must not start the netpoller", e.Name(), link)
		}
	}
	return []int{w.pid}
}

// buildGoWorkload builds workloads/gocompute with the go command that
// runs the tests and registers it as the workload "gocompute".
func buildGoWorkload(t *testing.T) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go" // where the README's machines have it; sudo drops it from PATH
	}
	bin := filepath.Join(t.TempDir(), "gocompute")
	out, err := exec.Command(goBin, "build", "-o", bin, "./workloads/gocompute").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./workloads/gocompute: %v\n%s", err, out)
	}
	workloadBins["gocompute"] = bin
}

// registerPython registers workloads/pythreads.py, run by /usr/bin/python3
// (its #! line), as the workload "pythreads".
func registerPython(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skipf("no /usr/bin/python3 (apt-get install python3): %v", err)
	}
	py, err := filepath.Abs("workloads/pythreads.py")
	if err != nil {
		t.Fatal(err)
	}
	workloadBins["pythreads"] = py
}

// TestTreeWorkloadsDetectDifferences shows that the checks of these
// workloads can fail: with a value of ready altered, each reports FAIL
// and exits 1.
func TestTreeWorkloadsDetectDifferences(t *testing.T) {
	cases := []struct {
		name     string
		workload string
		args     []string
		prepare  func(t *testing.T)
		// alter rewrites one line of ready.
		alter func(line string) string
		want  string
	}{
		{"tree reports a zombie whose exit status differs", "tree", []string{"full"}, nil, func(l string) string {
			return strings.Replace(l, " exit 42", " exit 43", 1)
		}, "want exited with 43"},
		{"threads reports a thread whose TID differs", "threads", []string{"64"}, nil, func(l string) string {
			if f := strings.Fields(l); len(f) == 3 && f[0] == "thread5" {
				return "thread5 1 " + f[2]
			}
			return l
		}, "thread 5"},
		{"gocompute reports a chain whose hash differs", "gocompute", nil, buildGoWorkload, func(l string) string {
			if f := strings.Fields(l); len(f) == 3 && f[0] == "chain2" {
				return "chain2 " + f[1] + " " + strings.Repeat("0", 64)
			}
			return l
		}, "chain 2: replaying"},
		{"pythreads reports a thread whose TID differs", "pythreads", nil, registerPython, func(l string) string {
			if f := strings.Fields(l); len(f) == 3 && f[0] == "thread1" {
				return "thread1 1 " + f[2]
			}
			return l
		}, "thread 1: native TID"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.prepare != nil {
				c.prepare(t)
			}
			w := startWorkload(t, c.workload, c.args...)
			t.Cleanup(func() { killByDir(t, w.dir) })
			lines := strings.Split(w.read("ready"), "\n")
			changed := false
			for i, l := range lines {
				lines[i] = c.alter(l)
				changed = changed || lines[i] != l
			}
			if !changed {
				t.Fatalf("nothing to alter in ready:\n%s", w.read("ready"))
			}
			if err := os.WriteFile(w.path("ready"), []byte(strings.Join(lines, "\n")), 0o644); err != nil {
				t.Fatal(err)
			}
			w.requestCheck()
			ps, err := w.waitOriginal(60 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			res := w.read("result")
			if ps.ExitCode() != 1 || !strings.HasPrefix(res, "FAIL: ") || !strings.Contains(res, c.want) {
				t.Errorf("with ready altered: %v, result %q; want exit status 1 and FAIL mentioning %q", ps, res, c.want)
			}
		})
	}
}
