// Command bench measures ctcr's dump and restore throughput and the time a
// task stays frozen, next to the machine's own memory bandwidth measured in
// the same run: on a shared machine absolute times are noise, the ratios
// are what to compare.
//
// Each run: first-touch bandwidth (memset of a fresh anonymous mapping),
// warm memcpy bandwidth (copy between two touched buffers), `dd` of -mib
// MiB from /dev/zero into the image tmpfs (the bound of any dump that
// writes its pages there: the dump is reported as a ratio to it), then the bigmem
// workload with -mib MiB of random memory is dumped into a tmpfs with
// `ctcr dump --json`, restored with `ctcr restore -d --json` and must pass
// its own checksum check. The medians of -runs runs are printed.
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
	ctcrFlag     = flag.String("ctcr", "bin/ctcr", "the ctcr binary")
	mibFlag      = flag.Int("mib", 1024, "MiB of touched random memory in the workload, and of the bandwidth buffers")
	runsFlag     = flag.Int("runs", 3, "runs; the median is reported")
	jsonFlag     = flag.Bool("json", false, "print the result as JSON")
	workloadFlag = flag.String("workload", "test/workloads/bigmem.c", "source of the bigmem workload")
)

// run is one run's measurements; GB is 1e9 bytes.
type run struct {
	FirstTouchGBs float64 `json:"first_touch_gb_s"`
	MemcpyGBs     float64 `json:"memcpy_gb_s"`
	DdGBs         float64 `json:"dd_gb_s"`
	DumpPerDd     float64 `json:"dump_per_dd"` // dump memory throughput / dd
	// Peak RSS of the ctcr process (its VmHWM, from wait4's rusage).
	DumpMaxRSSMiB    float64 `json:"dump_max_rss_mib"`
	RestoreMaxRSSMiB float64 `json:"restore_max_rss_mib"`
	PagesBytes       int64   `json:"pages_bytes"`
	DumpGBs          float64 `json:"dump_gb_s"`
	DumpMemoryGBs    float64 `json:"dump_memory_gb_s"`
	RestoreGBs       float64 `json:"restore_gb_s"`
	RestoreMemGBs    float64 `json:"restore_memory_gb_s"`
	FrozenSeconds    float64 `json:"frozen_seconds"`
	DumpSeconds      float64 `json:"dump_seconds"`
	RestoreSeconds   float64 `json:"restore_seconds"`
	DumpPerTouch     float64 `json:"dump_per_first_touch"`
	RestorePerTouch  float64 `json:"restore_per_first_touch"`
	// A second dump of the restored workload, with --pre-copy and
	// --leave-running: how long it stays frozen, and how fast the
	// pre-copy moves memory while it runs.
	PreCopyFrozenSeconds float64 `json:"pre_copy_frozen_seconds"`
	PreCopyGBs           float64 `json:"pre_copy_gb_s"`
	// Then a pre-dump and a dump on top of it (--leave-running): how
	// fast the pre-dump copies, how long the dump keeps it frozen.
	PreDumpGBs             float64 `json:"pre_dump_gb_s"`
	OnPreDumpFrozenSeconds float64 `json:"on_pre_dump_frozen_seconds"`
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

	var runs []run
	for i := 0; i < *runsFlag; i++ {
		r, err := oneRun(ctcr, bigmem, work, images, i)
		if err != nil {
			return fmt.Errorf("run %d: %w", i+1, err)
		}
		runs = append(runs, r)
		fmt.Fprintf(os.Stderr, "run %d: dump %.2f GB/s, restore %.2f GB/s, frozen %.3f s (with --pre-copy %.3f s)\n",
			i+1, r.DumpGBs, r.RestoreGBs, r.FrozenSeconds, r.PreCopyFrozenSeconds)
	}
	return report(runs)
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

func oneRun(ctcr, bigmem, work, images string, i int) (run, error) {
	var r run
	n := *mibFlag << 20
	var err error
	if r.FirstTouchGBs, err = firstTouch(n); err != nil {
		return r, err
	}
	if r.MemcpyGBs, err = memcpyBandwidth(n); err != nil {
		return r, err
	}
	if r.DdGBs, err = ddBandwidth(images, *mibFlag); err != nil {
		return r, err
	}
	fmt.Fprintf(os.Stderr, "run %d: first-touch %.2f GB/s, memcpy %.2f GB/s, dd to the image tmpfs %.2f GB/s\n", i+1, r.FirstTouchGBs, r.MemcpyGBs, r.DdGBs)

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
			unix.Kill(pid, unix.SIGKILL)
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, unix.WALL, nil)
		}
	}()
	if err := harness.WaitFile(filepath.Join(dir, "ready"), 2*time.Minute); err != nil {
		return r, err
	}

	img := filepath.Join(images, fmt.Sprintf("img%d", i))
	defer os.RemoveAll(img)
	var d struct {
		PagesBytes    int64   `json:"pages_bytes"`
		FrozenSeconds float64 `json:"frozen_seconds"`
		DumpSeconds   float64 `json:"dump_seconds"`
		MemorySeconds float64 `json:"memory_seconds"`
	}
	if r.DumpMaxRSSMiB, err = ctcrJSONRSS(ctcr, &d, "dump", "-t", strconv.Itoa(pid), "-D", img, "--json"); err != nil {
		return r, err
	}
	cmd.Wait()
	restored = true
	var rs struct {
		PagesBytes     int64   `json:"pages_bytes"`
		RestoreSeconds float64 `json:"restore_seconds"`
		MemorySeconds  float64 `json:"memory_seconds"`
	}
	if r.RestoreMaxRSSMiB, err = ctcrJSONRSS(ctcr, &rs, "restore", "-D", img, "-d", "--json"); err != nil {
		return r, err
	}
	// The images are on a tmpfs sized for one checkpoint.
	os.RemoveAll(img)
	var pc struct {
		FrozenSeconds  float64 `json:"frozen_seconds"`
		PreCopyBytes   int64   `json:"pre_copy_bytes"`
		PreCopySeconds float64 `json:"pre_copy_seconds"`
	}
	if err := ctcrJSON(ctcr, &pc, "dump", "--pre-copy", "--leave-running", "-t", strconv.Itoa(pid), "-D", img, "--json"); err != nil {
		return r, err
	}
	os.RemoveAll(img)
	// And a pre-dump, then a dump on top of it.
	pre := img + "-pre"
	var pd struct {
		PagesBytes     int64   `json:"pages_bytes"`
		PreDumpSeconds float64 `json:"pre_dump_seconds"`
	}
	if err := ctcrJSON(ctcr, &pd, "pre-dump", "-t", strconv.Itoa(pid), "-D", pre, "--json"); err != nil {
		return r, err
	}
	var od struct {
		FrozenSeconds float64 `json:"frozen_seconds"`
	}
	if err := ctcrJSON(ctcr, &od, "dump", "--prev-images-dir", "../"+filepath.Base(pre), "--leave-running", "-t", strconv.Itoa(pid), "-D", img, "--json"); err != nil {
		return r, err
	}
	os.RemoveAll(img)
	os.RemoveAll(pre)
	if err := os.WriteFile(filepath.Join(dir, "check"), nil, 0o644); err != nil {
		return r, err
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, unix.WALL, nil); err != nil {
		return r, fmt.Errorf("wait for the restored workload %d: %w", pid, err)
	}
	res, _ := os.ReadFile(filepath.Join(dir, "result"))
	if !ws.Exited() || ws.ExitStatus() != 0 || !strings.HasPrefix(string(res), "PASS") {
		return r, fmt.Errorf("the restored workload did not pass (wait status %#x): %s", uint32(ws), res)
	}

	gbs := func(b int64, s float64) float64 {
		if s <= 0 {
			return 0
		}
		return float64(b) / s / 1e9
	}
	r.PagesBytes = d.PagesBytes
	r.DumpGBs = gbs(d.PagesBytes, d.DumpSeconds)
	r.DumpMemoryGBs = gbs(d.PagesBytes, d.MemorySeconds)
	r.RestoreGBs = gbs(rs.PagesBytes, rs.RestoreSeconds)
	r.RestoreMemGBs = gbs(rs.PagesBytes, rs.MemorySeconds)
	r.FrozenSeconds = d.FrozenSeconds
	r.DumpSeconds = d.DumpSeconds
	r.RestoreSeconds = rs.RestoreSeconds
	r.DumpPerTouch = r.DumpGBs / r.FirstTouchGBs
	r.DumpPerDd = r.DumpMemoryGBs / r.DdGBs
	r.RestorePerTouch = r.RestoreGBs / r.FirstTouchGBs
	r.PreCopyFrozenSeconds = pc.FrozenSeconds
	r.PreCopyGBs = gbs(pc.PreCopyBytes, pc.PreCopySeconds)
	r.PreDumpGBs = gbs(pd.PagesBytes, pd.PreDumpSeconds)
	r.OnPreDumpFrozenSeconds = od.FrozenSeconds
	return r, nil
}

