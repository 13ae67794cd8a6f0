package test

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDumpLeavesScratchOut dumps a process the way that kills it, in
// which ctcr leaves its scratch area mapped in the task until the kill
// rather than unmapping it (a lone remote call less per process): the
// area must not be in the images, so the restored process maps no
// scratch area, and its registers, vector registers included, are its
// own (regcheck checks them).
func TestDumpLeavesScratchOut(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "regcheck", "4")
	if n := leftScratch(w.pid); n != 0 {
		t.Fatalf("the workload maps %d scratch areas before any dump", n)
	}
	img := filepath.Join(t.TempDir(), "img")
	dump(t, w, img, false, 0)
	pidfile := filepath.Join(t.TempDir(), "pid")
	r := runCtcr(t, 120*time.Second, "restore", "-D", img, "-d", "--pidfile", pidfile)
	w.logs = append(w.logs, r.errP)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d, want 0; stderr: %s%s", r, r.code(), r.stderr(), w.report())
	}
	if n := leftScratch(w.pid); n != 0 {
		t.Errorf("the restored process maps %d of ctcr's scratch areas: the dump put its own area in the images%s", n, w.report())
	}
	w.requestCheck()
	ws, reaped, err := reap(w.pid, 60*time.Second)
	if err != nil {
		t.Fatalf("%v%s", err, w.report())
	}
	if !reaped || !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("the restored regcheck (PID %s) ended with %v (reaped: %v), want exit status 0%s", strconv.Itoa(w.pid), ws, reaped, w.report())
		return
	}
	w.assertPassed()
}

// TestKillInThreadBatches kills ctcr while several threads of one
// process run their query batches at once (the dump asks up to 8
// threads together, each in a slot of the scratch area with a signal
// frame of its own): each thread must come back to its own registers,
// vector registers included, by itself. regcheck runs 6 register
// threads here, each checking values of its own.
func TestKillInThreadBatches(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "regcheck", "8", "6")
	pid := strconv.Itoa(w.pid)
	// Batch 1 removes the scratch area a killed ctcr left (from the
	// second dump on), then come the main thread's query and one per
	// register thread: killed 20 ms into one of those, the threads
	// started after it run or have ended their batches too.
	killed := 0
	for _, at := range []string{"3:20", "4:20", "5:5", "3:1", "6:10"} {
		os.Setenv("CTCR_TEST_KILL_IN_RUN", at)
		r := startCtcr(t, "dump", "-t", pid, "-D", filepath.Join(t.TempDir(), "img"), "--leave-running")
		os.Unsetenv("CTCR_TEST_KILL_IN_RUN")
		if err := r.wait(30 * time.Second); err != nil {
			t.Fatal(err)
		}
		switch r.code() {
		case 128 + int(unix.SIGKILL):
			killed++
		case 0: // the dump ran fewer batches than that
		default:
			t.Fatalf("%s with CTCR_TEST_KILL_IN_RUN=%s: exit %d: %s", r, at, r.code(), r.stderr())
		}
		if err := assertRunnable(w.pid); err != nil {
			t.Fatalf("ctcr killed in batch %s: %v%s", at, err, w.report())
		}
		if err := w.progresses(5 * time.Second); err != nil {
			t.Fatalf("ctcr killed in batch %s: %v%s", at, err, w.report())
		}
	}
	if killed < 3 {
		t.Errorf("ctcr was killed in %d of its dumps, want at least 3: the test no longer kills it inside thread batches", killed)
	}
	w.resultPasses(t, "after ctcr was killed while threads ran their batches")
}
