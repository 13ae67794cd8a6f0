package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// mapsLine returns the line of /proc/PID/maps of the mapping that starts
// at addr, or of the one named name if addr is 0, and that mapping's
// start.
func mapsLine(t *testing.T, pid int, addr uint64, name string) (string, uint64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatalf("maps of task %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		start, err := strconv.ParseUint(strings.SplitN(f[0], "-", 2)[0], 16, 64)
		if err != nil {
			continue
		}
		if (addr != 0 && start == addr) || (addr == 0 && len(f) == 6 && f[5] == name) {
			return line, start
		}
	}
	return "", 0
}

// TestVdsoProxy restores with --vdso-proxy, as a restore on a kernel
// whose vDSO differs does: vdsocall, which keeps calling clock_gettime,
// gettimeofday, time and sched_getcpu through the addresses its C
// library looked up, finds them behind jumps at the old vDSO's place
// into this kernel's vDSO, put elsewhere, and every result right. The
// restored task is then dumped again, proxy and all, and restored
// without one.
func TestVdsoProxy(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "vdsocall")
	_, old := mapsLine(t, w.pid, 0, "[vdso]")
	if old == 0 {
		t.Fatalf("task %d has no [vdso]", w.pid)
	}
	img := filepath.Join(t.TempDir(), "img")
	dump(t, w, img, false, 0)
	logFile := filepath.Join(t.TempDir(), "restore.log")
	w.logs = append(w.logs, logFile)
	r := runCtcr(t, 60*time.Second, "restore", "-D", img, "-d", "--vdso-proxy", "-v", "--log-file", logFile)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d; stderr: %s%s", r, r.code(), r.stderr(), w.report())
	}
	line, moved := mapsLine(t, w.pid, 0, "[vdso]")
	if moved == 0 || moved == old {
		t.Errorf("after restore --vdso-proxy, [vdso] of task %d is at %#x, want a place other than its old %#x", w.pid, moved, old)
	}
	proxy, _ := mapsLine(t, w.pid, old, "")
	if f := strings.Fields(proxy); len(f) != 5 || f[1] != "r-xp" {
		t.Errorf("the old vDSO's place %#x holds %q, want the proxy: an anonymous r-x mapping (this kernel's vDSO: %q)", old, proxy, line)
	}
	// It keeps calling through the proxy meanwhile.
	time.Sleep(300 * time.Millisecond)
	if !exists(w.pid) {
		t.Fatalf("the task restored behind a vDSO proxy died%s", w.report())
	}
	img2 := filepath.Join(t.TempDir(), "img2")
	r = runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img2)
	if r.code() != 0 {
		t.Fatalf("%s of the task behind the proxy: exit status %d; stderr: %s%s", r, r.code(), r.stderr(), w.report())
	}
	if _, reaped, err := reap(w.pid, 10*time.Second); !reaped {
		t.Fatalf("the task dumped again was not reaped: %v", err)
	}
	restoreForeground(t, w, img2, scenario{}, nil)
	// Its C library's auxiliary vector names the old vDSO, kept whole
	// in the proxy: vdsocall checked it is an ELF image.
	if out, want := w.read("out"), fmt.Sprintf("vdso %#x", old); !strings.Contains(out, want) {
		t.Errorf("vdsocall says %q, want AT_SYSINFO_EHDR to name the old vDSO (%s)", out, want)
	}
}

// TestVdsoProxyTrees runs every multi-task workload of TestDumpRestoreTrees
// restored with --vdso-proxy: children forked from a parent behind a
// proxy, threads, the Go runtime (which looks up the vDSO's functions
// itself) and Python all call through it.
func TestVdsoProxyTrees(t *testing.T) {
	for _, sc := range treeScenarios {
		t.Run(sc.name, func(t *testing.T) { runTreeScenario(t, sc, nil, "--vdso-proxy") })
	}
}
