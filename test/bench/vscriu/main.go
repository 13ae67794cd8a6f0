// Command vscriu measures ctcr and CRIU side by side, as issue 11 asks:
// the same workloads, images on the same tmpfs, the two tools taking
// turns within each run (which goes first alternates from run to run),
// so both see the same machine state. For each tool and workload it
// reports the wall time of the dump and of the restore command (the
// only measure both tools share) and, for the 1 GiB process, the time
// it stays frozen under --leave-running (ctcr's --json frozen_seconds,
// CRIU's stats-dump frozen_time). Each restored workload must check
// itself and pass, whichever tool restored it. dd into the image tmpfs
// is measured in every run, the bound of any dump writing there.
//
// The workloads: test/workloads/bigmem.c (-mib MiB of random memory),
// test/bench/tasks/workloads/forktree.c (-procs processes) and
// manythreads.c (one process of -threads threads).
//
// CRIU is not shipped with ctcr: build CRIU 4.2 from its sources and
// name the binary: make bench-criu CRIU=/path/to/criu.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/stats"
	"github.com/ctcr/ctcr/test/harness"
	"golang.org/x/sys/unix"
)

var (
	ctcrFlag    = flag.String("ctcr", "bin/ctcr", "the ctcr binary")
	criuFlag    = flag.String("criu", "", "the CRIU binary (required)")
	runsFlag    = flag.Int("runs", 3, "runs; the median is reported")
	mibFlag     = flag.Int("mib", 1024, "MiB of the bigmem workload")
	procsFlag   = flag.Int("procs", 1000, "processes of the forktree workload")
	threadsFlag = flag.Int("threads", 1000, "threads of the manythreads workload")
	onlyFlag    = flag.String("only", "", "comma-separated workloads to run (bigmem, forktree, manythreads); all by default")
	jsonFlag    = flag.Bool("json", false, "print every measure as JSON")
)

// A workload is started with (dir, n), writes dir/ready once set up,
// and, once woken after a restore, checks itself, writes dir/result and
// exits 0 on PASS.
type workload struct {
	name, src string
	n         int
	procs     int  // processes the tree has
	group     bool // woken by SIGUSR1 to its process group, else by dir/check
}

// measure keys: TOOL_WORKLOAD_dump_s, _restore_s, _frozen_s (bigmem with
// --leave-running), and dd_gb_s.
type run map[string]float64

func main() {
	flag.Parse()
	if err := bench(); err != nil {
		fmt.Fprintln(os.Stderr, "bench vscriu:", err)
		os.Exit(1)
	}
}

