// Command bench measures ctcr's dump and restore of a process holding
// -mib MiB of random memory, and reports every figure as a ratio to a
// limit of the machine measured in the same run: on a shared VM whose
// page faults are cheap one hour and slow the next, absolute times are
// noise, and only a ratio to what the machine could do at that moment
// says whether ctcr is fast.
//
// The three limits, measured at the start of each run:
//
//	first touch  memset of a fresh anonymous mapping of -mib MiB: one
//	             user page fault per 4 KiB, as a fault-driven restore pays
//	populate     MADV_POPULATE_WRITE of a fresh mapping: the kernel
//	             allocates and zeroes the pages with no user fault, the
//	             least any restore into new memory can cost
//	dd           dd of -mib MiB from /dev/zero into the image tmpfs: the
//	             bound of any dump writing its pages there
//
// What each run then does with the bigmem workload, images on a tmpfs:
//
//	dump                      ctcr dump (kills it)            / dd
//	restore, bulk fill        ctcr restore -d (ctcr writes the / populate
//	                          pages with process_vm_writev)
//	restore, fault-driven     the same, CTCR_FILL=fault        / first touch
//	                          (the two restores alternate which goes first)
//	dump --leave-running      frozen time                      / dd time
//	dump --pre-copy           frozen time, copy throughput     / dd time, / dd
//	pre-dump, then a dump     throughput, frozen time          / dd, / dd time
//	dump --compress zstd      throughput, size, then restore   / dd, / populate
//	                          (only if ctcr dump --help has --compress)
//	runc container holding    ctcr checkpoint --leave-running: / dd time
//	-mib MiB (bigmem, static) frozen time (only with runc)
//
// A frozen time's limit ("dd time") is the time dd takes to write the
// same bytes: a ratio well below 1 means the freeze does not scale with
// the memory. ctcr's peak RSS is reported against the 128 MiB bound.
// The restored workload must pass its own checksum check at the end of
// every run. The medians of -runs runs are printed, with each run's
// values; -json prints them all as JSON.
//
// -dump-only measures the limits and the plain dump alone, and with
// -compare VAR=VALUE each run dumps twice, with and without VAR in
// ctcr's environment, in alternating order (the dump_alt rows): work on
// the dump's write path compares variants so, e.g. -compare
// CTCR_PAGE_COPIERS=1 (the single-reader pipeline) against the default.
//
// Bench knob (not a user option): CTCR_FILL=fault makes a restore fill
// memory the old way, a remote preadv into fresh memory with one user
// fault per page; the bench sets it for the fault-driven row only.
// (CTCR_FILL=populate is the middle way: MADV_POPULATE_WRITE, then the
// remote preadv.)
//
// Run as root from the repository root: make bench.
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

	"github.com/ctcr/ctcr/test/harness"
	"golang.org/x/sys/unix"
)

var (
	ctcrFlag     = flag.String("ctcr", "bin/ctcr", "the ctcr binary")
	mibFlag      = flag.Int("mib", 1024, "MiB of touched random memory in the workload, and of the limits' buffers")
	runsFlag     = flag.Int("runs", 5, "runs; the median is reported")
	jsonFlag     = flag.Bool("json", false, "print the result as JSON")
	workloadFlag = flag.String("workload", "test/workloads/bigmem.c", "source of the bigmem workload")
	dumpOnlyFlag = flag.Bool("dump-only", false, "measure only the limits and the plain dump (each run restores the workload to check it)")
	compareFlag  = flag.String("compare", "", "with -dump-only, VAR=VALUE: each run also dumps with it in ctcr's environment, in alternating order, as the dump_alt rows")
)

// rssBound is issue 11's bound on ctcr's peak RSS for a 1 GiB dump or
// restore, in MiB.
const rssBound = 128

// run is one run's measurements by key (see rows); GB is 1e9 bytes.
type run map[string]float64

// row is one line of the report: a measure, and the limit of the same
// run it is divided by ("" for none).
type row struct {
	key, name, unit, limit string
}

