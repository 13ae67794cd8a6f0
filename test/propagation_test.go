package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
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
	pid := c.runDetached(t)
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

// TestPlainNestedMountPropagation: a plain tree (its root in ctcr's
// mount namespace) whose two children made mount namespaces of their
// own, one a peer of a shared mount of the host's (unshare -m
// --propagation unchanged), one its slave. After dump and restore each
// is so again: a host mount below the shared mount reaches both, one
// made in the peer's namespace reaches the host, one made in the
// slave's does not.
func TestPlainNestedMountPropagation(t *testing.T) {
	needCtcr(t)
	src := filepath.Join(t.TempDir(), "shared")
	hostMount(t, src, true)
	for _, d := range []string{"before", "after", "frompeer", "fromslave"} {
		os.MkdirAll(filepath.Join(src, d), 0o755)
	}
	cmd := exec.Command("sh", "-c", "unshare -m --propagation unchanged sleep 1000 & unshare -m --propagation slave sleep 1001 & wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	root := cmd.Process.Pid
	var peer, slave int
	t.Cleanup(func() {
		for _, p := range []int{peer, slave, root} {
			if p != 0 {
				unix.Kill(p, unix.SIGKILL)
				reap(p, 5*time.Second)
			}
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for peer == 0 || slave == 0 {
		for k := range childrenOf(root) {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", k))
			args, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", k))
			switch {
			case strings.TrimSpace(string(comm)) != "sleep":
			case strings.Contains(string(args), "1000"):
				peer = k
			case strings.Contains(string(args), "1001"):
				slave = k
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the tree at %d has no two sleeps after 10 s: %v", root, childrenOf(root))
		}
		time.Sleep(10 * time.Millisecond)
	}
	group := ""
	self, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(self), "\n") {
		if f := strings.Fields(l); len(f) > 6 && f[4] == src && strings.HasPrefix(f[6], "shared:") {
			group = strings.TrimPrefix(f[6], "shared:")
		}
	}
	if group == "" {
		t.Fatalf("%s is not a shared mount of the test's namespace:\n%s", src, self)
	}
	// fields are the optional fields of pid's mount at mp.
	fields := func(pid int, mp string) string {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 6 && f[4] == mp {
				var opt []string
				for _, o := range f[6:] {
					if o == "-" {
						break
					}
					opt = append(opt, o)
				}
				return strings.Join(opt, " ")
			}
		}
		return "(not mounted)"
	}
	relations := func(when string) {
		t.Helper()
		if got := fields(peer, src); got != "shared:"+group {
			t.Errorf("%s: %s in the peer's namespace is %q, want shared:%s", when, src, got, group)
		}
		if got := fields(slave, src); got != "master:"+group {
			t.Errorf("%s: %s in the slave's namespace is %q, want master:%s", when, src, got, group)
		}
	}
	relations("before the dump")
	img := filepath.Join(t.TempDir(), "img")
	if r := runCtcr(t, 60*time.Second, "dump", "-t", fmt.Sprint(root), "-D", img); r.code() != 0 {
		t.Fatalf("%s: exit %d: %s", r, r.code(), r.stderr())
	}
	// The killed children were re-parented to this subreaper.
	for _, p := range []int{peer, slave} {
		if _, _, err := reap(p, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	cmd.Wait()
	if r := runCtcr(t, 60*time.Second, "restore", "-D", img, "-d"); r.code() != 0 {
		t.Fatalf("%s: exit %d: %s", r, r.code(), r.stderr())
	}
	relations("after restore")
	hostMount(t, filepath.Join(src, "after"), false)
	for who, pid := range map[string]int{"peer": peer, "slave": slave} {
		if got := fields(pid, filepath.Join(src, "after")); got == "(not mounted)" {
			t.Errorf("after restore a host mount below %s does not reach the %s's namespace", src, who)
		}
	}
	mountIn := func(pid int, mp string) {
		t.Helper()
		t.Cleanup(func() { unix.Unmount(mp, unix.MNT_DETACH) })
		if out, err := exec.Command("nsenter", "-t", fmt.Sprint(pid), "-m", "mount", "-t", "tmpfs", "ctcr-prop", mp).CombinedOutput(); err != nil {
			t.Fatalf("mount a tmpfs on %s in the namespace of %d: %v: %s", mp, pid, err, out)
		}
	}
	mountIn(peer, filepath.Join(src, "frompeer"))
	if got := fields(os.Getpid(), filepath.Join(src, "frompeer")); got == "(not mounted)" {
		t.Errorf("after restore a mount made in the peer's namespace does not reach the host's")
	}
	mountIn(slave, filepath.Join(src, "fromslave"))
	if got := fields(os.Getpid(), filepath.Join(src, "fromslave")); got != "(not mounted)" {
		t.Errorf("after restore a mount made in the slave's namespace reaches the host's")
	}
}
