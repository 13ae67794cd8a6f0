package test

import (
	"path/filepath"
	"strconv"
	"testing"
	"time"
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
