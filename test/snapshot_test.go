package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
)

// snapshotReport is what `ctcr dump --leave-running --json` prints.
type snapshotReport struct {
	PagesBytes          int64   `json:"pages_bytes"`
	FrozenSeconds       float64 `json:"frozen_seconds"`
	SnapshotCopySeconds float64 `json:"snapshot_copy_seconds"`
}

// leaveRunningDump runs `ctcr dump --leave-running --json` (with extra
// arguments) on w and returns its report.
func leaveRunningDump(t *testing.T, w *workload, img string, extra ...string) snapshotReport {
	t.Helper()
	logFile := filepath.Join(t.TempDir(), "dump.log")
	w.logs = append(w.logs, logFile)
	args := append([]string{"dump", "--leave-running", "--json", "-t", strconv.Itoa(w.pid), "-D", img, "-v", "--log-file", logFile}, extra...)
	r := runCtcr(t, 120*time.Second, args...)
	w.logs = append(w.logs, r.errP)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d, want 0; stderr: %s%s", r, r.code(), r.stderr(), w.report())
	}
	var rep snapshotReport
	if err := json.Unmarshal([]byte(r.stdout()), &rep); err != nil {
		t.Fatalf("%s printed %q: %v", r, r.stdout(), err)
	}
	t.Logf("dump --leave-running %s: %d bytes, frozen %.3f s, copied from the snapshot after %.3f s",
		strings.Join(extra, " "), rep.PagesBytes, rep.FrozenSeconds, rep.SnapshotCopySeconds)
	return rep
}

// wantRoute fails unless the log of w's last dump (leaveRunningDump)
// says its memory was snapshotted the way route names: "uffd" (a
// userfaultfd write protection, snapshot_uffd.go) or "fork" (a child).
func wantRoute(t *testing.T, w *workload, route string) {
	t.Helper()
	b, _ := os.ReadFile(w.logs[len(w.logs)-2])
	uffd := strings.Contains(string(b), "write-protect snapshot:")
	forked := strings.Contains(string(b), " 1 snapshot children forked")
	if (route == "uffd") != uffd || (route == "fork") != forked {
		t.Errorf("the dump did not take the %s route (write-protected: %v, forked: %v):\n%s", route, uffd, forked, b)
	}
}

// noRunningChildren fails unless every child of pid is gone; with
// zombiesOK, a zombie (a dead snapshot child nobody reaped) is allowed.
func noRunningChildren(t *testing.T, pid int, zombiesOK bool, what string) {
	t.Helper()
	for kid, st := range childrenOf(pid) {
		if st.state == 'Z' && zombiesOK {
			t.Logf("%s: child %d of %d is a zombie (a snapshot child killed with ctcr, which its parent has not reaped)", what, kid, pid)
			continue
		}
		t.Errorf("%s: process %d has a child left: %s", what, pid, describe(kid))
	}
}

// descendants counts the processes below pid, zombies included.
func descendants(pid int) int {
	n := 0
	for kid := range childrenOf(pid) {
		n += 1 + descendants(kid)
	}
	return n
}

