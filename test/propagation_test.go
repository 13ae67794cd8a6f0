package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestNestedMountPropagation: a runc container whose init (the mntprop
// workload) has a shared tmpfs, and children with mount namespaces of
// their own below the container's: one where it is a peer (plain
// unshare), one where it is a slave (MS_SLAVE|MS_REC, as systemd makes
// a service's), with a tmpfs of its own, and one where it is shared and
// a slave, bound elsewhere as a peer. After checkpoint and restore the
// workload finds the same peer groups and masters among the four
// namespaces (by structure, not number), and mounts made afterwards go
// where they went before: from the container into the peer and the
// slaves, from the peer back into the container, from a slave nowhere.
func TestNestedMountPropagation(t *testing.T) {
	c := newContainer(t, "nprop", func(s *specs.Spec) {
		s.Process.Args = []string{"/mntprop", "/data"}
		// What unshare, mount and setns into a mount namespace take.
		addCaps(s, "CAP_SYS_ADMIN", "CAP_SYS_CHROOT")
	})
	buildStaticWorkload(t, "mntprop", filepath.Join(c.rootfs, "mntprop"))
	argv := c.runArgv()
	cmd := exec.Command(argv[0], append(argv[1:], "run", "-d", c.id)...)
	cmd.Dir = c.bundle
	logf, err := os.Create(c.logFile())
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := runWithTimeout(cmd, 30*time.Second); err != nil {
		t.Fatalf("runc run -d %s: %v", c.id, err)
	}
	c.notePid()
	if len(c.inits) == 0 {
		time.Sleep(200 * time.Millisecond) // for the workload's last words
		b, _ := os.ReadFile(c.logFile())
		t.Fatalf("runc state of %s gives no init: its output:\n%s", c.id, b)
	}
	pid := c.inits[0]
	waitData := func(pid int, name string, what string) []byte {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/data/%s", pid, name)); err == nil {
				return b
			}
			if time.Now().After(deadline) {
				errs, _ := os.ReadFile(fmt.Sprintf("/proc/%d/root/data/err", pid))
				t.Fatalf("no /data/%s (%s) after 15s; the workload's stderr: %s", name, what, errs)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitData(pid, "ready", "the setup")

	dir := filepath.Join(t.TempDir(), "ck")
	checkpointContainer(t, c, dir)
	// The nested tables carry each mount's propagation.
	tables, _ := filepath.Glob(filepath.Join(dir, "images", "mountpoints-*.img"))
	if len(tables) != 4 {
		t.Errorf("%d mount tables in the checkpoint (%v), want 4: the container's and three nested", len(tables), tables)
	}
	reap(pid, 5*time.Second)
	rlog := filepath.Join(t.TempDir(), "restore.log")
	if r := runCtcr(t, 60*time.Second, "restore", c.id, "-D", dir, "-v", "--log-file", rlog); r.code() != 0 {
		t.Fatalf("%s: exit status %d\n%s", r, r.code(), r.stderr())
	}
	c.notePid()
	c.waitStatus(t, "running", 5*time.Second)
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(rlog)
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "propagation") {
					t.Log(l)
				}
			}
			for _, tb := range tables {
				out, _ := exec.Command("crit", "show", tb).CombinedOutput()
				t.Logf("%s:\n%s", tb, out)
			}
		}
	}()
	npid := c.inits[len(c.inits)-1]
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/root/data/check", npid), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	res := waitData(npid, "result", "the check after restore")
	if strings.TrimSpace(string(res)) != "PASS" {
		t.Fatalf("after restore the workload says: %s", res)
	}
	decodeWithCrit(t, filepath.Join(dir, "images"))
}
