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