// The limits' rows come first; ratio keys are key + "_per_" + limit.
var rows = []row{
	{"first_touch_gb_s", "limit: first touch (memset of fresh memory)", "GB/s", ""},
	{"populate_gb_s", "limit: MADV_POPULATE_WRITE of fresh memory", "GB/s", ""},
	{"dd_gb_s", "limit: dd into the image tmpfs", "GB/s", ""},
	{"dump_gb_s", "dump (pages_bytes / dump_seconds)", "GB/s", "dd_gb_s"},
	{"dump_memory_gb_s", "dump, memory phase (pages_bytes / memory_seconds)", "GB/s", "dd_gb_s"},
	{"dump_alt_gb_s", "dump with -compare's variable", "GB/s", "dd_gb_s"},
	{"dump_alt_memory_gb_s", "dump with -compare's variable, memory phase", "GB/s", "dd_gb_s"},
	{"frozen_s", "dump: frozen time", "s", "dd_s"},
	{"restore_gb_s", "restore, bulk fill (pages_bytes / restore_seconds)", "GB/s", "populate_gb_s"},
	{"restore_memory_gb_s", "restore, bulk fill, memory phase", "GB/s", "populate_gb_s"},
	{"restore_fault_gb_s", "restore, fault-driven fill (CTCR_FILL=fault)", "GB/s", "first_touch_gb_s"},
	{"restore_fault_memory_gb_s", "restore, fault-driven fill, memory phase", "GB/s", "first_touch_gb_s"},
	{"restore_bulk_speedup", "restore: fault-driven fill time / bulk fill time", "x", ""},
	{"leave_running_frozen_s", "dump --leave-running: frozen time", "s", "dd_s"},
	{"pre_copy_frozen_s", "dump --pre-copy --leave-running: frozen time", "s", "dd_s"},
	{"pre_copy_gb_s", "pre-copy throughput (pre_copy_bytes / pre_copy_seconds)", "GB/s", "dd_gb_s"},
	{"pre_dump_gb_s", "pre-dump throughput (pages_bytes / pre_dump_seconds)", "GB/s", "dd_gb_s"},
	{"on_pre_dump_frozen_s", "dump on top of a pre-dump: frozen time", "s", "dd_s"},
	{"container_leave_running_frozen_s", "runc container: checkpoint --leave-running, frozen time", "s", "dd_s"},
	{"zstd_dump_gb_s", "dump --compress zstd (memory bytes / dump_seconds)", "GB/s", "dd_gb_s"},
	{"zstd_size_ratio", "dump --compress zstd: pages on disk / memory bytes", "", ""},
	{"zstd_restore_gb_s", "restore of the zstd dump (memory bytes / restore_seconds)", "GB/s", "populate_gb_s"},
	{"dump_max_rss_mib", "ctcr peak RSS, dump", "MiB", "rss_bound_mib"},
	{"restore_max_rss_mib", "ctcr peak RSS, restore (bulk fill)", "MiB", "rss_bound_mib"},
	{"dump_s", "dump time", "s", "dd_s"},
	{"restore_s", "restore time (bulk fill)", "s", "populate_s"},
}

