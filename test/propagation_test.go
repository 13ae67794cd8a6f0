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

// serviceMountPropagation is the propagation of the system container's
// mounts and of those of a service's mount namespace (ctcr-ptmp's, made
// by systemd for PrivateTmp=), numbered together (propagationOf), the
// service's mount points prefixed with "svc:": which service mounts are
// peers or slaves of which container mounts.
func (c *systemdContainer) serviceMountPropagation(t *testing.T, unit string) string {
	t.Helper()
	pid := c.mainPid(t, unit)
	ct, err := c.sh("cat /proc/1/mountinfo", 10*time.Second)
	if err != nil {
		t.Fatalf("the container's mountinfo: %v", err)
	}
	svc, err := c.sh(fmt.Sprintf("cat /proc/%d/mountinfo", pid), 10*time.Second)
	if err != nil {
		t.Fatalf("%s's mountinfo: %v", unit, err)
	}
	var joint []string
	for _, l := range strings.Split(strings.TrimSpace(svc), "\n") {
		// The fifth field is the mount point.
		if f := strings.SplitN(l, " ", 6); len(f) == 6 {
			joint = append(joint, strings.Join(append(f[:4:4], "svc:"+f[4], f[5]), " "))
		}
	}
	return strings.Join(propagationOf(t, strings.TrimSpace(ct)+"\n"+strings.Join(joint, "\n"), nil), "\n")
}

// serviceMountsTravel checks that a mount made in the system container
// appears in unit's mount namespace (a slave of the container's) and
// that one made there does not appear in the container's.
func (c *systemdContainer) serviceMountsTravel(t *testing.T, unit, when string) {
	t.Helper()
	pid := c.mainPid(t, unit)
	script := fmt.Sprintf(`set -e
mkdir -p /mnt/ctcr-prop-ct /mnt/ctcr-prop-svc
mount -t tmpfs ctcr-prop /mnt/ctcr-prop-ct
nsenter -t %d -m mount -t tmpfs ctcr-prop /mnt/ctcr-prop-svc
set +e
grep -q ' /mnt/ctcr-prop-svc ' /proc/1/mountinfo && echo svc-mount-in-ct
grep -q ' /mnt/ctcr-prop-ct ' /proc/%d/mountinfo && echo ct-mount-in-svc
nsenter -t %d -m umount /mnt/ctcr-prop-svc
umount /mnt/ctcr-prop-ct
rmdir /mnt/ctcr-prop-ct /mnt/ctcr-prop-svc
true`, pid, pid, pid)
	out, err := c.sh(script, 30*time.Second)
	if err != nil {
		t.Fatalf("%s: mounts in the container and in %s's namespace: %v: %s", when, unit, err, out)
	}
	if !strings.Contains(out, "ct-mount-in-svc") {
		t.Errorf("%s: a mount made in the container does not appear in %s's mount namespace:\n%s", when, unit, out)
	}
	if strings.Contains(out, "svc-mount-in-ct") {
		t.Errorf("%s: a mount made in %s's mount namespace appears in the container's:\n%s", when, unit, out)
	}
}
