package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// cgroupLines reads /proc/PID/cgroup as hierarchy key ("cpu",
// "name=systemd", "" for v2) to path.
func cgroupLines(pid int) (map[string]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.SplitN(line, ":", 3); len(f) == 3 {
			out[f[1]] = f[2]
		}
	}
	return out, nil
}

// cgroupDir is where hierarchy key is mounted (cgroupLines' keys).
func cgroupDir(key string) string {
	switch {
	case key == "":
		return "/sys/fs/cgroup/unified"
	case strings.HasPrefix(key, "name="):
		return filepath.Join("/sys/fs/cgroup", strings.TrimPrefix(key, "name="))
	}
	return filepath.Join("/sys/fs/cgroup", key)
}

// moveBelow moves pid, in every hierarchy where it is in cgroup base,
// into base/sub (made if missing), as systemd moves itself and its
// services below the container's cgroup. It returns the directories it
// made, deepest first.
func moveBelow(t *testing.T, pid int, base, sub string) []string {
	t.Helper()
	lines, err := cgroupLines(pid)
	if err != nil {
		t.Fatal(err)
	}
	var made []string
	for key, p := range lines {
		if p != base {
			continue
		}
		parent := filepath.Join(cgroupDir(key), base)
		var dirs []string
		for d := filepath.Join(parent, sub); d != parent; d = filepath.Dir(d) {
			dirs = append(dirs, d)
		}
		for i := len(dirs) - 1; i >= 0; i-- {
			d := dirs[i]
			if err := os.Mkdir(d, 0o755); err != nil {
				if os.IsExist(err) {
					continue
				}
				t.Fatal(err)
			}
			made = append([]string{d}, made...)
			if key == "cpuset" {
				// A v1 cpuset takes no task before it has CPUs and nodes.
				for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
					v, _ := os.ReadFile(filepath.Join(filepath.Dir(d), f))
					os.WriteFile(filepath.Join(d, f), v, 0o644)
				}
			}
		}
		if err := os.WriteFile(filepath.Join(parent, sub, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			t.Fatalf("move %d into %s: %v", pid, filepath.Join(parent, sub), err)
		}
	}
	if len(made) == 0 {
		t.Fatalf("task %d is in cgroup %s in no hierarchy: %v", pid, base, lines)
	}
	return made
}

