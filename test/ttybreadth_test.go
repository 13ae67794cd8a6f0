package test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