func bench() error {
	if *criuFlag == "" {
		return fmt.Errorf("-criu is required: build CRIU from its sources and name its binary (make bench-criu CRIU=/path/to/criu)")
	}
	ctcr, err := harness.PrepareBench(*ctcrFlag)
	if err != nil {
		return err
	}
	criu, err := filepath.Abs(*criuFlag)
	if err != nil {
		return err
	}
	if out, err := exec.Command(criu, "--version").CombinedOutput(); err != nil {
		return fmt.Errorf("%s --version: %v: %s", criu, err, out)
	} else {
		fmt.Fprintf(os.Stderr, "CRIU: %s\n", strings.Join(strings.Fields(string(out)), " "))
	}
	all := []workload{
		{name: "bigmem", src: "test/workloads/bigmem.c", n: *mibFlag, procs: 1},
		{name: "forktree", src: "test/bench/tasks/workloads/forktree.c", n: *procsFlag, procs: *procsFlag, group: true},
		{name: "manythreads", src: "test/bench/tasks/workloads/manythreads.c", n: *threadsFlag, procs: 1},
	}
	var wls []workload
	for _, wl := range all {
		if *onlyFlag == "" || slices.Contains(strings.Split(*onlyFlag, ","), wl.name) {
			wls = append(wls, wl)
		}
	}
	if len(wls) == 0 {
		return fmt.Errorf("-only %q names no workload (bigmem, forktree, manythreads)", *onlyFlag)
	}
	work, err := os.MkdirTemp("", "ctcr-vscriu-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bins := map[string]string{}
	for _, wl := range wls {
		bins[wl.name] = filepath.Join(work, wl.name)
		if out, err := exec.Command("gcc", "-O2", "-Wall", "-Werror", "-pthread", "-Itest/workloads", "-o", bins[wl.name], wl.src).CombinedOutput(); err != nil {
			return fmt.Errorf("gcc %s: %v\n%s", wl.src, err, out)
		}
	}
	images := filepath.Join(work, "images")
	if err := os.Mkdir(images, 0o700); err != nil {
		return err
	}
	size := max(int64(*mibFlag)<<20+256<<20, 1<<30)
	if err := unix.Mount("tmpfs", images, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		return fmt.Errorf("mount a tmpfs for the images on %s: %w", images, err)
	}
	defer unix.Unmount(images, unix.MNT_DETACH)

	var runs []run
	for i := range *runsFlag {
		r := run{}
		if r["dd_gb_s"], err = ddBandwidth(images, *mibFlag); err != nil {
			return err
		}
		tools := []string{"ctcr", "criu"}
		if i%2 == 1 {
			tools = []string{"criu", "ctcr"}
		}
		for _, wl := range wls {
			for _, tool := range tools {
				bin := ctcr
				if tool == "criu" {
					bin = criu
				}
				if err := oneRun(tool, bin, bins[wl.name], work, images, wl, i, r); err != nil {
					return fmt.Errorf("run %d, %s, %s: %w", i+1, wl.name, tool, err)
				}
			}
			fmt.Fprintf(os.Stderr, "run %d %s: dump %.3f s ctcr, %.3f s CRIU; restore %.3f s ctcr, %.3f s CRIU\n", i+1, wl.name,
				r["ctcr_"+wl.name+"_dump_s"], r["criu_"+wl.name+"_dump_s"], r["ctcr_"+wl.name+"_restore_s"], r["criu_"+wl.name+"_restore_s"])
		}
		runs = append(runs, r)
	}
	return report(wls, runs)
}

// oneRun starts the workload, has tool dump it (which ends it), restore
// it detached, and, for bigmem, dump it again with --leave-running for
// the frozen time; then wakes it and checks that it passes.
func oneRun(tool, bin, prog, work, images string, wl workload, i int, r run) error {
	dir := filepath.Join(work, fmt.Sprintf("%s-%s-%d", wl.name, tool, i))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	out, err := os.Create(filepath.Join(dir, "out"))
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command(prog, dir, strconv.Itoa(wl.n))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	defer harness.KillByDir(dir)
	if err := harness.WaitFile(filepath.Join(dir, "ready"), 2*time.Minute); err != nil {
		return err
	}
	pids := harness.TreePids(pid)
	if len(pids) != wl.procs {
		return fmt.Errorf("the workload runs %d processes, want %d", len(pids), wl.procs)
	}
	img := filepath.Join(images, filepath.Base(dir))
	defer os.RemoveAll(img)
	if err := os.Mkdir(img, 0o700); err != nil {
		return err
	}
	key := tool + "_" + wl.name + "_"
	tpid := strconv.Itoa(pid)
	wall, err := runTool(bin, "dump", "-t", tpid, "-D", img)
	if err != nil {
		return err
	}
	r[key+"dump_s"] = wall.Seconds()
	cmd.Wait()
	if err := harness.ReapGone(pids, 30*time.Second); err != nil {
		return fmt.Errorf("after the dump: %w", err)
	}
	if wall, err = runTool(bin, "restore", "-D", img, "-d"); err != nil {
		return err
	}
	r[key+"restore_s"] = wall.Seconds()
	if got := harness.TreePids(pid); !slices.Equal(got, pids) {
		return fmt.Errorf("restored %d processes, not the %d dumped (or with other PIDs)", len(got), len(pids))
	}
	if wl.name == "bigmem" {
		// The tmpfs holds one checkpoint of the workload at a time.
		os.RemoveAll(img)
		lr := img + "-lr"
		defer os.RemoveAll(lr)
		if err := os.Mkdir(lr, 0o700); err != nil {
			return err
		}
		if r[key+"frozen_s"], err = frozen(tool, bin, tpid, lr); err != nil {
			return err
		}
	}
	if wl.group {
		err = unix.Kill(-pid, unix.SIGUSR1)
	} else {
		err = os.WriteFile(filepath.Join(dir, "check"), nil, 0o644)
	}
	if err != nil {
		return err
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, unix.WALL, nil); err != nil {
		return fmt.Errorf("wait for the restored root %d: %w", pid, err)
	}
	res, _ := os.ReadFile(filepath.Join(dir, "result"))
	if !ws.Exited() || ws.ExitStatus() != 0 || !strings.HasPrefix(string(res), "PASS") {
		return fmt.Errorf("the workload restored by %s did not pass (wait status %#x): %q", tool, uint32(ws), res)
	}
	return harness.ReapGone(pids, 30*time.Second)
}

// frozen dumps pid with --leave-running into img and returns the time
// the tool reports the tasks were frozen.
func frozen(tool, bin, pid, img string) (float64, error) {
	if tool == "ctcr" {
		var d struct {
			FrozenSeconds float64 `json:"frozen_seconds"`
		}
		cmd := exec.Command(bin, "dump", "--leave-running", "-t", pid, "-D", img, "--json")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return 0, fmt.Errorf("ctcr dump --leave-running: %w: %s", err, strings.TrimSpace(stderr.String()))
		}
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		if err := json.Unmarshal([]byte(line), &d); err != nil {
			return 0, fmt.Errorf("ctcr dump --json printed %q: %w", out, err)
		}
		return d.FrozenSeconds, nil
	}
	if _, err := runTool(bin, "dump", "--leave-running", "-t", pid, "-D", img); err != nil {
		return 0, err
	}
	d, err := os.Open(img)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	st, err := stats.CriuGetDumpStats(d)
	if err != nil {
		return 0, fmt.Errorf("CRIU's stats-dump in %s: %w", img, err)
	}
	return float64(st.GetFrozenTime()) / 1e6, nil
}

