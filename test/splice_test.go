package test

import (
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

// The dump's splice write path: the task vmsplices its pages into pipes
// of its own, ctcr splices them into the image (criu/pages_splice.go).

func TestSpliceDump(t *testing.T) {
	t.Run("a dump through the splice path restores every page of large, sparse, small, read-only, PROT_NONE and shared mappings byte for byte", func(t *testing.T) {
		needCtcr(t)
		t.Setenv("CTCR_PAGE_PATH", "splice")
		w := startWorkload(t, "splicemem", "32")
		img := filepath.Join(t.TempDir(), "img")
		dump(t, w, img, false, 0)
		var log string
		for _, l := range w.logs {
			if strings.HasSuffix(l, "dump.log") {
				b, _ := os.ReadFile(l)
				log = string(b)
			}
		}
		if want := fmt.Sprintf("task %d: ", w.pid); !strings.Contains(log, want) || !strings.Contains(log, "bytes of pages spliced") {
			t.Errorf("the dump log does not say task %d's pages were spliced:\n%s", w.pid, tail(log, 3000))
		}
		restoreForeground(t, w, img, scenario{}, nil)
		if !t.Failed() {
			decodeWithCrit(t, img)
		}
	})
	t.Run("ctcr killed while the task vmsplices leaves it running with its memory, and its fd table but for close-on-exec pipe ends at high fds", func(t *testing.T) {
		needCtcr(t)
		t.Setenv("CTCR_PAGE_PATH", "splice")
		for _, batch := range []string{"1", "7"} {
			w := startWorkload(t, "splicemem", "32")
			before := fdsOf(t, w.pid)
			img := filepath.Join(t.TempDir(), "img")
			t.Setenv("CTCR_TEST_KILL_IN_SPLICE", batch)
			r := runCtcr(t, 120*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img)
			w.logs = append(w.logs, r.errP)
			if r.code() != 128+int(unix.SIGKILL) {
				t.Fatalf("batch %s: %s: exit %d, want killed by the test hook in its splice loop; stderr: %s", batch, r, r.code(), r.stderr())
			}
			if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
				t.Errorf("batch %s: a dump killed during its splice left a complete checkpoint in %s", batch, img)
			}
			// The kernel detaches the task when its tracer dies; the
			// task finishes its batch and returns to itself.
			var after []int
			for end := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				st, err := readStat(w.pid)
				if err != nil || st.state == 'Z' {
					t.Fatalf("batch %s: the task died after ctcr was killed mid-splice: %v%s", batch, err, w.report())
				}
				after = fdsOf(t, w.pid)
				if tracer(t, w.pid) == 0 && st.state != 't' && st.state != 'T' || time.Now().After(end) {
					break
				}
			}
			// The documented residue: both ends of each pipe, from fd
			// 1000 - 8 up, close-on-exec; nothing else differs.
			var extra []int
			for _, fd := range after {
				if !slices.Contains(before, fd) {
					extra = append(extra, fd)
				}
			}
			for _, fd := range before {
				if !slices.Contains(after, fd) {
					t.Errorf("batch %s: fd %d of the task is gone after ctcr was killed mid-splice", batch, fd)
				}
			}
			if len(extra) > 8 {
				t.Errorf("batch %s: %d fds left in the task (%v), want at most the 8 pipe ends", batch, len(extra), extra)
			}
			for _, fd := range extra {
				link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", w.pid, fd))
				info, _ := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", w.pid, fd))
				if fd < 1000-8 || !strings.HasPrefix(link, "pipe:[") || !cloexec(string(info)) {
					t.Errorf("batch %s: fd %d left in the task is %q, fdinfo %q: want a close-on-exec pipe end at 992 or above", batch, fd, link, info)
				}
			}
			var want []string
			for _, fd := range after {
				want = append(want, strconv.Itoa(fd))
			}
			if err := os.WriteFile(w.path("fds_after"), []byte(strings.Join(want, ",")+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			w.checkPasses(60*time.Second, "splicemem after ctcr was killed mid-splice")
		}
	})
}

// fdsOf lists the open fds of pid.
func fdsOf(t *testing.T, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for _, e := range ents {
		fd, _ := strconv.Atoi(e.Name())
		fds = append(fds, fd)
	}
	slices.Sort(fds)
	return fds
}

// tracer returns TracerPid of pid.
func tracer(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "TracerPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return -1
}

// cloexec reports whether fdinfo text has O_CLOEXEC in its flags.
func cloexec(info string) bool {
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(l, "flags:"); ok {
			f, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			return err == nil && f&unix.O_CLOEXEC != 0
		}
	}
	return false
}