func main() {
	flag.Parse()
	if err := bench(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func bench() error {
	ctcr, err := harness.PrepareBench(*ctcrFlag)
	if err != nil {
		return err
	}
	help, _ := exec.Command(ctcr, "dump", "--help").CombinedOutput()
	compress := strings.Contains(string(help), "--compress")
	if !compress {
		fmt.Fprintln(os.Stderr, "bench: ctcr dump --help has no --compress: the zstd rows are left out")
	}
	work, err := os.MkdirTemp("", "ctcr-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bigmem := filepath.Join(work, "bigmem")
	if out, err := exec.Command("gcc", "-O2", "-Wall", "-Werror", "-o", bigmem, *workloadFlag).CombinedOutput(); err != nil {
		return fmt.Errorf("gcc %s: %v\n%s", *workloadFlag, err, out)
	}
	images, unmount, err := imageFS(work, int64(*mibFlag)<<20)
	if err != nil {
		return err
	}
	defer unmount()

	var ct *benchContainer
	if !*dumpOnlyFlag {
		if ct, err = startBenchContainer(work); err != nil {
			return err
		}
		defer ct.delete()
	}

	var runs []run
	for i := 0; i < *runsFlag; i++ {
		r, err := oneRun(ctcr, bigmem, work, images, i, compress, ct)
		if err != nil {
			return fmt.Errorf("run %d: %w", i+1, err)
		}
		runs = append(runs, r)
		fmt.Fprintf(os.Stderr, "run %d: dump %.2f GB/s (%.2f of dd), restore %.2f GB/s (%.2f of populate), fault-driven %.2f GB/s; frozen %.3f s, --leave-running %.3f s, --pre-copy %.3f s, container --leave-running %.3f s\n",
			i+1, r["dump_gb_s"], r["dump_gb_s_per_dd_gb_s"], r["restore_gb_s"], r["restore_gb_s_per_populate_gb_s"],
			r["restore_fault_gb_s"], r["frozen_s"], r["leave_running_frozen_s"], r["pre_copy_frozen_s"], r["container_leave_running_frozen_s"])
	}
	return report(runs, compress)
}

// imageFS mounts a tmpfs big enough for the images, so disk speed does not
// count; if mounting fails it falls back to /dev/shm.
func imageFS(work string, bytes int64) (string, func(), error) {
	dir := filepath.Join(work, "images")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", nil, err
	}
	size := bytes + bytes/4 + 64<<20
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.FormatInt(size, 10)); err == nil {
		return dir, func() { unix.Unmount(dir, unix.MNT_DETACH) }, nil
	}
	shm, err := os.MkdirTemp("/dev/shm", "ctcr-bench-")
	if err != nil {
		return "", nil, fmt.Errorf("no tmpfs for the images: %w", err)
	}
	return shm, func() { os.RemoveAll(shm) }, nil
}

// dumpReport and restoreReport are the fields of ctcr's --json reports
// the bench reads.
type dumpReport struct {
	PagesBytes     int64   `json:"pages_bytes"`
	FrozenSeconds  float64 `json:"frozen_seconds"`
	DumpSeconds    float64 `json:"dump_seconds"`
	MemorySeconds  float64 `json:"memory_seconds"`
	PreCopyBytes   int64   `json:"pre_copy_bytes"`
	PreCopySeconds float64 `json:"pre_copy_seconds"`
	PreDumpSeconds float64 `json:"pre_dump_seconds"`
}

type restoreReport struct {
	PagesBytes     int64   `json:"pages_bytes"`
	RestoreSeconds float64 `json:"restore_seconds"`
	MemorySeconds  float64 `json:"memory_seconds"`
}

func gbs(b int64, s float64) float64 {
	if s <= 0 {
		return 0
	}
	return float64(b) / s / 1e9
}

// restoreAs restores img with -d, CTCR_FILL set to fill ("" for the
// default bulk fill), and returns ctcr's report and peak RSS.
func restoreAs(ctcr, img, fill string) (restoreReport, float64, error) {
	var rs restoreReport
	var env []string
	if fill != "" {
		env = []string{"CTCR_FILL=" + fill}
	}
	rss, err := ctcrJSONRSS(ctcr, env, &rs, "restore", "-D", img, "-d", "--json")
	return rs, rss, err
}

// killRestored kills the restored workload pid and waits until its PID is
// free again, for the next restore of the same image.
func killRestored(pid int) error {
	unix.Kill(pid, unix.SIGKILL)
	var ws unix.WaitStatus
	unix.Wait4(pid, &ws, unix.WALL, nil)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the killed workload %d is still there after 30 s", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func oneRun(ctcr, bigmem, work, images string, i int, compress bool, ct *benchContainer) (run, error) {
	r := run{"rss_bound_mib": rssBound}
	n := *mibFlag << 20
	var err error
	if r["first_touch_gb_s"], err = firstTouch(n); err != nil {
		return r, err
	}
	if r["populate_gb_s"], err = populate(n); err != nil {
		return r, err
	}
	if r["dd_gb_s"], err = ddBandwidth(images, *mibFlag); err != nil {
		return r, err
	}
	fmt.Fprintf(os.Stderr, "run %d: first touch %.2f GB/s, populate %.2f GB/s, dd to the image tmpfs %.2f GB/s\n", i+1, r["first_touch_gb_s"], r["populate_gb_s"], r["dd_gb_s"])

	dir := filepath.Join(work, fmt.Sprintf("run%d", i))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return r, err
	}
	out, err := os.Create(filepath.Join(dir, "out"))
	if err != nil {
		return r, err
	}
	defer out.Close()
	cmd := exec.Command(bigmem, dir, strconv.Itoa(*mibFlag))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return r, err
	}
	pid := cmd.Process.Pid
	restored := false
	defer func() {
		if !restored {
			cmd.Process.Kill()
			cmd.Wait()
		} else if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			killRestored(pid)
		}
	}()
	if err := harness.WaitFile(filepath.Join(dir, "ready"), 2*time.Minute); err != nil {
		return r, err
	}
	tpid := strconv.Itoa(pid)

	img := filepath.Join(images, fmt.Sprintf("img%d", i))
	defer os.RemoveAll(img)
	var d dumpReport
	var env []string
	if *dumpOnlyFlag && *compareFlag != "" && i%2 == 1 {
		env = []string{*compareFlag} // compareDumps alternates the order
	}
	if r["dump_max_rss_mib"], err = ctcrJSONRSS(ctcr, env, &d, "dump", "-t", tpid, "-D", img, "--json"); err != nil {
		return r, err
	}
	cmd.Wait() // killed by the dump; reaped, its PID is free
	restored = true
	mem := d.PagesBytes // the memory dumped, the base of every throughput
	r["pages_bytes"] = float64(mem)
	r["dd_s"] = float64(mem) / (r["dd_gb_s"] * 1e9)
	r["populate_s"] = float64(mem) / (r["populate_gb_s"] * 1e9)
	r["dump_gb_s"] = gbs(mem, d.DumpSeconds)
	r["dump_memory_gb_s"] = gbs(mem, d.MemorySeconds)
	r["frozen_s"] = d.FrozenSeconds
	r["dump_s"] = d.DumpSeconds
	if *dumpOnlyFlag {
		if err := compareDumps(ctcr, img, tpid, i, r); err != nil {
			return r, err
		}
		return r, checkRun(r, dir, pid)
	}

	// Both fills from the same image, in alternating order; the one
	// restored last keeps running.
	fills := []string{"", "fault"}
	if i%2 == 1 {
		fills = []string{"fault", ""}
	}
	for k, fill := range fills {
		rs, rss, err := restoreAs(ctcr, img, fill)
		if err != nil {
			return r, err
		}
		if fill == "" {
			r["restore_gb_s"] = gbs(mem, rs.RestoreSeconds)
			r["restore_memory_gb_s"] = gbs(mem, rs.MemorySeconds)
			r["restore_s"] = rs.RestoreSeconds
			r["restore_max_rss_mib"] = rss
		} else {
			r["restore_fault_gb_s"] = gbs(mem, rs.RestoreSeconds)
			r["restore_fault_memory_gb_s"] = gbs(mem, rs.MemorySeconds)
			r["restore_fault_s"] = rs.RestoreSeconds
		}
		if k == 0 {
			if err := killRestored(pid); err != nil {
				return r, err
			}
		}
	}
	r["restore_bulk_speedup"] = r["restore_fault_s"] / r["restore_s"]
	// The images are on a tmpfs sized for one checkpoint.
	os.RemoveAll(img)

	var lr dumpReport
	if err := ctcrJSON(ctcr, &lr, "dump", "--leave-running", "-t", tpid, "-D", img, "--json"); err != nil {
		return r, err
	}
	r["leave_running_frozen_s"] = lr.FrozenSeconds
	os.RemoveAll(img)

	var pc dumpReport
	if err := ctcrJSON(ctcr, &pc, "dump", "--pre-copy", "--leave-running", "-t", tpid, "-D", img, "--json"); err != nil {
		return r, err
	}
	r["pre_copy_frozen_s"] = pc.FrozenSeconds
	r["pre_copy_gb_s"] = gbs(pc.PreCopyBytes, pc.PreCopySeconds)
	os.RemoveAll(img)

	// A pre-dump, then a dump on top of it.
	pre := img + "-pre"
	var pd dumpReport
	if err := ctcrJSON(ctcr, &pd, "pre-dump", "-t", tpid, "-D", pre, "--json"); err != nil {
		return r, err
	}
	r["pre_dump_gb_s"] = gbs(pd.PagesBytes, pd.PreDumpSeconds)
	var od dumpReport
	if err := ctcrJSON(ctcr, &od, "dump", "--prev-images-dir", "../"+filepath.Base(pre), "--leave-running", "-t", tpid, "-D", img, "--json"); err != nil {
		return r, err
	}
	r["on_pre_dump_frozen_s"] = od.FrozenSeconds
	os.RemoveAll(img)
	os.RemoveAll(pre)

	if compress {
		// Dumped (and killed) compressed, restored from that image: the
		// workload's checksum check below covers the decompression.
		var zd dumpReport
		if err := ctcrJSON(ctcr, &zd, "dump", "--compress", "zstd", "-t", tpid, "-D", img, "--json"); err != nil {
			return r, err
		}
		if err := killRestored(pid); err != nil {
			return r, err
		}
		r["zstd_dump_gb_s"] = gbs(mem, zd.DumpSeconds)
		disk, err := pagesOnDisk(img)
		if err != nil {
			return r, err
		}
		r["zstd_size_ratio"] = float64(disk) / float64(mem)
		rs, _, err := restoreAs(ctcr, img, "")
		if err != nil {
			return r, err
		}
		r["zstd_restore_gb_s"] = gbs(mem, rs.RestoreSeconds)
		os.RemoveAll(img)
	}
	if ct != nil {
		if r["container_leave_running_frozen_s"], err = ct.frozen(ctcr, img); err != nil {
			return r, err
		}
	}

	return r, checkRun(r, dir, pid)
}

