package test

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/test/harness"
)

// The workload killed under ctcr (issue 10, "no hang anywhere"): a tree
// of processes with several threads each (workloads/killtree.c) loses
// all its tasks, one process or one thread to a SIGKILL at a random
// moment of a dump (with and without --leave-running) or of a restore.
// ctcr must end within killTaskDeadline, with status 0 or 1 and, for 1,
// one line naming a task, never a panic; and it must leave no task
// traced or stopped: every survivor runs freely, and a failed restore
// leaves nothing of what it made.
//
// CTCR_STRESS=1 (make stress) raises the number of kills per mode from
// 10 to 100.

// killTaskDeadline is how long one ctcr run under a kill may take: an
// undisturbed dump or restore of the tree takes well under a second, so
// a run still going after this long is waiting for something that will
// never come (the harness then prints its goroutines' stacks).
const killTaskDeadline = 30 * time.Second

// killTaskTries is how many kills each mode tries.
func killTaskTries() int {
	if os.Getenv("CTCR_STRESS") != "" {
		return 100
	}
	return 10
}

// killTree is the tree each test kills: 3 processes of 3 threads.
var killTreeArgs = []string{"3", "3"}

// treeTasks reads the tasks of a killtree workload from its ready file:
// for each process, its PID and its threads' TIDs (the main one first).
func treeTasks(t *testing.T, w *workload) [][]int {
	t.Helper()
	var procs [][]int
	for _, line := range strings.Split(w.read("ready"), "\n") {
		v, ok := strings.CutPrefix(line, "proc ")
		if !ok {
			continue
		}
		var tids []int
		for _, f := range strings.Fields(v)[1:] {
			tid, err := strconv.Atoi(f)
			if err != nil {
				t.Fatalf("ready: %q: %v", line, err)
			}
			tids = append(tids, tid)
		}
		procs = append(procs, tids)
	}
	if len(procs) == 0 {
		t.Fatalf("killtree's ready lists no process: %q", w.read("ready"))
	}
	return procs
}

// victim is what one kill hits: the whole tree, one process, or one
// thread (a SIGKILL sent to a thread other than the main one with
// tgkill, as a fatal signal taken by one thread: its whole process dies,
// the way exit_group from one thread ends them all).
type victim struct {
	what  string
	tasks [][2]int // (process, thread) pairs to signal
}

func (v victim) String() string { return v.what }

// pickVictim chooses the victim of kill i: tree, process and thread in
// turn, the process and thread at random.
func pickVictim(i int, procs [][]int) victim {
	switch i % 3 {
	case 0:
		v := victim{what: "the whole tree"}
		for _, p := range procs {
			v.tasks = append(v.tasks, [2]int{p[0], p[0]})
		}
		return v
	case 1:
		p := procs[rand.Intn(len(procs))]
		return victim{what: fmt.Sprintf("process %d", p[0]), tasks: [][2]int{{p[0], p[0]}}}
	}
	p := procs[rand.Intn(len(procs))]
	tid := p[len(p)-1]
	if len(p) > 1 {
		tid = p[1+rand.Intn(len(p)-1)]
	}
	return victim{what: fmt.Sprintf("thread %d of process %d", tid, p[0]), tasks: [][2]int{{p[0], tid}}}
}

func (v victim) kill() {
	for _, pt := range v.tasks {
		unix.Tgkill(pt[0], pt[1], unix.SIGKILL)
	}
}

// deadlineRe finds the messages of a wait that reached its deadline.
var deadlineRe = regexp.MustCompile(`no stop within|not dead .* after SIGKILL|did not finish within`)

// taskRe finds a task named in an error message.
var taskRe = regexp.MustCompile(`\b(task|process|thread|puppet) \d+`)

// awaitKilledRun waits (killTaskDeadline at most) for ctcr run r, into
// which v was killed delay after it began, at killed; it returns how
// long ctcr took to end after the kill.
func awaitKilledRun(t *testing.T, r *ctcrRun, v victim, delay time.Duration, killed time.Time) time.Duration {
	t.Helper()
	if err := r.wait(killTaskDeadline); err != nil {
		t.Fatalf("%v killed %v into it: %v", v, delay, err)
	}
	return time.Since(killed)
}