// runTool runs one ctcr or CRIU command and returns its wall time. Both
// take the same arguments for what is measured here.
func runTool(bin string, args ...string) (time.Duration, error) {
	cmd := exec.Command(bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	t0 := time.Now()
	err := cmd.Run()
	wall := time.Since(t0)
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if log, rerr := os.ReadFile(filepath.Join(args[len(args)-1], args[0]+".log")); rerr == nil {
			msg += "\n" + lastLines(string(log), 15)
		}
		return wall, fmt.Errorf("%s %s: %v: %s", filepath.Base(bin), strings.Join(args, " "), err, msg)
	}
	return wall, nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

func ddBandwidth(dir string, mib int) (float64, error) {
	path := filepath.Join(dir, "dd")
	defer os.Remove(path)
	t0 := time.Now()
	out, err := exec.Command("dd", "if=/dev/zero", "of="+path, "bs=1M", "count="+strconv.Itoa(mib), "status=none").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("dd: %v: %s", err, out)
	}
	return float64(mib<<20) / time.Since(t0).Seconds() / 1e9, nil
}

func median(runs []run, key string) float64 {
	var v []float64
	for _, r := range runs {
		if x, ok := r[key]; ok {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func report(wls []workload, runs []run) error {
	if *jsonFlag {
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"runs": runs})
	}
	fmt.Printf("ctcr against CRIU, medians of %d runs; dd into the image tmpfs %.2f GB/s\n", len(runs), median(runs, "dd_gb_s"))
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "workload\tmeasure\tctcr\tCRIU\tCRIU / ctcr")
	for _, wl := range wls {
		measures := []string{"dump_s", "restore_s"}
		if wl.name == "bigmem" {
			measures = append(measures, "frozen_s")
		}
		for _, m := range measures {
			c, k := median(runs, "ctcr_"+wl.name+"_"+m), median(runs, "criu_"+wl.name+"_"+m)
			ratio := "-"
			if c > 0 {
				ratio = fmt.Sprintf("%.2fx", k/c)
			}
			fmt.Fprintf(tw, "%s (%d)\t%s\t%.3f s\t%.3f s\t%s\n", wl.name, wl.n, strings.TrimSuffix(m, "_s"), c, k, ratio)
		}
	}
	return tw.Flush()
}