// TestSnapshot dumps with --leave-running: the tree is let go as soon as
// a copy-on-write snapshot child of each process exists, and the pages
// are copied from the children while it runs.
func TestSnapshot(t *testing.T) {
	t.Run("a task writing all over its memory comes back with every page as it was at the freeze", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "snapwriter", "256")
		img := filepath.Join(t.TempDir(), "img")
		rep := leaveRunningDump(t, w, img)
		// The default route: a copy-on-write child.
		wantRoute(t, w, "fork")
		if rep.SnapshotCopySeconds <= 0 {
			t.Errorf("the dump reports no copy from a snapshot (snapshot_copy_seconds %g): the pages were copied while the task was stopped", rep.SnapshotCopySeconds)
		}
		if rep.PagesBytes < 256<<20 {
			t.Errorf("the dump wrote %d bytes of pages, want the 259 MiB snapwriter writes", rep.PagesBytes)
		}
		noRunningChildren(t, w.pid, false, "after the dump")
		// The original ran on through the copy, and is whole.
		w.checkPasses(60*time.Second, "snapwriter after dump --leave-running")
		os.Remove(w.path("result"))
		restoreForeground(t, w, img, scenario{}, nil)
		if !t.Failed() {
			decodeWithCrit(t, img)
		}
	})
	t.Run("CTCR_SNAPSHOT=uffd: a task writing all over its memory comes back with every page as it was at the freeze", func(t *testing.T) {
		needCtcr(t)
		t.Setenv("CTCR_SNAPSHOT", "uffd")
		w := startWorkload(t, "snapwriter", "64")
		img := filepath.Join(t.TempDir(), "img")
		leaveRunningDump(t, w, img)
		wantRoute(t, w, "uffd")
		w.checkPasses(60*time.Second, "snapwriter after dump --leave-running by write protection")
		os.Remove(w.path("result"))
		restoreForeground(t, w, img, scenario{}, nil)
	})
	t.Run("ctcr killed while a thread waits in a write-protect fault: the task writes on, whole", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "snapwriter", "256")
		img := filepath.Join(t.TempDir(), "img")
		// The handler dies with ctcr on its third fault, which it has
		// not released: the writer waits in it then.
		t.Setenv("CTCR_SNAPSHOT", "uffd")
		t.Setenv("CTCR_TEST_KILL_IN_UFFD_FAULT", "3")
		r := runCtcr(t, 120*time.Second, "dump", "--leave-running", "-t", strconv.Itoa(w.pid), "-D", img)
		w.logs = append(w.logs, r.errP)
		if r.status == nil || r.status.Exited() {
			t.Fatalf("%s: %v, want killed by the test hook; stderr: %s", r, r.status, r.stderr())
		}
		if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
			t.Errorf("a dump killed during its copy left a complete checkpoint in %s", img)
		}
		// The userfaultfd died with ctcr: the kernel cleared every
		// protection and woke the writer, which wrote on; its check
		// reads every page.
		w.checkPasses(60*time.Second, "snapwriter after ctcr was killed in a write fault")
	})
	t.Run("a MADV_WIPEONFORK mapping found without smaps, by the child's missing pages, is saved as it was", func(t *testing.T) {
		needCtcr(t)
		t.Setenv("CTCR_SNAPSHOT", "fork")
		w := startWorkload(t, "snapwriter", "16", "forkall")
		img := filepath.Join(t.TempDir(), "img")
		leaveRunningDump(t, w, img)
		// Nothing made the dump read the task's smaps while stopped:
		// the wiped mapping was found by the PAGEMAP_SCAN probe.
		if b, _ := os.ReadFile(w.logs[len(w.logs)-2]); strings.Contains(string(b), "VmFlags read while stopped") {
			t.Errorf("the dump read VmFlags while the task was stopped; the test wants the probe:\n%s", b)
		}
		w.checkPasses(60*time.Second, "snapwriter forkall after dump --leave-running")
		os.Remove(w.path("result"))
		restoreForeground(t, w, img, scenario{}, nil)
	})
	for _, route := range []string{"fork", "uffd"} {
		t.Run(route+": the images are those of a dump that copies with the task stopped", func(t *testing.T) {
			t.Setenv("CTCR_SNAPSHOT", route)
			sameImagesAsStopped(t, route)
		})
	}
	for _, tree := range [][]string{{"sharedfork"}, {"tree", "full"}} {
		t.Run(strings.Join(tree, " ")+": every process gets its own snapshot, reaped, and the tree comes back whole", func(t *testing.T) {
			needCtcr(t)
			// Small processes: the write-protect route copies
			// them while stopped.
			t.Setenv("CTCR_SNAPSHOT", "fork")
			w := startWorkload(t, tree[0], tree[1:]...)
			t.Cleanup(func() { killByDir(t, w.dir) })
			before := descendants(w.pid)
			img := filepath.Join(t.TempDir(), "img")
			if rep := leaveRunningDump(t, w, img); rep.SnapshotCopySeconds <= 0 {
				t.Errorf("the dump reports no copy from a snapshot (snapshot_copy_seconds %g)", rep.SnapshotCopySeconds)
			}
			// A snapshot child left, even a zombie, is one process more.
			if after := descendants(w.pid); after != before {
				t.Errorf("the tree has %d processes after the dump, %d before: snapshot children left", after, before)
			}
			killByDir(t, w.dir)
			w.waited = true // reaped by killByDir
			// Its zombies, whose command lines are empty, came to this
			// subreaper with their killed parents.
			for end := time.Now().Add(5 * time.Second); descendants(os.Getpid()) > 0 && time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
				reapZombies()
			}
			r := startCtcr(t, "restore", "-D", img, "--json")
			w.logs = append(w.logs, r.errP)
			waitRestoreJSON(t, r, w)
			w.requestCheck()
			if err := r.wait(120 * time.Second); err != nil {
				t.Fatalf("%v%s", err, w.report())
			}
			if r.code() != 0 {
				t.Fatalf("%s: exit status %d, want 0 (the restored root's own status)%s", r, r.code(), w.report())
			}
			w.assertPassed()
		})
	}
	t.Run("SIGTERM to ctcr while it copies from the snapshot rolls back: no checkpoint, no child, the task runs on", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "snapwriter", "256")
		img := filepath.Join(t.TempDir(), "img")
		logFile := filepath.Join(t.TempDir(), "dump.log")
		w.logs = append(w.logs, logFile)
		r := startCtcr(t, "dump", "--leave-running", "-t", strconv.Itoa(w.pid), "-D", img, "-v", "--log-file", logFile)
		w.logs = append(w.logs, r.errP)
		for end := time.Now().Add(60 * time.Second); ; time.Sleep(2 * time.Millisecond) {
			b, _ := os.ReadFile(logFile)
			if strings.Contains(string(b), "copying its pages from the snapshots") {
				break
			}
			if r.exited() || time.Now().After(end) {
				t.Fatalf("%s never began to copy from a snapshot (exited: %v)%s", r, r.exited(), w.report())
			}
		}
		r.cmd.Process.Signal(syscall.SIGTERM)
		if err := r.wait(60 * time.Second); err != nil {
			t.Fatal(err)
		}
		if r.code() != 1 {
			t.Errorf("%s got SIGTERM during its copy: exit status %d, want 1 (rolled back); stderr: %s", r, r.code(), r.stderr())
		}
		if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
			t.Errorf("a dump rolled back during its copy left a checkpoint in %s", img)
		}
		// Killed and reaped by ctcr: not even a zombie.
		noRunningChildren(t, w.pid, false, "after the rolled back dump")
		w.checkPasses(60*time.Second, "snapwriter after a dump rolled back during its copy")
	})
	t.Run("ctcr killed while it copies from the snapshot leaves the task running and no child running", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "snapwriter", "256")
		img := filepath.Join(t.TempDir(), "img")
		t.Setenv("CTCR_TEST_KILL_IN_SNAPSHOT_COPY", "30")
		r := runCtcr(t, 120*time.Second, "dump", "--leave-running", "-t", strconv.Itoa(w.pid), "-D", img)
		w.logs = append(w.logs, r.errP)
		if r.status == nil || r.status.Exited() {
			t.Fatalf("%s: %v, want killed by the test hook; stderr: %s", r, r.status, r.stderr())
		}
		if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
			t.Errorf("a dump killed during its copy left a complete checkpoint in %s", img)
		}
		// The kernel kills the child with its tracer (PTRACE_O_EXITKILL).
		deadline := time.Now().Add(5 * time.Second)
		for {
			running := 0
			for _, st := range childrenOf(w.pid) {
				if st.state != 'Z' {
					running++
				}
			}
			if running == 0 {
				break
			}
			if time.Now().After(deadline) {
				noRunningChildren(t, w.pid, true, "after ctcr was killed")
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		noRunningChildren(t, w.pid, true, "after ctcr was killed")
		w.checkPasses(60*time.Second, "snapwriter after ctcr was killed during its copy")
		noGhost(t, w)
		reapZombies()
	})
	t.Run("ctcr killed between the clone of a snapshot child and its PTRACE_O_EXITKILL: the child exits, never running the task's code", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "snapwriter", "64")
		t.Setenv("CTCR_SNAPSHOT", "fork")
		t.Setenv("CTCR_TEST_KILL_AFTER_SNAPSHOT_CLONE", "1")
		// Three rounds: a child that escaped does not always get far
		// enough to show it before the check (it may die on the way),
		// so one round alone let a broken exit path pass now and then.
		for round := 1; round <= 3; round++ {
			img := filepath.Join(t.TempDir(), "img")
			r := runCtcr(t, 120*time.Second, "dump", "--leave-running", "-t", strconv.Itoa(w.pid), "-D", img)
			w.logs = append(w.logs, r.errP)
			if r.status == nil || r.status.Exited() {
				t.Fatalf("round %d: %s: %v, want killed by the test hook; stderr: %s", round, r, r.status, r.stderr())
			}
			// The child was detached, not killed, by ctcr's death:
			// it runs its own exit path, and stays a zombie of the
			// task (exit signal 0; snapwriter never waits).
			zombies := 0
			for end := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				running := 0
				zombies = 0
				for _, st := range childrenOf(w.pid) {
					if st.state == 'Z' {
						zombies++
					} else {
						running++
					}
				}
				if running == 0 || time.Now().After(end) {
					break
				}
			}
			noRunningChildren(t, w.pid, true, fmt.Sprintf("round %d, after ctcr was killed after the clone", round))
			if zombies != round {
				t.Errorf("round %d: the task has %d dead snapshot children, want %d: the hook did not fire after a clone", round, zombies, round)
			}
		}
		// A child that ran the task's code would have written by now.
		time.Sleep(200 * time.Millisecond)
		noGhost(t, w)
		w.checkPasses(60*time.Second, "snapwriter after ctcr was killed right after the clone of its snapshot")
		noGhost(t, w)
		reapZombies()
	})
}

