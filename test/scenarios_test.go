package test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// wakeKind says how the test tells a restored workload to check itself.
type wakeKind int

const (
	// byCheckFile: create DIR/check; the workload polls for it.
	byCheckFile wakeKind = iota
	// bySIGUSR1: the workload is blocked in a syscall; once the restored
	// task is back in one of the syscalls listed, send it SIGUSR1.
	bySIGUSR1
)

// Syscall numbers on x86-64, as /proc/PID/syscall shows them.
const (
	sysPause          = 34
	sysRtSigsuspend   = 130
	sysFutex          = 202
	sysRestartSyscall = 219
	sysClockNanosleep = 230
)

type scenario struct {
	name     string
	workload string
	args     []string
	wake     wakeKind
	// blockedIn lists the syscalls the workload must be blocked in before
	// the dump (the first one) and again after restore (any of them).
	blockedIn []int
	// detached restores with -d --pidfile; the task is then re-parented to
	// this test process, which reaps it.
	detached bool
	// json dumps and restores with --json and checks both reports; the dump
	// must report at least minPagesBytes.
	json          bool
	minPagesBytes int64
	// beforeRestore runs after the dump, while the task is gone.
	beforeRestore func(t *testing.T, w *workload)
	// afterPass runs once the workload passed, for checks from outside.
	afterPass func(t *testing.T, w *workload)
}

var scenarios = []scenario{
	{
		name:      "a counting loop goes on from where it was dumped",
		workload:  "counter",
		afterPass: outputContinues,
	},
	{
		name:      "a statically linked counting loop goes on from where it was dumped",
		workload:  "counter-static",
		afterPass: outputContinues,
	},
	{
		name:     "a counter restored with -d runs on as an orphan of ctcr and exits 0",
		workload: "counter",
		detached: true,
	},
	{
		name:          "256 MiB of random memory keeps its checksum and the reports add up",
		workload:      "bigmem",
		args:          []string{"256"},
		detached:      true,
		json:          true,
		minPagesBytes: 256 << 20,
	},
	{
		name:     "every kind of mapping keeps its address, protection and content",
		workload: "mappings",
	},
	{
		name:     "handlers, the blocked mask, a pending queued signal and an interval timer survive",
		workload: "signals",
	},
	{
		name:     "open files keep offsets, flags and sharing, with the cwd and the umask",
		workload: "files",
		beforeRestore: func(t *testing.T, w *workload) {
			f, err := os.OpenFile(w.path("app.log"), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteString("external\n"); err != nil {
				t.Fatal(err)
			}
		},
		afterPass: func(t *testing.T, w *workload) {
			if got, want := w.read("app.log"), "line1\nexternal\nline2\n"; got != want {
				t.Errorf("app.log is %q, want %q: an O_APPEND write must land after what was appended while the task was dumped", got, want)
			}
		},
	},
	{
		name:      "a task dumped inside nanosleep goes on and handles a signal",
		workload:  "blocked",
		args:      []string{"nanosleep"},
		wake:      bySIGUSR1,
		blockedIn: []int{sysClockNanosleep, sysRestartSyscall},
	},
	{
		name:      "a task dumped inside pause stays in it until a signal's handler has run",
		workload:  "blocked",
		args:      []string{"pause"},
		wake:      bySIGUSR1,
		blockedIn: []int{sysPause},
	},
	{
		name:      "a task dumped inside sigsuspend wakes on a signal and gets its own mask back",
		workload:  "blocked",
		args:      []string{"sigsuspend"},
		wake:      bySIGUSR1,
		blockedIn: []int{sysRtSigsuspend},
	},
	{
		name:      "a task dumped inside a futex wait returns from it when its word is set",
		workload:  "blocked",
		args:      []string{"futex"},
		wake:      bySIGUSR1,
		blockedIn: []int{sysFutex},
	},
}

// TestDumpRestore dumps each workload (killing it), restores it and
// expects it to verify its own state and exit 0 with PASS.
func TestDumpRestore(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			runScenario(t, sc, func(w *workload, img string) *dumpReport {
				return dump(t, w, img, sc.json, sc.minPagesBytes)
			})
		})
	}
}

