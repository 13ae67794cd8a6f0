package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/netdev"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ctcr/ctcr/criu/images"
)

// TestPlainVethPair: a plain tree whose root unshared a network
// namespace and whose child unshared a nested one, the two joined by a
// veth pair (veth workload, "own"), is dumped and restored: each end
// comes back in its namespace with its name, ifindex, MTU, MAC address,
// up state, addresses and the routes through it (the root's route via
// the peer, the child's default route), the TCP connection made across
// the pair before the dump carries data again, and a new one crosses
// the pair. The images hold one NetDeviceEntry per end, each naming its
// peer and the peer's namespace, as CRIU writes them.
func TestPlainVethPair(t *testing.T) {
	needCtcr(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) is not installed")
	}
	w := startWorkload(t, "veth", "own")
	kids := descendantsOf(w.pid)
	img := filepath.Join(t.TempDir(), "img")
	dump(t, w, img, false, 0)
	for _, k := range kids {
		if _, _, err := reap(k, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	ends := map[string]*netdev.NetDeviceEntry{}
	files := map[string]string{}
	devImgs, _ := filepath.Glob(filepath.Join(img, "netdev-*.img"))
	for _, p := range devImgs {
		devs, err := images.ReadAll(p, images.Netdev, func() *netdev.NetDeviceEntry { return &netdev.NetDeviceEntry{} })
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range devs {
			if d.GetType() == netdev.NdType_VETH {
				ends[d.GetName()] = d
				files[d.GetName()] = filepath.Base(p)
			}
		}
	}
	r, k := ends["vethroot0"], ends["vethkid0"]
	if r == nil || k == nil {
		t.Fatalf("veth ends in the images: %v (in %v), want vethroot0 and vethkid0", ends, devImgs)
	}
	if files["vethroot0"] != "netdev-1.img" || r.GetPeerIfindex() != k.GetIfindex() || k.GetPeerIfindex() != r.GetIfindex() ||
		fmt.Sprintf("netdev-%d.img", r.GetPeerNsid()) != files["vethkid0"] || k.GetPeerNsid() != 1 || r.GetMtu() != 1400 {
		t.Errorf("the pair in the images: %v in %s, %v in %s; want each naming the other's ifindex and namespace, MTU 1400",
			r, files["vethroot0"], k, files["vethkid0"])
	}
	for _, name := range []string{"route-1.img", "route6-1.img", "ifaddr-1.img"} {
		if _, err := os.Stat(filepath.Join(img, name)); err != nil {
			t.Errorf("the checkpoint lacks %s: %v", name, err)
		}
	}
	restoreForeground(t, w, img, scenario{}, nil)
	if !t.Failed() {
		decodeWithCrit(t, img)
	}
}

// TestPlainVethIntoHostRefused: a nested network namespace whose veth's
// peer is in the host's namespace (the root shares it, so the
// checkpoint does not save it) is refused by the dump with one line
// naming the device and its peer, and the tree runs on.
func TestPlainVethIntoHostRefused(t *testing.T) {
	needCtcr(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) is not installed")
	}
	w := startWorkload(t, "veth", "host")
	hostDev := fmt.Sprintf("veth%dh", w.pid)
	t.Cleanup(func() { exec.Command("ip", "link", "del", hostDev).Run() })
	img := filepath.Join(t.TempDir(), "img")
	r := runCtcr(t, 120*time.Second, "dump", "-t", fmt.Sprint(w.pid), "-D", img)
	w.logs = append(w.logs, r.errP)
	want := fmt.Sprintf("vethkid0 (veth): its peer %s is in the host's network namespace", hostDev)
	if r.code() != 1 || !strings.Contains(r.stderr(), want) {
		t.Fatalf("%s: exit status %d, stderr %q; want 1 and a line naming %q", r, r.code(), r.stderr(), want)
	}
	if n := strings.Count(strings.TrimSpace(r.stderr()), "\n"); n != 0 {
		t.Errorf("stderr has %d lines, want one: %q", n+1, r.stderr())
	}
	if !exists(w.pid) {
		t.Errorf("the tree is gone after a refused dump")
	}
}

