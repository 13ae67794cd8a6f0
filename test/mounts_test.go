package test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/mnt"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/proc"
)

// addCaps gives the container's processes (init and runc exec) the
// capabilities a test needs to change its namespaces from inside.
func addCaps(s *specs.Spec, caps ...string) {
	c := s.Process.Capabilities
	c.Bounding = append(c.Bounding, caps...)
	c.Effective = append(c.Effective, caps...)
	c.Permitted = append(c.Permitted, caps...)
}

// hostMount mounts a tmpfs at dir in the test's (the host's) namespace
// and unmounts it at cleanup, detached, with whatever is below it.
func hostMount(t *testing.T, dir string, shared bool) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("ctcrt", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount a tmpfs at %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	if shared {
		if err := unix.Mount("none", dir, "", unix.MS_SHARED, ""); err != nil {
			t.Fatalf("make %s shared: %v", dir, err)
		}
	}
}

// hostGroups is the set of peer groups with a member in the test's own
// mount namespace: their numbers survive a checkpoint of the container.
func hostGroups(t *testing.T) map[string]bool {
	t.Helper()
	ms, err := proc.ReadMountinfo(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range ms {
		for _, o := range m.Optional {
			if g, ok := strings.CutPrefix(o, "shared:"); ok {
				out[g] = true
			}
		}
	}
	return out
}

var groupNumber = regexp.MustCompile(`^(shared|master|propagate_from):(\d+)$`)

// propagationOf reduces a mountinfo to "MOUNTPOINT FIELDS" per mount,
// sorted, FIELDS being its optional fields with group numbers made
// comparable: a group that has a member in the host's namespace keeps
// its number (host:N), any other is named by the order in which the
// sorted lines first mention it (g1, g2, ...). So a restored tree whose
// groups got new numbers reads the same when its groups have the same
// members.
func propagationOf(t *testing.T, mountinfo string, host map[string]bool) []string {
	t.Helper()
	ms, err := proc.ParseMountinfo(strings.NewReader(mountinfo))
	if err != nil {
		t.Fatalf("parse the container's mountinfo: %v\n%s", err, mountinfo)
	}
	type line struct {
		mp   string
		opts []string
	}
	var lines []line
	for _, m := range ms {
		opts := append([]string(nil), m.Optional...)
		sort.Strings(opts)
		lines = append(lines, line{m.MountPoint, opts})
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].mp < lines[j].mp })
	names := map[string]string{}
	var out []string
	for _, l := range lines {
		var fields []string
		for _, o := range l.opts {
			if m := groupNumber.FindStringSubmatch(o); m != nil {
				n := m[2]
				if host[n] {
					o = m[1] + ":host:" + n
				} else {
					if names[n] == "" {
						names[n] = fmt.Sprintf("g%d", len(names)+1)
					}
					o = m[1] + ":" + names[n]
				}
			}
			fields = append(fields, o)
		}
		if len(fields) == 0 {
			fields = []string{"private"}
		}
		out = append(out, l.mp+" "+strings.Join(fields, " "))
	}
	return out
}