// firstTouch times a memset of a fresh anonymous mapping of n bytes: page
// faults, zeroing and the write, as a restore that fills new memory pays.
func firstTouch(n int) (float64, error) {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0, fmt.Errorf("mmap %d bytes: %w", n, err)
	}
	defer unix.Munmap(b)
	t0 := time.Now()
	fill(b)
	return float64(n) / time.Since(t0).Seconds() / 1e9, nil
}

// memcpyBandwidth times a copy between two already touched buffers.
func memcpyBandwidth(n int) (float64, error) {
	src, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(src)
	dst, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(dst)
	fill(src)
	fill(dst)
	t0 := time.Now()
	copy(dst, src)
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
	_, err := ctcrJSONRSS(ctcr, v, args...)
	return err
}

// ctcrJSONRSS is ctcrJSON, and returns ctcr's peak RSS in MiB. It runs
// ctcr under /usr/bin/time, which forks it: the ru_maxrss of a process
// that os/exec starts counts this process's own peak (its vfork child
// shares the bench's memory until exec, and Linux keeps the larger
// high-water mark across exec), and the bench holds gigabytes.
func ctcrJSONRSS(ctcr string, v any, args ...string) (float64, error) {
	rssFile, err := os.CreateTemp("", "ctcr-bench-rss-")
	if err != nil {
		return 0, err
	}
	rssFile.Close()
	defer os.Remove(rssFile.Name())
	cmd := exec.Command("/usr/bin/time", append([]string{"-f", "%M", "-o", rssFile.Name(), ctcr}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("ctcr %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
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

func median(runs []run, f func(run) float64) float64 {
	v := make([]float64, len(runs))
	for i, r := range runs {
		v[i] = f(r)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func report(runs []run) error {
	type row struct {
		key, name, unit string
		f               func(run) float64
	}
	rows := []row{
		{"first_touch_gb_s", "first-touch bandwidth (memset of fresh memory)", "GB/s", func(r run) float64 { return r.FirstTouchGBs }},
		{"memcpy_gb_s", "memcpy bandwidth (warm buffers)", "GB/s", func(r run) float64 { return r.MemcpyGBs }},
		{"dd_gb_s", "dd bandwidth into the image tmpfs", "GB/s", func(r run) float64 { return r.DdGBs }},
		{"dump_gb_s", "dump throughput (pages_bytes / dump_seconds)", "GB/s", func(r run) float64 { return r.DumpGBs }},
		{"dump_memory_gb_s", "dump memory throughput (pages_bytes / memory_seconds)", "GB/s", func(r run) float64 { return r.DumpMemoryGBs }},
		{"restore_gb_s", "restore throughput (pages_bytes / restore_seconds)", "GB/s", func(r run) float64 { return r.RestoreGBs }},
		{"restore_memory_gb_s", "restore memory throughput (pages_bytes / memory_seconds)", "GB/s", func(r run) float64 { return r.RestoreMemGBs }},
		{"frozen_seconds", "frozen time", "s", func(r run) float64 { return r.FrozenSeconds }},
		{"pre_copy_frozen_seconds", "frozen time with --pre-copy (--leave-running)", "s", func(r run) float64 { return r.PreCopyFrozenSeconds }},
		{"pre_copy_gb_s", "pre-copy throughput (pre_copy_bytes / pre_copy_seconds)", "GB/s", func(r run) float64 { return r.PreCopyGBs }},
		{"pre_dump_gb_s", "pre-dump throughput (pages_bytes / pre_dump_seconds)", "GB/s", func(r run) float64 { return r.PreDumpGBs }},
		{"on_pre_dump_frozen_seconds", "frozen time of a dump on top of a pre-dump", "s", func(r run) float64 { return r.OnPreDumpFrozenSeconds }},
		{"dump_seconds", "dump time", "s", func(r run) float64 { return r.DumpSeconds }},
		{"restore_seconds", "restore time", "s", func(r run) float64 { return r.RestoreSeconds }},
		{"dump_per_first_touch", "dump / first-touch", "", func(r run) float64 { return r.DumpPerTouch }},
		{"dump_per_dd", "dump memory throughput / dd", "", func(r run) float64 { return r.DumpPerDd }},
		{"dump_max_rss_mib", "ctcr peak RSS while dumping", "MiB", func(r run) float64 { return r.DumpMaxRSSMiB }},
		{"restore_max_rss_mib", "ctcr peak RSS while restoring", "MiB", func(r run) float64 { return r.RestoreMaxRSSMiB }},
		{"restore_per_first_touch", "restore / first-touch", "", func(r run) float64 { return r.RestorePerTouch }},
	}
	if *jsonFlag {
		med := map[string]float64{}
		for _, rw := range rows {
			med[rw.key] = median(runs, rw.f)
		}
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"mib": *mibFlag, "runs": runs, "median": med})
	}
	fmt.Printf("ctcr bench: %d MiB of random anonymous memory, median of %d runs\n\n", *mibFlag, len(runs))
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "measure\tmedian\tunit\truns")
	for _, rw := range rows {
		var each []string
		for _, r := range runs {
			each = append(each, fmt.Sprintf("%.3f", rw.f(r)))
		}
		fmt.Fprintf(tw, "%s\t%.3f\t%s\t%s\n", rw.name, median(runs, rw.f), rw.unit, strings.Join(each, " "))
	}
	return tw.Flush()
}