// runScenario starts sc's workload, has dumpIt dump it into img
// (killing it; the report may be nil), restores it as sc says and lets
// it check itself.
func runScenario(t *testing.T, sc scenario, dumpIt func(w *workload, img string) *dumpReport) {
	needCtcr(t)
	w := startWorkload(t, sc.workload, sc.args...)
	if sc.wake == bySIGUSR1 {
		waitBlocked(t, w, sc.blockedIn[:1], 10*time.Second)
	}
	img := filepath.Join(t.TempDir(), "img")
	dumpRep := dumpIt(w, img)
	if sc.beforeRestore != nil {
		sc.beforeRestore(t, w)
	}
	if sc.detached {
		restoreDetached(t, w, img, sc, dumpRep)
	} else {
		restoreForeground(t, w, img, sc, dumpRep)
	}
	if !t.Failed() && sc.afterPass != nil {
		sc.afterPass(t, w)
	}
}

// TestWorkloadsCheckThemselves runs each workload without ctcr: told to
// check right away, it must pass. This separates a workload bug from an
// engine bug.
func TestWorkloadsCheckThemselves(t *testing.T) {
	seen := map[string]bool{}
	for _, sc := range scenarios {
		key := sc.workload + " " + strings.Join(sc.args, " ")
		if seen[key] {
			continue
		}
		seen[key] = true
		t.Run(fmt.Sprintf("%s passes when it is never dumped", strings.TrimSpace(key)), func(t *testing.T) {
			w := startWorkload(t, sc.workload, sc.args...)
			if sc.beforeRestore != nil {
				sc.beforeRestore(t, w)
			}
			wake(t, w, sc)
			ps, err := w.waitOriginal(60 * time.Second)
			if err != nil {
				t.Fatalf("%v%s", err, w.report())
			}
			if ps.ExitCode() != 0 {
				t.Errorf("%s: %v, want exit status 0", w.name, ps)
			}
			w.assertPassed()
			if !t.Failed() && sc.afterPass != nil {
				sc.afterPass(t, w)
			}
		})
	}
}

// TestWorkloadsDetectDifferences shows that the checks can fail: a
// workload whose saved state is altered must report FAIL and exit 1.
func TestWorkloadsDetectDifferences(t *testing.T) {
	cases := []struct {
		name, workload string
		args           []string
		key, value     string
		want           string
	}{
		{"counter reports a counter that went backwards", "counter", nil, "counter", "99999999999999", "did not go on"},
		{"bigmem reports a checksum that differs", "bigmem", []string{"8"}, "sum", "0x1", "checksum"},
		{"counter reports a changed PID", "counter", nil, "pid", "1", "getpid()"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := startWorkload(t, c.workload, c.args...)
			ready := w.read("ready")
			var lines []string
			for _, l := range strings.Split(ready, "\n") {
				if strings.HasPrefix(l, c.key+" ") {
					l = c.key + " " + c.value
				}
				lines = append(lines, l)
			}
			if err := os.WriteFile(w.path("ready"), []byte(strings.Join(lines, "\n")), 0o644); err != nil {
				t.Fatal(err)
			}
			w.requestCheck()
			ps, err := w.waitOriginal(30 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			res := w.read("result")
			if ps.ExitCode() != 1 || !strings.HasPrefix(res, "FAIL: ") || !strings.Contains(res, c.want) {
				t.Errorf("with %s altered in ready: %v, result %q; want exit status 1 and FAIL mentioning %q", c.key, ps, res, c.want)
			}
		})
	}
}

// dumpReport is what `ctcr dump --json` prints.
type dumpReport struct {
	PID           int     `json:"pid"`
	Dir           string  `json:"dir"`
	Tasks         int     `json:"tasks"`
	PagesBytes    int64   `json:"pages_bytes"`
	FrozenSeconds float64 `json:"frozen_seconds"`
	DumpSeconds   float64 `json:"dump_seconds"`
	MemorySeconds float64 `json:"memory_seconds"`
}

// restoreReport is what `ctcr restore --json` prints.
type restoreReport struct {
	PID            int     `json:"pid"`
	Tasks          int     `json:"tasks"`
	PagesBytes     int64   `json:"pages_bytes"`
	RestoreSeconds float64 `json:"restore_seconds"`
	MemorySeconds  float64 `json:"memory_seconds"`
}

