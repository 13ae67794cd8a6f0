package test

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ghostKillPoints is how many random moments TestKillDuringGhostRestore
// kills ctcr at, per kind, besides the two moments its hook picks.
func ghostKillPoints() int {
	if os.Getenv("CTCR_STRESS") != "" {
		return 30
	}
	return 3
}

// TestKillDuringGhostRestore kills ctcr (SIGKILL) during restores of the
// ghostsparse and ghostkinds workloads, for each kind of removed object
// restore makes again under a name and removes (an unlinked regular
// file, FIFO, device node, symlink, a removed directory): right after it made the object under
// its temporary name, right after it renamed it to its old one (the
// CTCR_TEST_KILL_AT_GHOST_NAME hook), and at random moments. Whatever
// the moment, no name may be left in the workload's directory once
// ctcr's janitor is done (the object back from the dead, or a
// .NAME.ctcr-ghost-... name), and a restore afterwards passes.
func TestKillDuringGhostRestore(t *testing.T) {
	type ghostCase struct {
		what, workload, arg string
		names               []string // what a name left would contain
	}
	cases := []ghostCase{{"an unlinked regular file", "ghostsparse", "", []string{"sparse.dat", "ctcr-ghost"}}}
	for _, kind := range []string{"fifo", "dir", "cwd", "dev", "symlink"} {
		cases = append(cases, ghostCase{"a removed " + kind, "ghostkinds", kind, []string{"gk-", "ctcr-ghost"}})
	}
	for _, c := range cases {
		t.Run(c.what+" leaves no name", func(t *testing.T) {
			needCtcr(t)
			var args []string
			if c.arg != "" {
				args = append(args, c.arg)
			}
			w := startWorkload(t, c.workload, args...)
			img := filepath.Join(t.TempDir(), "img")
			dump(t, w, img, false, 0)
			w.reapDumped(t)
			namesLeft := func(after string) {
				t.Helper()
				// The janitor is a process running ctcr's binary:
				// once it is gone it has done its work.
				waitNoLeftovers(t, 10*time.Second, after, w.pid)
				ents, err := os.ReadDir(w.dir)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range ents {
					for _, n := range c.names {
						if strings.Contains(e.Name(), n) {
							t.Errorf("%s: %s is left in the workload's directory", after, e.Name())
							break
						}
					}
				}
			}
			killRestored := func() {
				unix.Kill(w.pid, unix.SIGKILL)
				if _, _, err := reap(w.pid, 10*time.Second); err != nil {
					t.Fatal(err)
				}
			}
			var took time.Duration
			for _, at := range []string{"made", "renamed"} {
				os.Setenv("CTCR_TEST_KILL_AT_GHOST_NAME", at)
				start := time.Now()
				r := runCtcr(t, 60*time.Second, "restore", "-D", img, "-d")
				took = max(took, time.Since(start))
				os.Unsetenv("CTCR_TEST_KILL_AT_GHOST_NAME")
				if r.code() != 128+int(unix.SIGKILL) {
					t.Fatalf("%s with CTCR_TEST_KILL_AT_GHOST_NAME=%s: exit %d, want to be killed once the ghost was %s: %s", r, at, r.code(), at, r.stderr())
				}
				namesLeft("ctcr killed once the ghost was " + at)
			}
			for i := 0; i < ghostKillPoints(); i++ {
				delay := time.Duration(rand.Int63n(int64(2 * took)))
				r := interruptCtcr(t, delay, unix.SIGKILL, "restore", "-D", img, "-d")
				if r.code() == 0 {
					killRestored()
				} else {
					killIfRestored(t, w)
				}
				namesLeft("ctcr killed " + delay.String() + " into a restore")
			}
			restoreForeground(t, w, img, scenario{}, nil)
			namesLeft("the restore after the killed ones")
		})
	}
}

// killIfRestored kills and reaps w's task if a restore let it go before
// ctcr was killed: it runs untraced, its own program. A task ctcr was
// still making dies with ctcr (PTRACE_O_EXITKILL) and is waited for.
func killIfRestored(t *testing.T, w *workload) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); exists(w.pid); time.Sleep(20 * time.Millisecond) {
		reapZombies()
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", w.pid))
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", w.pid))
		if exe != "" && exe != ctcrBin && strings.Contains(string(st), "\nTracerPid:\t0\n") && !strings.Contains(string(st), "\nState:\tZ") {
			unix.Kill(w.pid, unix.SIGKILL)
			if _, _, err := reap(w.pid, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after ctcr was killed: %s", describe(w.pid))
		}
	}
}
