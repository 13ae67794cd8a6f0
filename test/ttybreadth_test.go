package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The terminals of issue 10 besides a pty pair held whole: each test
// dumps one workload holding one kind, restores it, and lets the
// workload check it; each workload also passes when never dumped.

// TestTTYControllingTerminal dumps a session leader whose controlling
// terminal is a pty it holds only through /dev/tty (the master is its
// parent's): restore must make the pty its controlling terminal again
// and give it back a /dev/tty that leads there.
func TestTTYControllingTerminal(t *testing.T) {
	t.Run("a session leader's /dev/tty comes back on its pty, its controlling terminal", func(t *testing.T) {
		dumpRestoreWorkload(t, "ttyctty")
	})
	t.Run("/dev/tty held by another task of the session is refused naming it, and the tree runs on", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "ttyctty", "member")
		img := filepath.Join(t.TempDir(), "img")
		r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img)
		if r.code() != 1 || !strings.Contains(r.stderr(), "/dev/tty") || !strings.Contains(r.stderr(), "not its session's leader") {
			t.Fatalf("%s: exit status %d, stderr %q; want 1 and a message naming /dev/tty of a task that is not its session's leader", r, r.code(), r.stderr())
		}
		w.checkPasses(30*time.Second, "ttyctty member after the refused dump")
	})
	t.Run("the ttyctty workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "ttyctty").checkPasses(30*time.Second, "ttyctty")
	})
}

// TestTTYMachineDevices dumps /dev/console and a virtual console held
// open: they are reopened by path and must be the same devices.
func TestTTYMachineDevices(t *testing.T) {
	for _, dev := range []string{"/dev/console", "/dev/tty1"} {
		t.Run(dev+" held open comes back as the same device with its flags", func(t *testing.T) {
			if f, err := os.OpenFile(dev, os.O_RDWR, 0); err != nil {
				t.Skipf("this machine has no usable %s: %v", dev, err)
			} else {
				f.Close()
			}
			dumpRestoreWorkload(t, "ttydev", dev)
		})
	}
	t.Run("the ttydev workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "ttydev", "/dev/console").checkPasses(30*time.Second, "ttydev")
	})
}

// TestTTYOwner dumps ptys whose /dev/pts nodes were chowned, one with
// its slave held and one with only its master held.
func TestTTYOwner(t *testing.T) {
	t.Run("a chowned /dev/pts node keeps its owner, whether or not a task holds the slave", func(t *testing.T) {
		dumpRestoreWorkload(t, "ttyowner")
	})
	t.Run("the ttyowner workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "ttyowner").checkPasses(30*time.Second, "ttyowner")
	})
}

// TestTTYHungUp dumps a pty slave whose master was closed: its node is
// gone and it is hung up; it must come back hung up, not refused as a
// terminal whose master is outside the tree.
func TestTTYHungUp(t *testing.T) {
	t.Run("a hung-up slave whose node is gone comes back hung up", func(t *testing.T) {
		dumpRestoreWorkload(t, "ttyhup")
	})
	t.Run("the ttyhup workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "ttyhup").checkPasses(30*time.Second, "ttyhup")
	})
}

// TestShellJobDevTTY runs the ttyjobtty workload as a background job of
// a shell that leads a session on a pty the test holds the master of:
// the job holds /dev/tty. Dumped and restored with --shell-job from a
// ctcr on another terminal, the job's /dev/tty is that terminal.
func TestShellJobDevTTY(t *testing.T) {
	needCtcr(t)
	_, s1 := openPty(t)
	dir := t.TempDir()
	w := &workload{t: t, name: "ttyjobtty", dir: dir}
	w.cmd = exec.Command("/bin/sh", "-c", `"$0" "$1" & wait`, workloadBin(t, "ttyjobtty"), dir)
	w.cmd.Stdin, w.cmd.Stdout, w.cmd.Stderr = s1, s1, s1
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.pid = w.cmd.Process.Pid
	t.Cleanup(w.cleanup)
	w.waitReady()
	s1.Close()
	var job int
	for k := range childrenOf(w.cmd.Process.Pid) {
		job = k
	}
	if job == 0 {
		t.Fatalf("the shell %d has no job", w.cmd.Process.Pid)
	}
	w.pid = job

	img := filepath.Join(dir, "img")
	r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(job), "-D", img, "--shell-job")
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d; stderr: %s%s", r, r.code(), r.stderr(), w.report())
	}
	if _, err := w.waitOriginal(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	m2, s2 := openPty(t)
	errP := filepath.Join(dir, "restore.stderr")
	errf, err := os.Create(errP)
	if err != nil {
		t.Fatal(err)
	}
	restore := exec.Command(ctcrBin, "restore", "-D", img, "-d", "--shell-job")
	restore.Stdin, restore.Stdout, restore.Stderr = s2, errf, errf
	err = restore.Run()
	errf.Close()
	w.logs = append(w.logs, errP)
	if err != nil {
		t.Fatalf("ctcr restore -d --shell-job: %v%s", err, w.report())
	}
	s2.Close()
	w.requestCheck()
	ws, _, err := reap(job, 30*time.Second)
	if err != nil {
		t.Fatalf("%v%s", err, w.report())
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("the restored job ended with %s, want exit status 0%s", exitText(ws), w.report())
	}
	w.assertPassed()
	want := fmt.Sprintf("ttyjobtty %d via /dev/tty", job)
	if got := readUntil(m2, want, 5*time.Second); !strings.Contains(got, want) {
		t.Errorf("ctcr's terminal got %q, want the job's %q through its /dev/tty", got, want)
	}
}