// dump checkpoints w into img with the default (kill) and reaps the
// original, which must be gone afterwards. With withJSON it checks the
// report, whose pages_bytes must be at least minPagesBytes.
func dump(t *testing.T, w *workload, img string, withJSON bool, minPagesBytes int64) *dumpReport {
	t.Helper()
	logFile := filepath.Join(t.TempDir(), "dump.log")
	w.logs = append(w.logs, logFile)
	args := []string{"dump", "-t", strconv.Itoa(w.pid), "-D", img, "-v", "--log-file", logFile}
	if withJSON {
		args = append(args, "--json")
	}
	r := runCtcr(t, 120*time.Second, args...)
	w.logs = append(w.logs, r.errP)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d, want 0; stderr: %s%s", r, r.code(), r.stderr(), w.report())
	}
	ps, err := w.waitOriginal(10 * time.Second)
	if err != nil {
		t.Fatalf("after a dump without --leave-running: %v", err)
	}
	if ps.Exited() {
		t.Errorf("the dumped task exited by itself (%v) instead of being killed by ctcr", ps)
	}
	if !withJSON {
		return nil
	}
	var rep dumpReport
	if err := json.Unmarshal([]byte(r.stdout()), &rep); err != nil {
		t.Errorf("%s printed %q: %v", r, r.stdout(), err)
		return nil
	}
	if rep.PID != w.pid || rep.Tasks != 1 || filepath.Clean(rep.Dir) != img {
		t.Errorf("dump --json: pid %d tasks %d dir %q, want %d 1 %q", rep.PID, rep.Tasks, rep.Dir, w.pid, img)
	}
	if rep.PagesBytes < minPagesBytes || rep.PagesBytes%4096 != 0 {
		t.Errorf("dump --json: pages_bytes %d, want a multiple of 4096 and at least %d", rep.PagesBytes, minPagesBytes)
	}
	if !(rep.FrozenSeconds > 0) || !(rep.DumpSeconds > 0) || rep.MemorySeconds < 0 || rep.MemorySeconds > rep.DumpSeconds {
		t.Errorf("dump --json: frozen_seconds %g dump_seconds %g memory_seconds %g: want positive times, memory within dump",
			rep.FrozenSeconds, rep.DumpSeconds, rep.MemorySeconds)
	}
	t.Logf("dump: %d bytes of pages, frozen %.3f s, dump %.3f s, memory %.3f s", rep.PagesBytes, rep.FrozenSeconds, rep.DumpSeconds, rep.MemorySeconds)
	return &rep
}

// checkRestoreReport checks the JSON ctcr restore printed against the dump's.
func checkRestoreReport(t *testing.T, out string, w *workload, d *dumpReport) {
	t.Helper()
	line, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	var rep restoreReport
	if err := json.Unmarshal([]byte(line), &rep); err != nil {
		t.Errorf("restore --json printed %q: %v", out, err)
		return
	}
	if rep.PID != w.pid || rep.Tasks != 1 {
		t.Errorf("restore --json: pid %d tasks %d, want %d 1", rep.PID, rep.Tasks, w.pid)
	}
	if d != nil && rep.PagesBytes != d.PagesBytes {
		t.Errorf("restore --json: pages_bytes %d, but the dump reported %d", rep.PagesBytes, d.PagesBytes)
	}
	if !(rep.RestoreSeconds > 0) || rep.MemorySeconds < 0 || rep.MemorySeconds > rep.RestoreSeconds {
		t.Errorf("restore --json: restore_seconds %g memory_seconds %g: want positive times, memory within restore", rep.RestoreSeconds, rep.MemorySeconds)
	}
	t.Logf("restore: %d bytes of pages, restore %.3f s, memory %.3f s", rep.PagesBytes, rep.RestoreSeconds, rep.MemorySeconds)
}

