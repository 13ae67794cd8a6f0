// Command tasks measures what ctcr spends per task: the dump and the
// restore of a tree of -procs processes (workloads/forktree.c: each one sleeps in
// sigsuspend) and of one process with -threads threads (workloads/manythreads.c:
// each one waits on a condition variable). Images go to a tmpfs. Each
// restored workload must check itself and pass. It prints, for dump and
// restore, the total time (ctcr's own *_seconds report and the wall time
// of the ctcr command) and the time per task, with its ratio to issue
// 11's target (1 ms per process, 0.3 ms per thread, on a quiet machine);
// the median of -runs runs.
//
// Run as root from the repository root: make bench.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"github.com/ctcr/ctcr/test/harness"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
)

var (
	ctcrFlag    = flag.String("ctcr", "bin/ctcr", "the ctcr binary")
	procsFlag   = flag.Int("procs", 1000, "processes in the tree")
	threadsFlag = flag.Int("threads", 1000, "threads in the threaded process, the main one included")
	runsFlag    = flag.Int("runs", 5, "runs of each workload; the median is reported")
	srcFlag     = flag.String("src", "test/bench/tasks/workloads", "directory of forktree.c and manythreads.c")
	jsonFlag    = flag.Bool("json", false, "print the result as JSON")
	onlyFlag    = flag.String("only", "", "run only this workload: forktree or manythreads")
	logFlag     = flag.String("log", "", "append ctcr's detailed logs (phase times) to dump.log and restore.log in this directory")
)

// Targets of issue 11 that dump and restore should each stay under, per
// task: a process of a tree, a thread of a process.
const (
	targetPerProcess = time.Millisecond
	targetPerThread  = 300 * time.Microsecond
)

// measure is one run of one workload.
type measure struct {
	Tasks          int     `json:"tasks"`
	DumpSeconds    float64 `json:"dump_seconds"`      // ctcr dump --json: dump_seconds
	DumpWall       float64 `json:"dump_wall_seconds"` // the ctcr dump command, start to exit
	FrozenSeconds  float64 `json:"frozen_seconds"`
	RestoreSeconds float64 `json:"restore_seconds"`      // ctcr restore --json: restore_seconds
	RestoreWall    float64 `json:"restore_wall_seconds"` // the ctcr restore -d command, start to exit
	// CPU time (user+system) of the ctcr command itself: what a task
	// costs ctcr, which a loaded machine does not inflate as it does
	// the wall time.
	DumpCPU    float64 `json:"dump_cpu_seconds"`
	RestoreCPU float64 `json:"restore_cpu_seconds"`
	// CPU time the restored tasks ran on their own account before they
	// were woken: the remote syscalls that built them (their
	// /proc/PID/task/TID/schedstat, summed).
	RestoreTaskCPU float64 `json:"restore_task_cpu_seconds"`
}

type workload struct {
	name  string // forktree or manythreads
	tasks int    // processes that dump and restore report
	n     int    // the workload's N argument
	// wake tells the restored workload (root PID pid, in DIR dir) to check itself.
	wake func(dir string, pid int) error
	// target is the time per task dump and restore should stay under.
	target time.Duration
}

func main() {
	flag.Parse()
	if err := bench(); err != nil {
		fmt.Fprintln(os.Stderr, "bench tasks:", err)
		os.Exit(1)
	}
}

func bench() error {
	ctcr, err := harness.PrepareBench(*ctcrFlag)
	if err != nil {
		return err
	}
	if err := checkLimits(); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "ctcr-bench-tasks-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bins := map[string]string{}
	for _, name := range []string{"forktree", "manythreads"} {
		bins[name] = filepath.Join(work, name)
		src := filepath.Join(*srcFlag, name+".c")
		if out, err := exec.Command("gcc", "-O2", "-Wall", "-Werror", "-pthread", "-o", bins[name], src).CombinedOutput(); err != nil {
			return fmt.Errorf("gcc %s: %v\n%s", src, err, out)
		}
	}
	images := filepath.Join(work, "images")
	if err := os.Mkdir(images, 0o700); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", images, "tmpfs", 0, "size=1g"); err != nil {
		return fmt.Errorf("mount a tmpfs for the images on %s: %w", images, err)
	}
	defer unix.Unmount(images, unix.MNT_DETACH)

	workloads := []workload{
		{name: "forktree", tasks: *procsFlag, n: *procsFlag, target: targetPerProcess, wake: func(_ string, pid int) error {
			return unix.Kill(-pid, unix.SIGUSR1) // the tree is the root's process group
		}},
		{name: "manythreads", tasks: 1, n: *threadsFlag, target: targetPerThread, wake: func(dir string, _ int) error {
			return os.WriteFile(filepath.Join(dir, "check"), nil, 0o644)
		}},
	}
	if *onlyFlag != "" {
		workloads = slices.DeleteFunc(workloads, func(wl workload) bool { return wl.name != *onlyFlag })
		if len(workloads) == 0 {
			return fmt.Errorf("-only %q: no such workload (forktree, manythreads)", *onlyFlag)
		}
	}
	results := map[string][]measure{}
	for _, wl := range workloads {
		for i := range *runsFlag {
			m, err := oneRun(ctcr, bins[wl.name], work, images, wl, i)
			if err != nil {
				return fmt.Errorf("%s run %d: %w", wl.name, i+1, err)
			}
			fmt.Fprintf(os.Stderr, "%s run %d: dump %.3f s (CPU %.3f s), restore %.3f s (CPU %.3f s, tasks %.3f s) for %d tasks\n",
				wl.name, i+1, m.DumpSeconds, m.DumpCPU, m.RestoreSeconds, m.RestoreCPU, m.RestoreTaskCPU, wl.n)
			results[wl.name] = append(results[wl.name], m)
		}
	}
	return report(workloads, results)
}