// TestRuncNestedVethPair: a runc container whose init forks a child
// that unshares a nested network namespace, joined to the container's
// own by a veth pair (veth workload, "ct"; the test makes the pair from
// outside with the host's ip), is checkpointed and restored: the
// container's end is made in the container's namespace (a new one; or
// the one the runtime made and named by path, as CNI does, joined
// again), the nested one in the child's, with their MTU, MAC,
// addresses and routes, and the connection across the pair and a new
// one work (the workload checks).
func TestRuncNestedVethPair(t *testing.T) {
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) is not installed")
	}
	t.Run("in a network namespace of its own", func(t *testing.T) { runcNestedVethPair(t, false) })
	t.Run("in the runtime's network namespace named by path", func(t *testing.T) { runcNestedVethPair(t, true) })
}

func runcNestedVethPair(t *testing.T, byPath bool) {
	netns := fmt.Sprintf("veth-ctcrt-%d", os.Getpid())
	if byPath {
		if out, err := exec.Command("ip", "netns", "add", netns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v\n%s", netns, err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "del", netns).Run() })
	}
	c := newContainer(t, "veth", func(s *specs.Spec) {
		s.Process.Args = []string{"/veth", "/data", "ct"}
		addCaps(s, "CAP_SYS_ADMIN", "CAP_NET_ADMIN")
		if byPath {
			for i, ns := range s.Linux.Namespaces {
				if ns.Type == specs.NetworkNamespace {
					s.Linux.Namespaces[i].Path = "/var/run/netns/" + netns
				}
			}
		}
	})
	buildStaticWorkload(t, "veth", filepath.Join(c.rootfs, "veth"))
	pid := c.runDetached(t)
	data := func(pid int, name string) string { return fmt.Sprintf("/proc/%d/root/data/%s", pid, name) }
	waitData := func(pid int, name string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			if _, err := os.Stat(data(pid, name)); err == nil {
				return
			}
			if time.Now().After(deadline) {
				errs, _ := os.ReadFile(data(pid, "err"))
				t.Fatalf("no /data/%s after 15s; stderr: %s", name, errs)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitData(pid, "ready-pids")
	kids := descendantsOf(pid)
	if len(kids) != 1 {
		t.Fatalf("the container's init %d has descendants %v, want one", pid, kids)
	}
	sh := func(pid int, script string) {
		t.Helper()
		if out, err := exec.Command("nsenter", "-t", fmt.Sprint(pid), "-n", "sh", "-c", "set -e\n"+script).CombinedOutput(); err != nil {
			t.Fatalf("in the network namespace of %d: %s: %v\n%s", pid, script, err, out)
		}
	}
	sh(pid, fmt.Sprintf(`ip link add vethroot0 mtu 1400 address 02:00:00:77:00:01 type veth peer name vethkid0 mtu 1400 address 02:00:00:77:00:02 netns /proc/%d/ns/net
ip link set vethroot0 up
ip addr add 10.77.0.1/24 dev vethroot0
ip route add 10.78.0.0/24 via 10.77.0.2 dev vethroot0`, kids[0]))
	sh(kids[0], `ip link set vethkid0 up
ip addr add 10.77.0.2/24 dev vethkid0
ip addr add 10.78.0.5/32 dev lo
ip route add default via 10.77.0.1 dev vethkid0`)
	if err := os.WriteFile(data(pid, "veth-made"), []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitData(pid, "ready")

	dir := filepath.Join(t.TempDir(), "ck")
	checkpointContainer(t, c, dir)
	reap(pid, 5*time.Second)
	devs, err := images.ReadAll(filepath.Join(dir, "images", "netdev-1.img"), images.Netdev, func() *netdev.NetDeviceEntry { return &netdev.NetDeviceEntry{} })
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range devs {
		names = append(names, d.GetName())
	}
	if fmt.Sprint(names) != "[lo vethroot0]" {
		t.Errorf("the container's netdev-1.img holds %v, want lo and vethroot0", names)
	}
	restoreContainer(t, c, dir)
	npid := c.inits[len(c.inits)-1]
	if err := os.WriteFile(data(npid, "check"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// The init ends once it has checked, and the container with it
	// (its /data too): its verdict is read from its output, which runc
	// logs.
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, _ := os.ReadFile(c.logFile())
		if strings.Contains(string(out), "FAIL") || strings.Contains(string(out), "workload:") {
			t.Fatalf("after restore the workload says: %s", out)
		}
		if strings.Contains(string(out), "PASS") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no verdict 60s after the check was asked for (init %s); its output: %s", describe(npid), out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	decodeWithCrit(t, filepath.Join(dir, "images"))
}