// restoreForeground runs `ctcr restore -D img`, which waits for the task
// and exits with its status: that must be 0, and the result PASS.
func restoreForeground(t *testing.T, w *workload, img string, sc scenario, d *dumpReport) {
	t.Helper()
	args := []string{"restore", "-D", img}
	if sc.wake == bySIGUSR1 || sc.json {
		args = append(args, "--json")
	}
	r := startCtcr(t, args...)
	w.logs = append(w.logs, r.errP)
	if sc.wake == bySIGUSR1 || sc.json {
		// --json prints once the task runs, before ctcr waits for it.
		deadline := time.Now().Add(60 * time.Second)
		for !strings.Contains(r.stdout(), "}") && !r.exited() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if !strings.Contains(r.stdout(), "}") {
			r.wait(time.Second)
			t.Fatalf("%s printed no JSON report (exited: %v)%s", r, r.exited(), w.report())
		}
		checkRestoreReport(t, r.stdout(), w, d)
		if st, err := readStat(w.pid); err != nil || st.ppid != r.cmd.Process.Pid {
			t.Errorf("the restored task is not a child of ctcr restore (PID %d): %s", r.cmd.Process.Pid, describe(w.pid))
		}
	}
	if sc.wake == bySIGUSR1 {
		waitBlocked(t, w, sc.blockedIn, 10*time.Second)
	}
	wake(t, w, sc)
	if err := r.wait(120 * time.Second); err != nil {
		t.Fatalf("%v%s", err, w.report())
	}
	if r.code() != 0 {
		t.Errorf("%s: exit status %d, want 0 (the restored task's own status)%s", r, r.code(), w.report())
		return
	}
	w.assertPassed()
}

// restoreDetached runs `ctcr restore -d`, which returns once the task
// runs; the task is then this process's child (subreaper) and must exit 0.
func restoreDetached(t *testing.T, w *workload, img string, sc scenario, d *dumpReport) {
	t.Helper()
	pidfile := filepath.Join(t.TempDir(), "pid")
	args := []string{"restore", "-D", img, "-d", "--pidfile", pidfile}
	if sc.json {
		args = append(args, "--json")
	}
	r := runCtcr(t, 120*time.Second, args...)
	w.logs = append(w.logs, r.errP)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d, want 0; stderr: %s%s", r, r.code(), r.stderr(), w.report())
	}
	if b, err := os.ReadFile(pidfile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(w.pid) {
		t.Errorf("--pidfile holds %q (%v), want %d", b, err, w.pid)
	}
	if sc.json {
		checkRestoreReport(t, r.stdout(), w, d)
	}
	if !exists(w.pid) {
		t.Fatalf("ctcr restore -d exited 0 but PID %d does not exist%s", w.pid, w.report())
	}
	if sc.wake == bySIGUSR1 {
		waitBlocked(t, w, sc.blockedIn, 10*time.Second)
	}
	wake(t, w, sc)
	ws, reaped, err := reap(w.pid, 120*time.Second)
	if err != nil {
		t.Fatalf("%v%s", err, w.report())
	}
	if !reaped {
		t.Errorf("the task restored with -d was not re-parented to this subreaper; its exit status is lost (%s)", describe(w.pid))
	} else if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("the restored task ended with %s, want exit status 0%s", exitText(ws), w.report())
		return
	}
	w.assertPassed()
}

// wake tells the workload to check itself.
func wake(t *testing.T, w *workload, sc scenario) {
	t.Helper()
	switch sc.wake {
	case byCheckFile:
		w.requestCheck()
	case bySIGUSR1:
		waitBlocked(t, w, sc.blockedIn, 10*time.Second)
		if err := unix.Kill(w.pid, unix.SIGUSR1); err != nil {
			t.Fatalf("kill(%d, SIGUSR1): %v%s", w.pid, err, w.report())
		}
	}
}

// waitBlocked waits until the task sleeps in one of the syscalls nrs. A
// signal sent before that could land before the syscall is re-entered,
// and a correct restore would then block forever, as any program would.
func waitBlocked(t *testing.T, w *workload, nrs []int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		nr, line := syscallNr(w.pid)
		st, err := readStat(w.pid)
		if err == nil && st.state == 'S' && slices.Contains(nrs, nr) {
			return
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("%s is not blocked in syscall %v after %v: /proc/%d/syscall says %q%s", w.name, nrs, timeout, w.pid, line, w.report())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// outputContinues checks that the counter's stdout kept its first line and
// gained the line written after restore: the restored fd 1 went on at its
// offset instead of writing over the file from the start.
func outputContinues(t *testing.T, w *workload) {
	out := w.read("out")
	first, _, _ := strings.Cut(out, "\n")
	ready := w.read("ready")
	var counter string
	for _, l := range strings.Split(ready, "\n") {
		if v, ok := strings.CutPrefix(l, "counter "); ok {
			counter = v
		}
	}
	if first != "count "+counter || !strings.Contains(out, "\nresumed: ") {
		t.Errorf("stdout should start with %q and end with the \"resumed:\" line:\n%s", "count "+counter, tail(out, 2000))
	}
}