// checkLimits makes sure pid_max and threads-max leave room for the
// workloads and their restore.
func checkLimits() error {
	for _, l := range []struct {
		file string
		need int
	}{
		{"/proc/sys/kernel/pid_max", 4 * max(*procsFlag, *threadsFlag)},
		{"/proc/sys/kernel/threads-max", 2 * (*procsFlag + *threadsFlag)},
	} {
		b, err := os.ReadFile(l.file)
		if err != nil {
			return err
		}
		v, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return fmt.Errorf("%s: %q", l.file, b)
		}
		if v < l.need {
			return fmt.Errorf("%s is %d: want at least %d for -procs %d -threads %d", l.file, v, l.need, *procsFlag, *threadsFlag)
		}
	}
	return nil
}

func oneRun(ctcr, bin, work, images string, wl workload, i int) (m measure, err error) {
	dir := filepath.Join(work, fmt.Sprintf("%s-%d", wl.name, i))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return m, err
	}
	out, err := os.Create(filepath.Join(dir, "out"))
	if err != nil {
		return m, err
	}
	defer out.Close()
	cmd := exec.Command(bin, dir, strconv.Itoa(wl.n))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return m, err
	}
	pid := cmd.Process.Pid
	defer harness.KillByDir(dir)
	if err := harness.WaitFile(filepath.Join(dir, "ready"), 2*time.Minute); err != nil {
		return m, err
	}
	pids := harness.TreePids(pid)
	if len(pids) != wl.tasks {
		return m, fmt.Errorf("the workload runs %d processes, want %d", len(pids), wl.tasks)
	}

	img := filepath.Join(images, filepath.Base(dir))
	defer os.RemoveAll(img)
	var d struct {
		Tasks         int     `json:"tasks"`
		DumpSeconds   float64 `json:"dump_seconds"`
		FrozenSeconds float64 `json:"frozen_seconds"`
	}
	wall, cpu, err := ctcrJSON(ctcr, &d, "dump", "-t", strconv.Itoa(pid), "-D", img, "--json")
	if err != nil {
		return m, err
	}
	if d.Tasks != wl.tasks {
		return m, fmt.Errorf("dump --json reports %d tasks, want %d", d.Tasks, wl.tasks)
	}
	m.Tasks, m.DumpSeconds, m.DumpWall, m.FrozenSeconds, m.DumpCPU = d.Tasks, d.DumpSeconds, wall.Seconds(), d.FrozenSeconds, cpu.Seconds()
	cmd.Wait()
	if err := harness.ReapGone(pids, 30*time.Second); err != nil {
		return m, fmt.Errorf("after the dump: %w", err)
	}

	var r struct {
		Tasks          int     `json:"tasks"`
		RestoreSeconds float64 `json:"restore_seconds"`
	}
	wall, cpu, err = ctcrJSON(ctcr, &r, "restore", "-D", img, "-d", "--json")
	if err != nil {
		return m, err
	}
	if r.Tasks != wl.tasks {
		return m, fmt.Errorf("restore --json reports %d tasks, want %d", r.Tasks, wl.tasks)
	}
	m.RestoreSeconds, m.RestoreWall, m.RestoreCPU = r.RestoreSeconds, wall.Seconds(), cpu.Seconds()
	if got := harness.TreePids(pid); !slices.Equal(got, pids) {
		return m, fmt.Errorf("restored %d processes, not the %d dumped (or with other PIDs)", len(got), len(pids))
	}
	m.RestoreTaskCPU = treeCPU(pids).Seconds()
	if err := wl.wake(dir, pid); err != nil {
		return m, err
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, unix.WALL, nil); err != nil {
		return m, fmt.Errorf("wait for the restored root %d: %w", pid, err)
	}
	res, _ := os.ReadFile(filepath.Join(dir, "result"))
	if !ws.Exited() || ws.ExitStatus() != 0 || !strings.HasPrefix(string(res), "PASS") {
		return m, fmt.Errorf("the restored workload did not pass (wait status %#x): %q", uint32(ws), res)
	}
	return m, harness.ReapGone(pids, 30*time.Second)
}