// compareDumps is the rest of a -dump-only run, whose workload the first
// dump killed: it restores the workload from img, and with -compare
// dumps it again with the variable set and restores it again, leaving it
// running. Odd runs swap which of the two dumps is the first, whose
// figures go to the dump rows or the dump_alt rows accordingly.
func compareDumps(ctcr, img, tpid string, i int, r run) error {
	if _, _, err := restoreAs(ctcr, img, ""); err != nil {
		return err
	}
	os.RemoveAll(img)
	if *compareFlag == "" {
		return nil
	}
	pid, _ := strconv.Atoi(tpid)
	first := run{"dump_gb_s": r["dump_gb_s"], "dump_memory_gb_s": r["dump_memory_gb_s"]}
	var d dumpReport
	env := []string{*compareFlag}
	if i%2 == 1 {
		// The first dump had the variable: this one has not.
		env = nil
	}
	if _, err := ctcrJSONRSS(ctcr, env, &d, "dump", "-t", tpid, "-D", img, "--json"); err != nil {
		return err
	}
	if err := killRestored(pid); err != nil { // reaps it
		return err
	}
	second := run{"dump_gb_s": gbs(d.PagesBytes, d.DumpSeconds), "dump_memory_gb_s": gbs(d.PagesBytes, d.MemorySeconds)}
	plain, alt := first, second
	if i%2 == 1 {
		plain, alt = second, first
	}
	r["dump_gb_s"], r["dump_memory_gb_s"] = plain["dump_gb_s"], plain["dump_memory_gb_s"]
	r["dump_alt_gb_s"], r["dump_alt_memory_gb_s"] = alt["dump_gb_s"], alt["dump_memory_gb_s"]
	if _, _, err := restoreAs(ctcr, img, ""); err != nil {
		return err
	}
	os.RemoveAll(img)
	return nil
}

