package test

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Fault injection: ctcr killed (SIGKILL) or told to stop (SIGTERM) at
// random moments of its work. A dump must leave the tasks running as if
// nothing happened, a restore must leave nothing behind.
//
// CTCR_STRESS=1 (make stress) raises the number of points per mode from
// a handful to 30.

// killPoints is how many moments each fault-injection test tries.
func killPoints() int {
	if os.Getenv("CTCR_STRESS") != "" {
		return 30
	}
	return 6
}

// killSignal alternates SIGKILL and SIGTERM.
func killSignal(i int) syscall.Signal {
	if i%2 == 0 {
		return unix.SIGKILL
	}
	return unix.SIGTERM
}

// interruptCtcr runs ctcr with args and sends it sig after delay, if it
// still runs then; it returns the finished run.
func interruptCtcr(t *testing.T, delay time.Duration, sig syscall.Signal, args ...string) *ctcrRun {
	t.Helper()
	r := startCtcr(t, args...)
	select {
	case <-r.done:
	case <-time.After(delay):
		r.cmd.Process.Signal(sig)
	}
	if err := r.wait(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	return r
}

// checkInterrupted checks how an interrupted ctcr ended: killed by
// SIGKILL, or, told with SIGTERM, failed (status want, or 1 before it
// began anything) saying so. A SIGTERM that comes before ctcr set up its
// handler (the Go runtime and the packages' initialisation, which take
// a while on a loaded machine) ends it as it ends any program: allowed
// only if ctcr had made nothing yet (made: the directory it writes).
func checkInterrupted(t *testing.T, r *ctcrRun, sig syscall.Signal, want int, made string) {
	t.Helper()
	stderr := r.stderr()
	_, statErr := os.Stat(made)
	switch {
	case sig == unix.SIGKILL && r.code() == 128+int(unix.SIGKILL):
	case sig == unix.SIGTERM && r.code() == want && strings.Contains(stderr, "interrupted by SIGTERM"):
	case sig == unix.SIGTERM && r.code() == 1 && strings.Contains(stderr, "interrupted by SIGTERM before anything was done"):
	case sig == unix.SIGTERM && r.code() == 128+int(unix.SIGTERM) && stderr == "" && (made == "" || statErr != nil):
	default:
		t.Errorf("%s sent %v: exit %d, stderr %q; want %d and a message saying it was interrupted by SIGTERM (or killed by SIGKILL)",
			r, sig, r.code(), strings.TrimSpace(r.stderr()), want)
	}
}

// progresses waits until the regcheck workload writes more output.
func (w *workload) progresses(timeout time.Duration) error {
	size := func() int64 {
		st, err := os.Stat(w.path("out"))
		if err != nil {
			return 0
		}
		return st.Size()
	}
	before := size()
	deadline := time.Now().Add(timeout)
	for size() == before {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s (PID %d) made no progress in %v: %s", w.name, w.pid, timeout, describe(w.pid))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// reapDumped reaps the workload's process, which a dump just killed:
// the original through its exec.Cmd, a restored one with wait4.
func (w *workload) reapDumped(t *testing.T) {
	t.Helper()
	if !w.waited {
		if _, err := w.waitOriginal(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		return
	}
	if _, _, err := reap(w.pid, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// resultPasses asks the workload (original or restored) to check itself
// and waits for its PASS.
func (w *workload) resultPasses(t *testing.T, what string) {
	t.Helper()
	w.requestCheck()
	deadline := time.Now().Add(20 * time.Second)
	for {
		res := w.read("result")
		if strings.HasPrefix(res, "PASS") {
			return
		}
		if strings.HasPrefix(res, "FAIL") || time.Now().After(deadline) {
			t.Fatalf("%s: the workload did not pass%s", what, w.report())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestKillDuringDump kills ctcr at random moments of a dump (plain,
// --leave-running, --pre-copy) and of a pre-dump of a process keeping values in its
// general and vector registers across blocking syscalls, in two
// threads, with 64 MiB of memory. After every kill the process runs on
// untraced; at the end it finds its memory and registers intact.
func TestKillDuringDump(t *testing.T) {
	needCtcr(t)
	for _, mode := range []struct {
		name string
		args []string
		kill bool // a finished dump ends the process
	}{
		{"dump", []string{"dump"}, true},
		{"leave-running", []string{"dump", "--leave-running"}, false},
		{"pre-copy", []string{"dump", "--pre-copy"}, true},
		{"pre-dump", []string{"pre-dump"}, false},
	} {
		t.Run(mode.name, func(t *testing.T) {
			w := startWorkload(t, "regcheck", "64")
			pid := strconv.Itoa(w.pid)
			tmp := t.TempDir()
			// One uninterrupted run tells how long the kills may wait.
			start := time.Now()
			timed := append([]string{mode.args[0], "-t", pid, "-D", filepath.Join(tmp, "timed")}, mode.args[1:]...)
			if mode.args[0] == "dump" {
				timed = append(timed, "--leave-running")
			}
			r := runCtcr(t, 60*time.Second, timed...)
			stopTrackers(t, w.pid)
			took := time.Since(start)
			if r.code() != 0 {
				t.Fatalf("%s: exit %d: %s", r, r.code(), r.stderr())
			}
			finished, interrupted := 0, 0
			for i := 0; i < killPoints(); i++ {
				sig := killSignal(i)
				delay := time.Duration(rand.Int63n(int64(took)))
				img := filepath.Join(tmp, fmt.Sprint(i))
				// Its log, outside the checkpoint, tells what it did
				// last if the test fails.
				logPath := filepath.Join(tmp, fmt.Sprintf("%d.log", i))
				r := interruptCtcr(t, delay, sig, append([]string{mode.args[0], "-t", pid, "-D", img, "--log-file", logPath}, mode.args[1:]...)...)
				stopTrackers(t, w.pid) // what a finished pre-dump leaves tracking the writes
				// Killed after the checkpoint was committed, once it
				// began to end the tasks as asked, the dump is done too.
				_, committed := os.Stat(filepath.Join(img, "inventory.img"))
				ended := false
				if st, err := readStat(w.pid); err != nil || st.state == 'Z' {
					ended = true
				}
				if r.code() == 0 || (mode.kill && committed == nil && ended) {
					finished++
					if mode.kill {
						w.reapDumped(t)
						if rr := runCtcr(t, 60*time.Second, "restore", "-D", img, "-d"); rr.code() != 0 {
							t.Fatalf("%s: exit %d: %s", rr, rr.code(), rr.stderr())
						}
					}
				} else {
					interrupted++
					checkInterrupted(t, r, sig, 1, img)
				}
				if err := assertRunnable(w.pid); err != nil {
					how := ""
					if !w.waited {
						if ps, werr := w.waitOriginal(2 * time.Second); werr == nil {
							how = fmt.Sprintf(" (the workload ended: %v)", ps)
						}
					} else {
						// A restored copy is the test's child as subreaper:
						// its wait status tells how it ended.
						var ws unix.WaitStatus
						if p, werr := unix.Wait4(w.pid, &ws, unix.WNOHANG, nil); werr == nil && p == w.pid {
							how = fmt.Sprintf(" (the restored workload ended: %s)", waitStatusText(ws))
						}
					}
					log, _ := os.ReadFile(logPath)
					t.Fatalf("after %s got %v %v into it (exit %d): %v%s%s\n--- ctcr's stderr:\n%s\n--- its log:\n%s", r, sig, delay, r.code(), err, how, w.report(), r.stderr(), log)
				}
				if err := w.progresses(5 * time.Second); err != nil {
					log, _ := os.ReadFile(logPath)
					t.Fatalf("after %s got %v %v into it: %v%s\n--- its log:\n%s", r, sig, delay, err, w.report(), log)
				}
			}
			t.Logf("%d dumps interrupted, %d finished first (an uninterrupted one took %v)", interrupted, finished, took)
			w.resultPasses(t, "after the interrupted dumps")
		})
	}
}

// TestKillInRunnerBatch kills ctcr at the moments a dying tracer is most
// likely to hurt: while a dumped thread runs a batch of ctcr's system
// calls, and after the batch ended but before ctcr collected its stop.
// The thread must come back to its own registers, vector registers
// included, by itself.
func TestKillInRunnerBatch(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "regcheck", "8")
	pid := strconv.Itoa(w.pid)
	// From the second dump on, batch 1 removes the scratch area the one
	// before left, 2 asks the main thread (and names the new area), 3
	// the register thread (regcheck's second), the only one that checks
	// its vector registers: 3:0 and 3:20 kill ctcr in its batch.
	for _, at := range []string{"1:0", "1:20", "2:0", "2:20", "3:0", "3:20"} {
		os.Setenv("CTCR_TEST_KILL_IN_RUN", at)
		r := startCtcr(t, "dump", "-t", pid, "-D", filepath.Join(t.TempDir(), "img"), "--leave-running")
		os.Unsetenv("CTCR_TEST_KILL_IN_RUN")
		if err := r.wait(30 * time.Second); err != nil {
			t.Fatal(err)
		}
		if r.code() != 128+int(unix.SIGKILL) {
			t.Fatalf("%s with CTCR_TEST_KILL_IN_RUN=%s: exit %d, want to be killed in batch %s: %s", r, at, r.code(), at, r.stderr())
		}
		if err := assertRunnable(w.pid); err != nil {
			t.Fatalf("ctcr killed in batch %s: %v%s", at, err, w.report())
		}
		if err := w.progresses(5 * time.Second); err != nil {
			t.Fatalf("ctcr killed in batch %s: %v%s", at, err, w.report())
		}
		if n := leftScratch(w.pid); n == 0 {
			t.Errorf("ctcr killed in batch %s left no scratch area (the test expects one to see the next dump remove it)", at)
		}
	}
	// The next dump removes what the dead ones left, and leaves it out.
	img := filepath.Join(t.TempDir(), "img")
	if r := runCtcr(t, 60*time.Second, "dump", "-t", pid, "-D", img, "--leave-running"); r.code() != 0 {
		t.Fatalf("%s after the killed ones: exit %d: %s", r, r.code(), r.stderr())
	}
	if n := leftScratch(w.pid); n != 0 {
		t.Errorf("after a dump the process still maps %d scratch areas of the killed ones", n)
	}
	w.resultPasses(t, "after ctcr was killed in its batches")
}

// TestKillInLoneCall kills ctcr inside the two calls a dumped process
// makes without the runner (the mmap of its scratch area, and the munmap
// at the end), and inside the userfaultfd call of a pre-dump and of a
// pre-copy (whose dump then maps its scratch area while the memory is
// write-protected): with the
// call's registers set, at its syscall-entry stop and at its exit stop.
// The thread must finish the call and return to its own registers,
// vector registers included, through the signal frame ctcr put under
// the call (criu/lonecall.go); before that frame it crashed.
func TestKillInLoneCall(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "regcheck", "8")
	pid := strconv.Itoa(w.pid)
	for _, c := range []struct{ cmd, at string }{
		{"dump", "1:regs"}, {"dump", "1:entry"}, {"dump", "1:exit"},
		{"dump", "2:regs"}, {"dump", "2:entry"}, {"dump", "2:exit"},
		{"pre-dump", "1:regs"}, {"pre-dump", "1:entry"}, {"pre-dump", "1:exit"},
		// A pre-copy: its userfaultfd call, then the final dump's mapping
		// of the scratch area, in memory the pre-copy write-protects.
		{"pre-copy", "1:entry"}, {"pre-copy", "2:regs"}, {"pre-copy", "2:entry"}, {"pre-copy", "2:exit"},
	} {
		args := []string{c.cmd, "-t", pid, "-D", filepath.Join(t.TempDir(), "img")}
		switch c.cmd {
		case "dump":
			args = append(args, "--leave-running", "--no-snapshot")
		case "pre-copy":
			args = []string{"dump", "--pre-copy", "--leave-running", "--no-snapshot", "-t", pid, "-D", filepath.Join(t.TempDir(), "img")}
		}
		os.Setenv("CTCR_TEST_KILL_IN_LONE_CALL", c.at)
		r := startCtcr(t, args...)
		os.Unsetenv("CTCR_TEST_KILL_IN_LONE_CALL")
		if err := r.wait(30 * time.Second); err != nil {
			t.Fatal(err)
		}
		if r.code() != 128+int(unix.SIGKILL) {
			t.Fatalf("%s with CTCR_TEST_KILL_IN_LONE_CALL=%s: exit %d, want to be killed in lone call %s: %s", r, c.at, r.code(), c.at, r.stderr())
		}
		if err := assertRunnable(w.pid); err != nil {
			t.Fatalf("ctcr %s killed in lone call %s: %v%s", c.cmd, c.at, err, w.report())
		}
		if err := w.progresses(5 * time.Second); err != nil {
			t.Fatalf("ctcr %s killed in lone call %s: %v%s", c.cmd, c.at, err, w.report())
		}
	}
	// The next dump removes what the dead ones left.
	if r := runCtcr(t, 60*time.Second, "dump", "-t", pid, "-D", filepath.Join(t.TempDir(), "img"), "--leave-running"); r.code() != 0 {
		t.Fatalf("%s after the killed ones: exit %d: %s", r, r.code(), r.stderr())
	}
	w.resultPasses(t, "after ctcr was killed in its lone calls")
}

// TestKillDuringRestore kills ctcr at random moments of a restore: the
// tasks it was making die with it, the PID comes free, no puppet stays.
func TestKillDuringRestore(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "regcheck", "32")
	img := filepath.Join(t.TempDir(), "img")
	dump(t, w, img, false, 0)
	w.reapDumped(t)
	start := time.Now()
	if r := runCtcr(t, 60*time.Second, "restore", "-D", img, "-d"); r.code() != 0 {
		t.Fatalf("%s: exit %d: %s", r, r.code(), r.stderr())
	}
	took := time.Since(start)
	killRestored := func() {
		unix.Kill(w.pid, unix.SIGKILL)
		if _, _, err := reap(w.pid, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	killRestored()
	for i := 0; i < killPoints(); i++ {
		sig := killSignal(i)
		delay := time.Duration(rand.Int63n(int64(took)))
		r := interruptCtcr(t, delay, sig, "restore", "-D", img, "-d")
		if r.code() == 0 {
			killRestored()
			continue
		}
		checkInterrupted(t, r, sig, 1, "") // what it made is checked below
		if restoredBeforeTheKill(w) {
			// The kill landed after the tasks were let go, before ctcr
			// exited: a finished restore.
			killRestored()
			continue
		}
		// What ctcr made dies with it and is re-parented to this
		// subreaper: reap it, then nothing may be left.
		waitNoLeftovers(t, 5*time.Second, fmt.Sprintf("%s got %v %v into it", r, sig, delay), w.pid)
	}
	if r := runCtcr(t, 60*time.Second, "restore", "-D", img, "-d"); r.code() != 0 {
		t.Fatalf("%s after the interrupted ones: exit %d: %s", r, r.code(), r.stderr())
	}
	w.waited = true
	w.resultPasses(t, "restored after the interrupted restores")
}

// reapZombies reaps every child of this process that has exited.
func reapZombies() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WALL|unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}

// restoredBeforeTheKill reports whether w's process runs on, untraced,
// no puppet (it runs the workload's own code, not ctcr's) and making
// progress: a restore that let its tasks go just before ctcr was killed.
// A task let go half-restored would crash or stall instead.
func restoredBeforeTheKill(w *workload) bool {
	if !exists(w.pid) {
		return false
	}
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", w.pid)); err != nil || exe == ctcrBin {
		return false
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", w.pid))
	if err != nil || !strings.Contains(string(st), "\nTracerPid:\t0\n") || strings.Contains(string(st), "\nState:\tZ") {
		return false
	}
	return w.progresses(3*time.Second) == nil
}

// waitNoLeftovers waits up to timeout, reaping what comes to this
// subreaper, until a dead ctcr run has left nothing of the tasks pids
// (ctcrLeftovers); after names the run in the failure.
func waitNoLeftovers(t *testing.T, timeout time.Duration, after string, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		reapZombies()
		var left []string
		for _, pid := range pids {
			left = append(left, ctcrLeftovers(pid)...)
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: left behind %s", after, strings.Join(left, "; "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ctcrLeftovers lists what a dead restore may have left: a task holding
// pid, or a puppet (a process running ctcr's binary).
func ctcrLeftovers(pid int) []string {
	var left []string
	if exists(pid) {
		left = append(left, describe(pid))
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p)); err == nil && exe == ctcrBin {
			left = append(left, "puppet "+describe(p))
		}
	}
	return left
}

// TestKillDuringContainerCheckpoint kills ctcr at random moments of
// `checkpoint` of a runc container: the container is thawed (by the
// guard ctcr leaves when it freezes it) and counts on, or, when the
// checkpoint finished first, is restored.
func TestKillDuringContainerCheckpoint(t *testing.T) {
	c := newContainer(t, "kill", nil)
	c.start()
	c.waitCount(t, 3, 10*time.Second)
	tmp := t.TempDir()
	start := time.Now()
	checkpointContainer(t, c, filepath.Join(tmp, "timed"), "--leave-running")
	took := time.Since(start)
	finished := 0
	for i := 0; i < killPoints(); i++ {
		sig := killSignal(i)
		delay := time.Duration(rand.Int63n(int64(took)))
		dir := filepath.Join(tmp, fmt.Sprint(i))
		r := interruptCtcr(t, delay, sig, "checkpoint", c.id, "-D", dir)
		// Killed while it ended the container, the checkpoint was
		// complete already (its bundle is written before).
		_, complete := os.Stat(filepath.Join(dir, "ctcr.json"))
		if r.code() == 0 || (complete == nil && c.status() == "stopped") {
			finished++
			restoreContainer(t, c, dir)
		} else {
			checkInterrupted(t, r, sig, 16, dir)
		}
		// The guard thaws a frozen container once it sees ctcr's end of
		// its pipe close: a moment after ctcr died.
		st, err := c.state()
		for wait := time.Now().Add(5 * time.Second); (err != nil || st.Status == "paused") && time.Now().Before(wait); {
			time.Sleep(20 * time.Millisecond)
			st, err = c.state()
		}
		if err != nil || st.Status != "running" {
			t.Fatalf("after %s got %v %v into it: runc says %q 5 s later (%v)", r, sig, delay, st.Status, err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			fs, err := freezerState(st.Pid)
			if err == nil && fs == "THAWED" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %s got %v %v into it: the container's freezer is %q (%v)", r, sig, delay, fs, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		now, _ := c.count("count")
		c.waitCount(t, now+2, 10*time.Second)
	}
	t.Logf("%d checkpoints interrupted, %d finished first", killPoints()-finished, finished)
}

// leftScratch counts the scratch areas dead ctcrs left in pid: named
// ctcr-scratch where the kernel names anonymous mappings, else private
// anonymous rwx mappings of the scratch area's size (84 KiB).
func leftScratch(pid int) int {
	maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	n := 0
	for _, line := range strings.Split(string(maps), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		if len(f) == 6 && f[5] == "[anon:ctcr-scratch]" {
			n++
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		a, _ := strconv.ParseUint(lo, 16, 64)
		b, _ := strconv.ParseUint(hi, 16, 64)
		if len(f) == 5 && f[1] == "rwxp" && f[4] == "0" && b-a == 84<<10 {
			n++
		}
	}
	return n
}

// TestKillWhileContainerFrozen kills ctcr (through a test hook) right
// after it froze a container: the thaw guard it started before freezing
// must thaw the container, which counts on.
func TestKillWhileContainerFrozen(t *testing.T) {
	c := newContainer(t, "frozenkill", nil)
	c.start()
	c.waitCount(t, 3, 10*time.Second)
	os.Setenv("CTCR_TEST_KILL_FROZEN", "1")
	r := startCtcr(t, "checkpoint", c.id, "-D", filepath.Join(t.TempDir(), "ck"))
	os.Unsetenv("CTCR_TEST_KILL_FROZEN")
	if err := r.wait(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if r.code() != 128+int(unix.SIGKILL) {
		t.Fatalf("%s with CTCR_TEST_KILL_FROZEN: exit %d, want to be killed once the container is frozen: %s", r, r.code(), r.stderr())
	}
	st, err := c.state()
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		fs, err := freezerState(st.Pid)
		if err == nil && fs == "THAWED" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("5 s after ctcr died with the container frozen its freezer is %q (%v): the guard did not thaw it", fs, err)
		}
	}
	now, _ := c.count("count")
	c.waitCount(t, now+2, 10*time.Second)
}

// waitStatusText says how a process ended: its exit code, or the signal
// that killed it and whether it dumped core.
func waitStatusText(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		s := fmt.Sprintf("killed by %v", ws.Signal())
		if ws.CoreDump() {
			s += " (core dumped)"
		}
		return s
	}
	return fmt.Sprintf("wait status %#x", uint32(ws))
}