// treeCPU sums the time on the CPU of every thread of pids, from
// /proc/PID/task/TID/schedstat (nanoseconds, unlike the clock ticks of
// stat). A task that is gone counts nothing.
func treeCPU(pids []int) time.Duration {
	var sum time.Duration
	for _, pid := range pids {
		tids, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, t := range tids {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
			if err != nil {
				continue
			}
			f := strings.Fields(string(b))
			if len(f) == 0 {
				continue
			}
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			sum += time.Duration(ns)
		}
	}
	return sum
}

// ctcrJSON runs ctcr, decodes the first line of its stdout into v and
// returns the command's wall time and its CPU time (user+system, its
// own and that of the children it waited for).
func ctcrJSON(ctcr string, v any, args ...string) (time.Duration, time.Duration, error) {
	if *logFlag != "" {
		args = append(args, "-v", "--log-file", filepath.Join(*logFlag, args[0]+".log"))
	}
	cmd := exec.Command(ctcr, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	t0 := time.Now()
	out, err := cmd.Output()
	wall := time.Since(t0)
	var cpu time.Duration
	if cmd.ProcessState != nil {
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		return wall, cpu, fmt.Errorf("ctcr %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if err := json.Unmarshal([]byte(line), v); err != nil {
		return wall, cpu, fmt.Errorf("ctcr %s printed %q: %w", strings.Join(args, " "), out, err)
	}
	return wall, cpu, nil
}

func median(ms []measure, f func(measure) float64) float64 {
	v := make([]float64, len(ms))
	for i, m := range ms {
		v[i] = f(m)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func report(workloads []workload, results map[string][]measure) error {
	type row struct {
		key, name string
		f         func(measure) float64
	}
	rows := []row{
		{"dump_seconds", "dump", func(m measure) float64 { return m.DumpSeconds }},
		{"dump_wall_seconds", "dump, ctcr command wall time", func(m measure) float64 { return m.DumpWall }},
		{"frozen_seconds", "frozen", func(m measure) float64 { return m.FrozenSeconds }},
		{"restore_seconds", "restore", func(m measure) float64 { return m.RestoreSeconds }},
		{"restore_wall_seconds", "restore -d, ctcr command wall time", func(m measure) float64 { return m.RestoreWall }},
		{"dump_cpu_seconds", "dump, ctcr CPU time", func(m measure) float64 { return m.DumpCPU }},
		{"restore_cpu_seconds", "restore -d, ctcr CPU time", func(m measure) float64 { return m.RestoreCPU }},
		{"restore_task_cpu_seconds", "restore -d, restored tasks' CPU time", func(m measure) float64 { return m.RestoreTaskCPU }},
	}
	if *jsonFlag {
		out := map[string]any{"runs": *runsFlag}
		for _, wl := range workloads {
			med := map[string]float64{}
			for _, r := range rows {
				med[r.key] = median(results[wl.name], r.f)
				per := 1000 * med[r.key] / float64(wl.n)
				med[strings.TrimSuffix(r.key, "_seconds")+"_ms_per_task"] = per
				med[strings.TrimSuffix(r.key, "_seconds")+"_per_target"] = per / (wl.target.Seconds() * 1000)
			}
			out[wl.name] = map[string]any{"tasks": wl.n, "target_ms_per_task": wl.target.Seconds() * 1000, "runs": results[wl.name], "median": med}
		}
		return json.NewEncoder(os.Stdout).Encode(out)
	}
	fmt.Printf("ctcr bench tasks: median of %d runs; a task is a process of the tree or a thread;\nratio: time per task / target (%v per process, %v per thread, issue 11)\n\n", *runsFlag, targetPerProcess, targetPerThread)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "workload\tmeasure\ttotal s\tms per task\tratio\truns (s)")
	for _, wl := range workloads {
		what := fmt.Sprintf("%d processes", wl.n)
		if wl.name == "manythreads" {
			what = fmt.Sprintf("1 process, %d threads", wl.n)
		}
		for _, r := range rows {
			total := median(results[wl.name], r.f)
			per := total / float64(wl.n)
			var each []string
			for _, m := range results[wl.name] {
				each = append(each, fmt.Sprintf("%.3f", r.f(m)))
			}
			fmt.Fprintf(tw, "%s\t%s\t%.3f\t%.3f\t%.2f\t%s\n", what, r.name, total, per*1000, per/wl.target.Seconds(), strings.Join(each, " "))
		}
	}
	return tw.Flush()
}