// checkRun asks the restored workload pid to check its memory, waits
// for its verdict and adds the run's ratios to r.
func checkRun(r run, dir string, pid int) error {
	if err := os.WriteFile(filepath.Join(dir, "check"), nil, 0o644); err != nil {
		return err
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, unix.WALL, nil); err != nil {
		return fmt.Errorf("wait for the restored workload %d: %w", pid, err)
	}
	res, _ := os.ReadFile(filepath.Join(dir, "result"))
	if !ws.Exited() || ws.ExitStatus() != 0 || !strings.HasPrefix(string(res), "PASS") {
		return fmt.Errorf("the restored workload did not pass (wait status %#x): %s", uint32(ws), res)
	}
	for _, rw := range rows {
		if rw.limit != "" && r[rw.limit] > 0 {
			if _, ok := r[rw.key]; ok {
				r[rw.key+"_per_"+rw.limit] = r[rw.key] / r[rw.limit]
			}
		}
	}
	return nil
}

// pagesOnDisk adds up the sizes of the pages images in dir.
func pagesOnDisk(dir string) (int64, error) {
	var total int64
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "pages-") {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return 0, err
		}
		total += fi.Size()
	}
	return total, nil
}

// freshMapping maps n bytes of fresh anonymous memory.
func freshMapping(n int) ([]byte, error) {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("mmap %d bytes: %w", n, err)
	}
	return b, nil
}

// firstTouch times a memset of a fresh anonymous mapping of n bytes: page
// faults, zeroing and the write, as a restore that fills new memory by
// faulting pays.
func firstTouch(n int) (float64, error) {
	b, err := freshMapping(n)
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(b)
	t0 := time.Now()
	fill(b)
	return float64(n) / time.Since(t0).Seconds() / 1e9, nil
}

// populate times MADV_POPULATE_WRITE of a fresh anonymous mapping of n
// bytes: the kernel allocates and zeroes every page, with no user fault.
// A restore cannot put its pages in new memory faster than this.
func populate(n int) (float64, error) {
	b, err := freshMapping(n)
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(b)
	t0 := time.Now()
	if err := unix.Madvise(b, unix.MADV_POPULATE_WRITE); err != nil {
		return 0, fmt.Errorf("madvise(MADV_POPULATE_WRITE) of %d bytes: %w", n, err)
	}
	return float64(n) / time.Since(t0).Seconds() / 1e9, nil
}