// waitMounted waits until mountinfo (read by read) has a mount at mp.
func waitMounted(t *testing.T, what, mp string, read func() string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		info := read()
		for _, l := range strings.Split(info, "\n") {
			if f := strings.Fields(l); len(f) > 4 && f[4] == mp {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no mount at %s:\n%s", what, mp, info)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestContainerMountPropagation: runc containers with rootfsPropagation
// "rslave" (on a rootfs that is a shared mount of the host) or "shared",
// a bind with "rslave" and one with "rshared" of shared host
// directories, and inside them a shared tmpfs with a peer bind and a
// slave bind, and an unbindable tmpfs. After checkpoint and restore
// every mount has the propagation it had (mountinfo's optional fields,
// group numbers normalised), and mounts made afterwards travel as they
// did before: from the host into the slaves, both ways between the host
// and the container where they are peers, from the container's group
// to its peer and its slave and not back.
func TestContainerMountPropagation(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rootProp string
		// the rootfs is a shared mount of the host (with "shared",
		// pivot_root would refuse it)
		sharedRootfs bool
		// the "rshared" bind is a peer of the host directory, not
		// shared and a slave of it
		peerOfHost bool
		want       []string
	}{
		{"rslave root: the root and the binds follow the host", "rslave", true, false,
			[]string{"/ master:host:", "/mnt/slave master:host:", "/mnt/shared master:host:", "/mnt/peer shared:g", "/mnt/sl master:g", "/mnt/unb unbindable"}},
		{"shared root: the rshared bind is a peer of the host", "shared", false, true,
			[]string{"/ shared:g1", "/mnt/slave master:host:", "/mnt/shared shared:host:", "/mnt/peer shared:g", "/mnt/sl master:g", "/mnt/unb unbindable"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testPropagation(t, tc.rootProp, tc.sharedRootfs, tc.peerOfHost, tc.want)
		})
	}
}

func testPropagation(t *testing.T, rootProp string, sharedRootfs, peerOfHost bool, want []string) {
	needRunc(t)
	hostDir := t.TempDir()
	src := filepath.Join(hostDir, "src")
	hostMount(t, src, true)
	for _, d := range []string{"a", "b"} {
		os.MkdirAll(filepath.Join(src, d), 0o755)
	}
	c := newContainer(t, "prop", func(s *specs.Spec) {
		s.Linux.RootfsPropagation = rootProp
		addCaps(s, "CAP_SYS_ADMIN")
		s.Mounts = append(s.Mounts,
			specs.Mount{Destination: "/mnt/slave", Type: "bind", Source: filepath.Join(src, "a"), Options: []string{"rbind", "rslave"}},
			specs.Mount{Destination: "/mnt/shared", Type: "bind", Source: filepath.Join(src, "b"), Options: []string{"rbind", "rshared"}})
	})
	for _, d := range []string{"grp", "peer", "sl", "unb", "hroot1", "hroot2"} {
		os.MkdirAll(filepath.Join(c.rootfs, "mnt", d), 0o755)
	}
	if sharedRootfs {
		// With "rslave" the container's root is a slave of it.
		if err := unix.Mount(c.rootfs, c.rootfs, "", unix.MS_BIND, ""); err != nil {
			t.Fatalf("bind the rootfs on itself: %v", err)
		}
		t.Cleanup(func() { unix.Unmount(c.rootfs, unix.MNT_DETACH) })
		if err := unix.Mount("none", c.rootfs, "", unix.MS_SHARED, ""); err != nil {
			t.Fatal(err)
		}
	}
	c.start()
	if rootProp == "shared" {
		// runc 1.1 makes the root shared before pivot_root only, where
		// it does not stick; the container can do it itself.
		c.mustExec(t, "mount --make-shared /")
	}
	c.mustExec(t, `set -e
mount -t tmpfs grp /mnt/grp; mount --make-shared /mnt/grp
mount --bind /mnt/grp /mnt/peer
mount --bind /mnt/grp /mnt/sl; mount --make-slave /mnt/sl
mount -t tmpfs unb /mnt/unb; mount --make-unbindable /mnt/unb`)
	inside := func() string { out, _ := c.exec("cat /proc/self/mountinfo"); return out }
	onHost := func() string { b, _ := os.ReadFile("/proc/self/mountinfo"); return string(b) }

	// travels checks that mounts made now go where propagation says; n
	// tells the rounds apart. Propagation happens within mount(2), so
	// a mount that did not arrive at once never will.
	travels := func(t *testing.T, when string, n int) {
		t.Helper()
		hostMount(t, filepath.Join(src, "a", fmt.Sprint("p", n)), false)
		waitMounted(t, when+": a host mount below the rslave bind's source", fmt.Sprintf("/mnt/slave/p%d", n), inside)
		if sharedRootfs {
			hostMount(t, filepath.Join(c.rootfs, "mnt", fmt.Sprint("hroot", n)), false)
			waitMounted(t, when+": a host mount below the shared rootfs", fmt.Sprintf("/mnt/hroot%d", n), inside)
		}
		hostMount(t, filepath.Join(src, "b", fmt.Sprint("h", n)), false)
		waitMounted(t, when+": a host mount below the rshared bind's source", fmt.Sprintf("/mnt/shared/h%d", n), inside)
		hostC := filepath.Join(src, "b", fmt.Sprint("c", n))
		t.Cleanup(func() { unix.Unmount(hostC, unix.MNT_DETACH) })
		c.mustExec(t, fmt.Sprintf("mkdir -p /mnt/shared/c%d && mount -t tmpfs c /mnt/shared/c%d", n, n))
		if peerOfHost {
			waitMounted(t, when+": a container mount below the rshared bind, on the host", hostC, onHost)
		} else if strings.Contains(onHost(), " "+hostC+" ") {
			t.Errorf("%s: a container mount below the rshared bind that is a slave of the host reached the host at %s", when, hostC)
		}
		c.mustExec(t, fmt.Sprintf("mkdir -p /mnt/grp/x%d /mnt/grp/y%d && mount -t tmpfs x /mnt/grp/x%d && mount -t tmpfs y /mnt/sl/y%d", n, n, n, n))
		info := inside()
		for _, mp := range []string{"/mnt/peer/x%d", "/mnt/sl/x%d"} {
			waitMounted(t, when+": a mount in the shared tmpfs, in its peer and its slave", fmt.Sprintf(mp, n), inside)
		}
		for _, mp := range []string{"/mnt/grp/y%d", "/mnt/peer/y%d"} {
			if strings.Contains(info, fmt.Sprintf(" "+mp+" ", n)) {
				t.Errorf("%s: a mount in the slave bind reached %s:\n%s", when, fmt.Sprintf(mp, n), info)
			}
		}
		if out, err := c.exec(fmt.Sprintf("mkdir -p /tmp/u%d && mount --bind /mnt/unb /tmp/u%d", n, n)); err == nil {
			t.Errorf("%s: binding the unbindable /mnt/unb worked:\n%s", when, out)
		}
	}
	travels(t, "before the checkpoint", 1)

	before := propagationOf(t, inside(), hostGroups(t))
	joined := strings.Join(before, "\n")
	for _, w := range want {
		if !strings.Contains(joined, w) {
			t.Fatalf("before the checkpoint the container's mountinfo has no %q: the setup did not do what the test needs:\n%s", w, joined)
		}
	}

	dir := filepath.Join(t.TempDir(), "ck")
	checkpointContainer(t, c, dir)
	// The image says whether the rshared bind's group had the host
	// directory in it (internal_sharing false), as restore goes by
	// that, not by the host's group numbers then.
	ents, err := images.ReadAll(filepath.Join(dir, "images", images.Mnts.FileName(1)), images.Mnts, func() *mnt.MntEntry { return &mnt.MntEntry{} })
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.GetMountpoint() == "/mnt/shared" && (e.InternalSharing == nil || e.GetInternalSharing() == peerOfHost) {
			t.Errorf("/mnt/shared in the image: internal_sharing %v, want %v", e.InternalSharing, !peerOfHost)
		}
	}
	restoreContainer(t, c, dir)

	// The host's groups as they are now: a number one of them had
	// before may have been freed (another test's mount, in another
	// process) and given to a group the restore made; a group the
	// container shares with the host keeps its number, being alive.
	after := propagationOf(t, inside(), hostGroups(t))
	if strings.Join(after, "\n") != joined {
		t.Fatalf("propagation after restore differs:\n%s\nbefore the checkpoint:\n%s", strings.Join(after, "\n"), joined)
	}
	travels(t, "after restore", 2)
}