// TestSnapshotPidsMax: a task whose pids cgroup is full cannot fork its
// snapshot child (EAGAIN); the dump copies its memory while it is
// stopped instead, says so in its log, and the checkpoint restores.
func TestSnapshotPidsMax(t *testing.T) {
	needCtcr(t)
	// The fork route's fallback: the default route forks nothing.
	t.Setenv("CTCR_SNAPSHOT", "fork")
	const root = "/sys/fs/cgroup/pids"
	if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
		t.Skipf("no v1 pids controller at %s: %v", root, err)
	}
	cg, err := os.MkdirTemp(root, "ctcr-test-pidsmax-")
	if err != nil {
		t.Fatal(err)
	}
	w := startWorkload(t, "snapwriter", "64")
	// Runs before the workload's own cleanup kills it: moved out, the
	// cgroup can go.
	t.Cleanup(func() {
		os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(strconv.Itoa(w.pid)), 0o644)
		for end := time.Now().Add(5 * time.Second); os.Remove(cg) != nil && time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		}
	})
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(w.pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	cur, err := os.ReadFile(filepath.Join(cg, "pids.current"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cg, "pids.max"), bytes.TrimSpace(cur), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "img")
	rep := leaveRunningDump(t, w, img)
	if rep.SnapshotCopySeconds != 0 {
		t.Errorf("the dump reports a copy from a snapshot (snapshot_copy_seconds %g) in a full pids cgroup", rep.SnapshotCopySeconds)
	}
	if rep.PagesBytes < 64<<20 {
		t.Errorf("the dump wrote %d bytes of pages, want snapwriter's 67 MiB", rep.PagesBytes)
	}
	log, _ := os.ReadFile(w.logs[len(w.logs)-2])
	if !strings.Contains(string(log), "no snapshot child") {
		t.Errorf("the dump's log does not say it copied without a snapshot child:\n%s", log)
	}
	if ev, err := os.ReadFile(filepath.Join(cg, "pids.events")); err == nil && !strings.Contains(string(ev), "max 0") {
		t.Logf("pids.events: %s", bytes.TrimSpace(ev))
	} else {
		t.Errorf("pids.events shows no refused fork (%q, %v): the cgroup did not stop the clone", ev, err)
	}
	noRunningChildren(t, w.pid, false, "after the dump")
	w.checkPasses(60*time.Second, "snapwriter after dump --leave-running in a full pids cgroup")
	os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(strconv.Itoa(w.pid)), 0o644)
	os.Remove(w.path("result"))
	restoreForeground(t, w, img, scenario{}, nil)
}