// fill writes a non-zero byte pattern over b, doubling with copy (memmove).
func fill(b []byte) {
	if len(b) == 0 {
		return
	}
	const seed = 4096
	for i := 0; i < seed && i < len(b); i++ {
		b[i] = byte(i*31 + 7)
	}
	for done := min(seed, len(b)); done < len(b); {
		done += copy(b[done:], b[:min(done, 64<<20)])
	}
}

// ddBandwidth times `dd if=/dev/zero of=DIR/dd bs=1M count=mib`: what
// writing into the image file system costs, the bound of a dump's page
// writes, measured in the same minute as the dump.
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

// ctcrJSON runs ctcr and decodes the first line of its stdout into v.
func ctcrJSON(ctcr string, v any, args ...string) error {
	_, err := ctcrJSONRSS(ctcr, nil, v, args...)
	return err
}

// ctcrJSONRSS is ctcrJSON with env added to the environment, and returns
// ctcr's peak RSS in MiB. It runs ctcr under /usr/bin/time, which forks
// it: the ru_maxrss of a process that os/exec starts counts this
// process's own peak (its vfork child shares the bench's memory until
// exec, and Linux keeps the larger high-water mark across exec), and the
// bench holds gigabytes.
func ctcrJSONRSS(ctcr string, env []string, v any, args ...string) (float64, error) {
	rssFile, err := os.CreateTemp("", "ctcr-bench-rss-")
	if err != nil {
		return 0, err
	}
	rssFile.Close()
	defer os.Remove(rssFile.Name())
	cmd := exec.Command("/usr/bin/time", append([]string{"-f", "%M", "-o", rssFile.Name(), ctcr}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("%sctcr %s: %v: %s", strings.Join(append(env, ""), " "), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if err := json.Unmarshal([]byte(line), v); err != nil {
		return 0, fmt.Errorf("ctcr %s printed %q: %w", strings.Join(args, " "), out, err)
	}
	b, err := os.ReadFile(rssFile.Name())
	if err != nil {
		return 0, err
	}
	kib, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
	if err != nil {
		return 0, fmt.Errorf("/usr/bin/time printed %q: %w", b, err)
	}
	return kib / 1024, nil
}

// median of key over the runs that have it; ok is false if none has.
func median(runs []run, key string) (float64, bool) {
	var v []float64
	for _, r := range runs {
		if x, ok := r[key]; ok {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return 0, false
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2], true
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2, true
}

// limitNames says in the report what each limit key is.
var limitNames = map[string]string{
	"first_touch_gb_s": "first touch",
	"populate_gb_s":    "populate",
	"dd_gb_s":          "dd",
	"dd_s":             "dd time",
	"populate_s":       "populate time",
	"rss_bound_mib":    "128 MiB",
}

func report(runs []run, compress bool) error {
	med := map[string]float64{}
	for _, r := range runs {
		for k := range r {
			if _, done := med[k]; !done {
				med[k], _ = median(runs, k)
			}
		}
	}
	if *jsonFlag {
		return json.NewEncoder(os.Stdout).Encode(map[string]any{
			"mib": *mibFlag, "runs": runs, "median": med, "compress": compress,
		})
	}
	fmt.Printf("ctcr bench: %d MiB of random anonymous memory, images on tmpfs, median of %d runs;\n", *mibFlag, len(runs))
	fmt.Printf("a ratio is the measure divided by its limit in the same run (median of the runs' ratios)\n\n")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "measure\tmedian\tunit\tlimit\tratio\truns")
	for _, rw := range rows {
		m, ok := med[rw.key]
		if !ok {
			continue // the zstd rows without --compress
		}
		var each []string
		for _, r := range runs {
			each = append(each, fmt.Sprintf("%.3f", r[rw.key]))
		}
		limit, ratio := "", ""
		if rw.limit != "" {
			limit = limitNames[rw.limit]
			ratio = fmt.Sprintf("%.2f", med[rw.key+"_per_"+rw.limit])
		}
		fmt.Fprintf(tw, "%s\t%.3f\t%s\t%s\t%s\t%s\n", rw.name, m, rw.unit, limit, ratio, strings.Join(each, " "))
	}
	return tw.Flush()
}