// checkKilledRun checks how a ctcr run whose workload was killed ended:
// status 0, or 1 with one line naming a task, no panic.
func checkKilledRun(t *testing.T, r *ctcrRun, v victim, delay time.Duration) {
	t.Helper()
	stderr := strings.TrimSpace(r.stderr())
	t.Logf("%v killed %v into it: exit %d %s", v, delay, r.code(), stderr)
	if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
		t.Fatalf("%s, %v killed %v into it, panicked: %s", r, v, delay, stderr)
	}
	if deadlineRe.MatchString(stderr) {
		// A killed task is reported by the kernel at once once ctcr
		// collects what holds its report back: a wait that needed its
		// deadline waited on something ctcr should have collected.
		t.Errorf("%s, %v killed %v into it: a wait ended by its deadline, not by the kill: %s", r, v, delay, stderr)
	}
	switch r.code() {
	case 0:
	case 1:
		if strings.Count(stderr, "\n") > 0 || !taskRe.MatchString(stderr) {
			t.Errorf("%s, %v killed %v into it: exit 1 with %q, want one line naming the task", r, v, delay, stderr)
		}
	default:
		t.Errorf("%s, %v killed %v into it: exit %d, want 0 or 1; stderr: %s", r, v, delay, r.code(), stderr)
	}
}