// noGhost fails if a process other than snapwriter w ran its code (a
// snapshot child that escaped into it writes DIR/ghost).
func noGhost(t *testing.T, w *workload) {
	t.Helper()
	if b, err := os.ReadFile(w.path("ghost")); err == nil {
		t.Errorf("a snapshot child ran the task's code: %s", b)
	}
}

// TestContainerSnapshot: a runc container checkpointed with
// --leave-running is let go once its snapshot children exist; the one
// it left running and the one restored from the checkpoint both hold
// all their memory as it was.
func TestContainerSnapshot(t *testing.T) {
	// The default route forks. With the write-protect route asked
	// for, runc's default capabilities still fork: they lack
	// CAP_SYS_PTRACE, without which a process may not make a
	// userfaultfd that sees kernel faults.
	t.Run("default capabilities: forked", func(t *testing.T) { containerSnapshot(t, false, "fork") })
	t.Run("CAP_SYS_PTRACE, CTCR_SNAPSHOT=uffd: write-protected", func(t *testing.T) {
		t.Setenv("CTCR_SNAPSHOT", "uffd")
		containerSnapshot(t, true, "uffd")
	})
}

func containerSnapshot(t *testing.T, ptraceCap bool, route string) {
	needRunc(t)
	bin := workloadBin(t, "snapwriter-static")
	c := newContainer(t, "snap", func(s *specs.Spec) {
		s.Process.Args = []string{"sh", "-c", "/bin/snapwriter /data 128 > /data/out 2> /data/err & " + containerScript}
		if ptraceCap {
			k := s.Process.Capabilities
			k.Bounding = append(k.Bounding, "CAP_SYS_PTRACE")
			k.Effective = append(k.Effective, "CAP_SYS_PTRACE")
			k.Permitted = append(k.Permitted, "CAP_SYS_PTRACE")
		}
	})
	copyFile(t, bin, filepath.Join(c.rootfs, "bin/snapwriter"), 0o755)
	c.start()
	c.waitFileHolds(t, "/data/ready", "pages")
	dir := filepath.Join(t.TempDir(), "ck")
	logFile := filepath.Join(t.TempDir(), "checkpoint.log")
	r := runCtcr(t, 120*time.Second, "checkpoint", c.id, "-D", dir, "--leave-running", "--json", "-v", "--log-file", logFile)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d, want 0\nstdout: %s\nstderr: %s", r, r.code(), r.stdout(), r.stderr())
	}
	if b, _ := os.ReadFile(logFile); (route == "uffd") != strings.Contains(string(b), "write-protect snapshot:") {
		t.Errorf("the checkpoint did not take the %s route:\n%s", route, b)
	}
	var rep snapshotReport
	if err := json.Unmarshal([]byte(r.stdout()), &rep); err != nil {
		t.Fatalf("%s printed %q: %v", r, r.stdout(), err)
	}
	t.Logf("checkpoint --leave-running (%s): %d bytes, frozen %.3f s, copied from the snapshots after %.3f s", route, rep.PagesBytes, rep.FrozenSeconds, rep.SnapshotCopySeconds)
	if rep.SnapshotCopySeconds <= 0 {
		t.Errorf("the checkpoint reports no copy from a snapshot (snapshot_copy_seconds %g)", rep.SnapshotCopySeconds)
	}
	if st := c.status(); st != "running" {
		t.Fatalf("after checkpoint --leave-running runc says %q, want running", st)
	}
	check := func(what string) {
		t.Helper()
		c.mustExec(t, "touch /data/check")
		// Written whole (renamed into place): PASS, or FAIL and why.
		res := c.waitFileHolds(t, "/data/result", "")
		if !strings.HasPrefix(res, "PASS") {
			out, _ := c.exec("cat /data/out /data/err")
			t.Errorf("%s: snapwriter says %q; %s", what, res, out)
		}
	}
	check("the container left running")
	if r := runCtcr(t, 20*time.Second, "kill", c.id, "KILL"); r.code() != 0 {
		t.Fatalf("%s: exit status %d; stderr: %s", r, r.code(), r.stderr())
	}
	c.waitStatus(t, "stopped", 10*time.Second)
	restoreContainer(t, c, dir)
	check("the container restored")
}