// removeCgroupsBelow kills every task below the LXC container's cgroup
// and removes the sub-cgroups the test made (LXC's cleanup removes only
// the container's own).
func (c *lxcContainer) removeCgroupsBelow(dirs []string) {
	c.lxc("lxc-stop", "-k")
	base := "lxc.payload." + c.name
	for _, d := range []string{"/sys/fs/cgroup/freezer", "/sys/fs/cgroup/unified"} {
		filepath.Walk(filepath.Join(d, base), func(p string, info os.FileInfo, err error) error {
			if err == nil && info.Name() == "cgroup.procs" {
				b, _ := os.ReadFile(p)
				for _, f := range strings.Fields(string(b)) {
					if n, err := strconv.Atoi(f); err == nil {
						unix.Kill(n, unix.SIGKILL)
						reap(n, time.Second)
					}
				}
			}
			return nil
		})
	}
	// Longest paths first: children before parents.
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	deadline := time.Now().Add(5 * time.Second)
	for _, d := range dirs {
		for os.Remove(d) != nil && !os.IsNotExist(os.Remove(d)) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestLXCInitBelowContainerCgroup: an LXC container whose init has moved
// below the container's cgroup (into init.scope, as systemd does) and
// one of whose tasks sits in system.slice/x.service is checkpointed as
// the whole of lxc.payload.NAME, and restored with each task back in its
// sub-cgroup.
func TestLXCInitBelowContainerCgroup(t *testing.T) {
	c := newLXCContainer(t)
	c.start()
	pid := c.inits[0]
	base := "/lxc.payload." + c.name
	var made []string
	t.Cleanup(func() { c.removeCgroupsBelow(made) })
	made = append(made, moveBelow(t, pid, base, "init.scope")...)
	// The long sleep stands for a service.
	var svc int
	for _, p := range kidsOf(pid) {
		if isLongSleep(p) {
			svc = p
		}
	}
	if svc == 0 {
		t.Fatalf("no sleep 100000 among the children of init %d", pid)
	}
	made = append(made, moveBelow(t, svc, base, "system.slice/x.service")...)
	initCg, _ := cgroupLines(pid)
	svcCg, _ := cgroupLines(svc)
	countAt := c.waitCount(t, pid, 8, 10*time.Second)

	npid := c.checkpointRestore(t, pid)
	if got := c.waitCount(t, npid, countAt+2, 5*time.Second); got < countAt {
		t.Errorf("/data/count is %d after restore, below %d", got, countAt)
	}
	if got, _ := cgroupLines(npid); fmt.Sprint(got) != fmt.Sprint(initCg) {
		t.Errorf("restored init %d is in cgroups %v, want %v", npid, got, initCg)
	}
	var nsvc int
	for _, p := range kidsOf(npid) {
		if isLongSleep(p) {
			nsvc = p
		}
	}
	if got, _ := cgroupLines(nsvc); nsvc == 0 || fmt.Sprint(got) != fmt.Sprint(svcCg) {
		t.Errorf("restored service %d is in cgroups %v, want %v", nsvc, got, svcCg)
	}
}

// kidsOf lists pid's children.
func kidsOf(pid int) []int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// buildStaticWorkload compiles workloads/NAME.c statically into dir: it
// runs inside a busybox container, which has no C library.
func buildStaticWorkload(t *testing.T, name, dst string) {
	t.Helper()
	args := []string{"-O2", "-g", "-Wall", "-Wextra", "-Werror", "-std=gnu11", "-static", "-o", dst, filepath.Join("workloads", name+".c")}
	if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// startLXCWith starts c with init cmd instead of its counting script and
// waits for file DIR/ready of the workload (in /data).
func (c *lxcContainer) startWith(t *testing.T, cmd string) int {
	t.Helper()
	cfg := filepath.Join(c.lxcpath, c.name, "config")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "lxc.init.cmd = /bin/sh /init.sh", "lxc.init.cmd = "+cmd, 1)
	if err := os.WriteFile(cfg, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := c.lxc("lxc-start", "-l", "DEBUG", "-o", filepath.Join(c.lxcpath, c.name+".log")); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.lxcpath, c.name+".log"))
		t.Fatalf("%v\n%s\n%s", err, out, log)
	}
	out, err := c.lxc("lxc-info", "-p", "-H")
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("lxc-info -p: %q", out)
	}
	c.noteInit(pid)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/data/ready", pid)); err == nil {
			return pid
		}
		if time.Now().After(deadline) {
			errs, _ := os.ReadFile(fmt.Sprintf("/proc/%d/root/data/err", pid))
			log, _ := os.ReadFile(filepath.Join(c.lxcpath, c.name+".log"))
			t.Fatalf("container %s: no /data/ready after 15s; stderr: %s\nLXC log:\n%s", c.name, errs, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLXCNestedNamespaces: tasks of an LXC container in UTS, IPC and
// network namespaces of their own below the container's (the nestedns
// workload as its init) are checkpointed and restored each into its own:
// the names, SysV segment and loopback state of each namespace, which
// tasks share one, and a task whose parent is nested but which itself
// went back into the container's.
func TestLXCNestedNamespaces(t *testing.T) {
	c := newLXCContainer(t)
	buildStaticWorkload(t, "nestedns", filepath.Join(c.rootfs, "nestedns"))
	pid := c.startWith(t, "/nestedns /data")
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/root/data/ready", pid))
	t.Logf("ready:\n%s", b)

	dir := filepath.Join(t.TempDir(), "ck")
	if r := c.ctcr(t, "checkpoint", c.name, "-D", dir); r.code() != 0 {
		t.Fatalf("%s: exit %d\n%s", r, r.code(), r.stderr())
	}
	reap(pid, 5*time.Second)
	if out, err := exec.Command("crit", "show", filepath.Join(dir, "images", "pstree.img")).CombinedOutput(); err != nil {
		t.Errorf("crit show pstree.img: %v\n%s", err, out)
	}
	imgs, _ := filepath.Glob(filepath.Join(dir, "images", "utsns-*.img"))
	if len(imgs) != 3 {
		t.Errorf("%d utsns images (%v), want 3: the container's, B's and E's", len(imgs), imgs)
	}
	for _, img := range imgs {
		if out, err := exec.Command("crit", "show", img).CombinedOutput(); err != nil {
			t.Errorf("crit show %s: %v\n%s", img, err, out)
		}
	}
	npid := c.restoreNewInit(t, dir)
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/root/data/check", npid), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		res, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/data/result", npid))
		if err == nil {
			if strings.TrimSpace(string(res)) != "PASS" {
				t.Fatalf("after restore the workload says: %s\ninside:\n%s", res, c.mustExec(t, "ls -l /proc/1/ns/ /proc/2/ns/; ls /proc | head -20; grep proc /proc/mounts"))
			}
			return
		}
		if time.Now().After(deadline) {
			errs, _ := os.ReadFile(fmt.Sprintf("/proc/%d/root/data/err", npid))
			ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/root/data", npid))
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Fatalf("no /data/result 15s after the check was asked for; stderr: %s; /data holds %v; tasks:\n%s", errs, names, c.mustExec(t, "ps -o pid,stat,comm"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLXCNestedMountFile: a task of an LXC container that holds a file
// open in a tmpfs only its own mount namespace has (PrivateTmp's /tmp),
// while the container's /tmp has another file at that path, is
// checkpointed and restored holding the file of its own view again (its
// tmpfs's, with its content and offset); the container's file is
// untouched. (Until the reg-file entries named their mount, this was
// refused: "a file of its own mount namespace".)
func TestLXCNestedMountFile(t *testing.T) {
	c := newLXCContainer(t)
	script := `unshare -m sh -c 'mount -t tmpfs none /tmp && echo own-view >/tmp/held && exec 3</tmp/held && read -r -n 4 x <&3 && touch /data/ready && exec sleep 100000' &
i=0; while :; do i=$((i+1)); echo $i > /data/count; sleep 0.2; done`
	if err := os.WriteFile(filepath.Join(c.rootfs, "held.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.rootfs, "tmp", "held"), []byte("container-view\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pid := c.startWith(t, "/bin/sh /held.sh")
	c.waitCount(t, pid, 3, 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/data/ready", pid)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the task in its own mount namespace did not get ready in 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	npid := c.checkpointRestore(t, pid)
	holder := 0
	for _, k := range descendantsOf(npid) {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/3", k)); err == nil && l == "/tmp/held" && nsInode(t, k, "mnt") != nsInode(t, npid, "mnt") {
			holder = k
		}
	}
	if holder == 0 {
		t.Fatalf("no restored task of %s in its own mount namespace holds /tmp/held on fd 3", c.name)
	}
	var fdSt, tmpSt unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/3", holder), &fdSt); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(fmt.Sprintf("/proc/%d/root/tmp", holder), &tmpSt); err != nil {
		t.Fatal(err)
	}
	if fdSt.Dev != tmpSt.Dev {
		t.Errorf("fd 3 of task %d is on device %#x, not on its own /tmp's tmpfs (%#x)", holder, fdSt.Dev, tmpSt.Dev)
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fd/3", holder)); err != nil || string(b) != "own-view\n" {
		t.Errorf("fd 3 of task %d reads %q (%v), want the file of its own view", holder, b, err)
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/3", holder)); err != nil || !strings.HasPrefix(string(b), "pos:\t4\n") {
		t.Errorf("fd 3 of task %d: fdinfo %q (%v), want pos 4", holder, b, err)
	}
	if b, err := os.ReadFile(filepath.Join(c.rootfs, "tmp", "held")); err != nil || string(b) != "container-view\n" {
		t.Errorf("the container's /tmp/held holds %q (%v), want it untouched", b, err)
	}
}

// TestRuncNestedNamespacesAndInitCgroup: the nestedns workload as a runc
// container's init, moved below the cgroup runc made (state.json's
// cgroup_paths) as systemd would move itself: the checkpoint takes the
// whole of runc's cgroup, and the restore puts init back below it and
// every task into its own namespaces.
func TestRuncNestedNamespacesAndInitCgroup(t *testing.T) {
	c := newContainer(t, "nestedns", func(s *specs.Spec) {
		s.Process.Args = []string{"/nestedns", "/data", "/dev/shm"}
		// What unshare, setns, mount, sethostname and lo up take.
		caps := []string{"CAP_SYS_ADMIN", "CAP_SYS_CHROOT", "CAP_NET_ADMIN"}
		k := s.Process.Capabilities
		k.Bounding = append(k.Bounding, caps...)
		k.Effective = append(k.Effective, caps...)
		k.Permitted = append(k.Permitted, caps...)
	})
	buildStaticWorkload(t, "nestedns", filepath.Join(c.rootfs, "nestedns"))
	var made, bases []string
	t.Cleanup(func() {
		c.cmd(30*time.Second, "", "delete", "-f", c.id)
		for _, p := range c.inits {
			reap(p, 5*time.Second)
		}
		c.inits = nil
		sort.Slice(made, func(i, j int) bool { return len(made[i]) > len(made[j]) })
		for _, d := range append(made, bases...) {
			deadline := time.Now().Add(5 * time.Second)
			for os.Remove(d) != nil && !os.IsNotExist(os.Remove(d)) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
		}
	})
	pid := c.runDetached(t)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/data/ready", pid)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			errs, _ := os.ReadFile(fmt.Sprintf("/proc/%d/root/data/err", pid))
			t.Fatalf("no /data/ready after 15s; stderr: %s", errs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	lines, err := cgroupLines(pid)
	if err != nil {
		t.Fatal(err)
	}
	base := lines["freezer"]
	if base == "" || base == "/" {
		t.Fatalf("runc's init %d has no freezer cgroup of its own: %v", pid, lines)
	}
	for key, p := range lines {
		if p == base {
			bases = append(bases, filepath.Join(cgroupDir(key), base))
		}
	}
	made = moveBelow(t, pid, base, "init.scope")
	initCg, _ := cgroupLines(pid)

	dir := filepath.Join(t.TempDir(), "ck")
	if r := runCtcr(t, 60*time.Second, "checkpoint", c.id, "-D", dir); r.code() != 0 {
		t.Fatalf("%s: exit %d\n%s", r, r.code(), r.stderr())
	}
	reap(pid, 5*time.Second)
	restoreContainer(t, c, dir)
	npid := c.inits[len(c.inits)-1]
	if got, _ := cgroupLines(npid); fmt.Sprint(got) != fmt.Sprint(initCg) {
		t.Errorf("restored init %d is in cgroups %v, want %v", npid, got, initCg)
	}
	// Its children stayed in runc's cgroup, above init's.
	kids := kidsOf(npid)
	if len(kids) != 2 {
		t.Errorf("restored init %d has children %v, want 2 (B and E)", npid, kids)
	}
	for _, k := range kids {
		if got, _ := cgroupLines(k); fmt.Sprint(got) != fmt.Sprint(lines) {
			t.Errorf("restored task %d is in cgroups %v, want %v", k, got, lines)
		}
	}
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/root/data/check", npid), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(15 * time.Second)
	for {
		res, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/data/result", npid))
		if err == nil {
			if strings.TrimSpace(string(res)) != "PASS" {
				t.Fatalf("after restore the workload says: %s", res)
			}
			return
		}
		if time.Now().After(deadline) {
			errs, _ := os.ReadFile(fmt.Sprintf("/proc/%d/root/data/err", npid))
			t.Fatalf("no /data/result 15s after the check was asked for; stderr: %s", errs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkpointRestore checkpoints the container whose init is pid,
// reaps that init, restores the container and returns its new init.
func (c *lxcContainer) checkpointRestore(t *testing.T, pid int) int {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ck")
	if r := c.ctcr(t, "checkpoint", c.name, "-D", dir); r.code() != 0 {
		t.Fatalf("%s: exit %d\n%s", r, r.code(), r.stderr())
	}
	reap(pid, 5*time.Second)
	return c.restoreNewInit(t, dir)
}

// restoreNewInit restores the container from dir and returns its new
// init (noted for the cleanup).
func (c *lxcContainer) restoreNewInit(t *testing.T, dir string) int {
	t.Helper()
	if r := c.ctcr(t, "restore", c.name, "-D", dir); r.code() != 0 {
		t.Fatalf("%s: exit %d\n%s", r, r.code(), r.stderr())
	}
	npid := c.initByCtcr(t)
	if npid == 0 {
		t.Fatalf("after restore ctcr ps shows no PID 1 in %s", c.name)
	}
	c.noteInit(npid)
	return npid
}