// freeOrGone checks that no thread of procs is traced or stopped: each
// is gone (or a zombie), or runs freely. It samples a few times, as a
// task just let go may take a moment to leave its stop.
func freeOrGone(procs [][]int) error {
	var last string
	for try := 0; try < 20; try++ {
		last = ""
		for _, p := range procs {
			for _, tid := range p {
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", p[0], tid))
				if err != nil {
					continue // gone
				}
				st := string(b)
				state, tracer := "", ""
				for _, line := range strings.Split(st, "\n") {
					if v, ok := strings.CutPrefix(line, "State:"); ok {
						state = strings.TrimSpace(v)
					}
					if v, ok := strings.CutPrefix(line, "TracerPid:"); ok {
						tracer = strings.TrimSpace(v)
					}
				}
				if strings.HasPrefix(state, "Z") || strings.HasPrefix(state, "X") {
					continue
				}
				if tracer != "0" || strings.HasPrefix(state, "T") || strings.HasPrefix(state, "t") {
					last = fmt.Sprintf("process %d thread %d: state %s, TracerPid %s", p[0], tid, state, tracer)
				}
			}
		}
		if last == "" {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("a task is held: %s", last)
}

// TestKillTaskDuringDump kills the tree, a process or a thread of a
// running killtree at random moments of `ctcr dump`, with and without
// --leave-running.
func TestKillTaskDuringDump(t *testing.T) {
	needCtcr(t)
	for _, mode := range []struct {
		name  string
		extra []string
	}{
		{"dump", nil},
		{"leave-running", []string{"--leave-running"}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			tmp := t.TempDir()
			// One undisturbed dump tells over how long the kills spread.
			w := startWorkload(t, "killtree", killTreeArgs...)
			start := time.Now()
			r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", filepath.Join(tmp, "timed"), "--leave-running")
			took := time.Since(start)
			if r.code() != 0 {
				t.Fatalf("%s: exit %d: %s", r, r.code(), r.stderr())
			}
			endWorkload(t, w)
			failed := 0
			var slowest time.Duration // from a kill to ctcr's end
			for i := 0; i < killTaskTries(); i++ {
				w := startWorkload(t, "killtree", killTreeArgs...)
				procs := treeTasks(t, w)
				v := pickVictim(i, procs)
				delay := time.Duration(rand.Int63n(int64(took)))
				args := append([]string{"dump", "-t", strconv.Itoa(w.pid), "-D", filepath.Join(tmp, strconv.Itoa(i))}, mode.extra...)
				r := startCtcr(t, args...)
				time.Sleep(delay)
				v.kill()
				killed := time.Now()
				slowest = max(slowest, awaitKilledRun(t, r, v, delay, killed))
				checkKilledRun(t, r, v, delay)
				if r.code() != 0 {
					failed++
				}
				if err := freeOrGone(procs); err != nil {
					t.Fatalf("after %s (exit %d), %v killed %v into it: %v\n--- ctcr's stderr: %s", r, r.code(), v, delay, err, r.stderr())
				}
				endWorkload(t, w)
			}
			t.Logf("%d kills: %d dumps failed, %d finished (an undisturbed dump took %v); ctcr ended at most %v after a kill", killTaskTries(), failed, killTaskTries()-failed, took, slowest)
		})
	}
}

// TestKillTaskDuringRestore kills the tree, a process or a thread that
// `ctcr restore -d` is making, or its puppet, at random moments of the
// restore: the
// tasks have the PIDs they had at the dump, so the test knows them in
// advance. A restore that fails leaves none of its tasks; one that
// finishes leaves them running freely.
func TestKillTaskDuringRestore(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "killtree", killTreeArgs...)
	procs := treeTasks(t, w)
	img := filepath.Join(t.TempDir(), "img")
	dump(t, w, img, false, 0)
	w.waited = true
	gone := func() {
		t.Helper()
		if err := harness.KillWorkload(w.pid, w.dir, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		for _, p := range procs {
			if _, _, err := reap(p[0], 10*time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}
	gone() // the dump's killed children came to this subreaper
	start := time.Now()
	if r := runCtcr(t, 60*time.Second, "restore", "-D", img, "-d"); r.code() != 0 {
		t.Fatalf("%s: exit %d: %s", r, r.code(), r.stderr())
	}
	took := time.Since(start)
	gone()
	failed := 0
	var slowest time.Duration // from a kill (or the start, if none) to ctcr's end
	for i := 0; i < killTaskTries(); i++ {
		v := pickVictim(i, procs)
		puppet := i%4 == 3
		if puppet {
			v = victim{what: "the puppet"}
		}
		delay := time.Duration(rand.Int63n(int64(took)))
		r := startCtcr(t, "restore", "-D", img, "-d")
		// Kill as soon as the victim exists from delay on: before it
		// exists a kill would hit nothing (or a stranger's task).
		at := time.Now().Add(delay)
		killed := time.Now()
		for !r.exited() {
			if time.Now().After(at) {
				if puppet {
					// The process ctcr execs stopped and makes the
					// tree's root from: a child of ctcr running ctcr.
					if pp := puppetOf(r.cmd.Process.Pid); pp != 0 {
						v = victim{what: fmt.Sprintf("the puppet %d", pp), tasks: [][2]int{{pp, pp}}}
						v.kill()
						killed = time.Now()
						break
					}
				} else if exists(v.tasks[0][1]) {
					v.kill()
					killed = time.Now()
					break
				}
			}
			time.Sleep(time.Millisecond)
		}
		slowest = max(slowest, awaitKilledRun(t, r, v, delay, killed))
		checkKilledRun(t, r, v, delay)
		if r.code() != 0 {
			failed++
			// A failed restore kills what it made: the tasks come
			// to this subreaper, which reaps them; none may stay.
			var pids []int
			for _, p := range procs {
				pids = append(pids, p[0])
			}
			waitNoLeftovers(t, 5*time.Second, fmt.Sprintf("%s failed (%s) after %v was killed %v into it", r, strings.TrimSpace(r.stderr()), v, delay), pids...)
		} else if err := freeOrGone(procs); err != nil {
			t.Fatalf("after %s (exit 0), %v killed %v into it: %v", r, v, delay, err)
		}
		gone()
	}
	t.Logf("%d kills: %d restores failed, %d finished (an undisturbed restore took %v); ctcr ended at most %v after a kill", killTaskTries(), failed, killTaskTries()-failed, took, slowest)
	// The image still restores, and the tree checks itself.
	restoreForeground(t, w, img, scenario{}, nil)
}

// puppetOf returns the puppet of the ctcr restore of PID ctcr (its
// child running ctcr's binary), or 0 while it has none.
func puppetOf(ctcr int) int {
	for pid := range childrenOf(ctcr) {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && exe == ctcrBin {
			return pid
		}
	}
	return 0
}

// endWorkload kills the workload's tree and reaps it.
func endWorkload(t *testing.T, w *workload) {
	t.Helper()
	if !w.waited {
		w.cmd.Process.Kill()
		w.waitOriginal(10 * time.Second)
	}
	if err := harness.KillWorkload(w.pid, w.dir, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// containerTasks lists the processes of a test container (its init and
// the init's children) with their threads, as treeTasks does.
func containerTasks(init int) [][]int {
	var procs [][]int
	pids := []int{init}
	for pid := range childrenOf(init) {
		pids = append(pids, pid)
	}
	for _, pid := range pids {
		tids := []int{pid}
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, e := range ents {
			if tid, err := strconv.Atoi(e.Name()); err == nil && tid != pid {
				tids = append(tids, tid)
			}
		}
		procs = append(procs, tids)
	}
	return procs
}

// TestKillTaskDuringCheckpoint kills the whole container, its init or
// one of its other processes at random moments of `ctcr checkpoint
// --leave-running` of a runc container: the checkpoint path seizes the
// tasks while the cgroup freezer holds them, and the init of a PID
// namespace, killed, waits for every task of it to be reaped, which the
// traced ones cannot be until ctcr collects them. ctcr must end within
// killTaskDeadline with 0, or 16 (31: the container had stopped before
// ctcr looked) and one line naming a task or the container, and leave
// no task of it traced, stopped or frozen.
func TestKillTaskDuringCheckpoint(t *testing.T) {
	needRunc(t)
	tries := killTaskTries() * 6 / 10 // each try starts a container: 6, 60 with CTCR_STRESS
	var took, slowest time.Duration
	failed := 0
	for i := 0; i < tries; i++ {
		c := newContainer(t, "killtask", nil)
		c.start()
		st, err := c.state()
		if err != nil {
			t.Fatal(err)
		}
		procs := containerTasks(st.Pid)
		dir := filepath.Join(t.TempDir(), "ck")
		if i == 0 {
			// One undisturbed checkpoint tells over how long the kills
			// spread.
			start := time.Now()
			checkpointContainer(t, c, dir, "--leave-running")
			took = time.Since(start)
			dir += "2"
		}
		var v victim
		switch {
		case i%3 == 0:
			v = pickVictim(0, procs)
			v.what = "the whole container"
		case i%3 == 1:
			v = victim{what: fmt.Sprintf("the container's init %d", st.Pid), tasks: [][2]int{{st.Pid, st.Pid}}}
		default:
			p := procs[1+rand.Intn(len(procs)-1)]
			v = victim{what: fmt.Sprintf("process %d of the container", p[0]), tasks: [][2]int{{p[0], p[0]}}}
		}
		delay := time.Duration(rand.Int63n(int64(took)))
		r := startCtcr(t, "checkpoint", c.id, "-D", dir, "--leave-running")
		time.Sleep(delay)
		v.kill()
		killed := time.Now()
		slowest = max(slowest, awaitKilledRun(t, r, v, delay, killed))
		stderr := strings.TrimSpace(r.stderr())
		t.Logf("%v killed %v into it: exit %d %s", v, delay, r.code(), stderr)
		switch {
		case strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine "):
			t.Fatalf("%s, %v killed %v into it, panicked: %s", r, v, delay, stderr)
		case deadlineRe.MatchString(stderr):
			t.Errorf("%s, %v killed %v into it: a wait ended by its deadline, not by the kill: %s", r, v, delay, stderr)
		case r.code() == 0:
		case r.code() == 16 || r.code() == 31:
			// 31: the container was gone before ctcr looked at it.
			failed++
			if strings.Contains(stderr, "\n") || !(taskRe.MatchString(stderr) || strings.Contains(stderr, c.id)) {
				t.Errorf("%s, %v killed %v into it: exit %d with %q, want one line naming the task or the container", r, v, delay, r.code(), stderr)
			}
		default:
			t.Errorf("%s, %v killed %v into it: exit %d, want 0, 16 or 31; stderr: %s", r, v, delay, r.code(), stderr)
		}
		if err := freeOrGone(procs); err != nil {
			t.Fatalf("after %s (exit %d), %v killed %v into it: %v", r, r.code(), v, delay, err)
		}
		if exists(st.Pid) {
			deadline := time.Now().Add(5 * time.Second)
			for {
				fs, err := freezerState(st.Pid)
				if err != nil || fs == "THAWED" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after %s (exit %d), %v killed %v into it: the container's freezer is %s 5 s later", r, r.code(), v, delay, fs)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		c.cleanup()
	}
	t.Logf("%d kills: %d checkpoints failed, %d finished (an undisturbed one took %v); ctcr ended at most %v after a kill", tries, failed, tries-failed, took, slowest)
}