// sameImagesAsStopped dumps a still snapwriter with --leave-running by
// route, then stopped (--no-snapshot), and compares the memory images.
func sameImagesAsStopped(t *testing.T, route string) {
	needCtcr(t)
	w := startWorkload(t, "snapwriter", "64", "still")
	snap := filepath.Join(t.TempDir(), "snap")
	stopped := filepath.Join(t.TempDir(), "stopped")
	if rep := leaveRunningDump(t, w, snap); rep.SnapshotCopySeconds <= 0 {
		t.Errorf("the dump reports no copy from a snapshot (snapshot_copy_seconds %g)", rep.SnapshotCopySeconds)
	}
	wantRoute(t, w, route)
	leaveRunningDump(t, w, stopped, "--no-snapshot")
	imgs, _ := filepath.Glob(filepath.Join(stopped, "*.img"))
	compared := 0
	for _, p := range imgs {
		base := filepath.Base(p)
		if !strings.HasPrefix(base, "pages-") && !strings.HasPrefix(base, "pagemap-") && !strings.HasPrefix(base, "mm-") {
			continue
		}
		want, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(snap, base))
		if err != nil {
			t.Errorf("the snapshot dump has no %s: %v", base, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s of the snapshot dump (%d bytes) differs from the stopped dump's (%d bytes)", base, len(got), len(want))
		}
		compared++
	}
	if compared < 3 {
		t.Errorf("compared %d images, want at least pages, pagemap and mm", compared)
	}
	noRunningChildren(t, w.pid, false, "after the dumps")
	w.checkPasses(30*time.Second, "snapwriter after two dumps --leave-running")
}
