package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestContainerLoopbackAddresses: a runc container adds an IPv4 and an
// IPv6 address to its lo and changes its MTU (busybox ip); after
// checkpoint and restore `ip addr show dev lo` inside it prints what it
// printed before. The images are CRIU's: netdev-1.img decodes with
// crit, ifaddr-1.img is what `ip addr save` writes (ip addr showdump
// reads it).
func TestContainerLoopbackAddresses(t *testing.T) {
	c := newContainer(t, "lo", func(s *specs.Spec) { addCaps(s, "CAP_NET_ADMIN") })
	c.start()
	c.mustExec(t, "ip addr add 10.77.0.1/32 dev lo && ip -6 addr add fd00:77::1/128 dev lo && ip link set dev lo mtu 9000")
	const show = "ip addr show dev lo"
	before := c.mustExec(t, show)
	for _, want := range []string{"10.77.0.1/32", "fd00:77::1/128", "127.0.0.1/8", "mtu 9000", "UP"} {
		if !strings.Contains(before, want) {
			t.Fatalf("before the checkpoint `%s` shows no %q: the setup failed:\n%s", show, want, before)
		}
	}
	dir := filepath.Join(t.TempDir(), "ck")
	checkpointContainer(t, c, dir)
	imgs := filepath.Join(dir, "images")
	t.Run("the images are CRIU's", func(t *testing.T) {
		f, err := os.Open(filepath.Join(imgs, "ifaddr-1.img"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if ip, err := exec.LookPath("ip"); err == nil {
			cmd := exec.Command(ip, "addr", "showdump")
			cmd.Stdin = f
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "10.77.0.1/32") || !strings.Contains(string(out), "fd00:77::1/128") {
				t.Errorf("ip addr showdump < ifaddr-1.img: %v\n%s", err, out)
			}
		}
		crit, err := exec.LookPath("crit")
		if err != nil {
			t.Skip("crit is not installed (apt-get install criu python3-protobuf)")
		}
		out, err := exec.Command(crit, "decode", "--pretty", "-i", filepath.Join(imgs, "netdev-1.img")).CombinedOutput()
		if strings.Contains(string(out), "No module named 'google'") {
			t.Skip("crit needs python3-protobuf")
		}
		if err != nil || !strings.Contains(string(out), `"LOOPBACK"`) || !strings.Contains(string(out), "9000") {
			t.Errorf("crit decode -i netdev-1.img: %v\n%s", err, out)
		}
	})
	restoreContainer(t, c, dir)
	after := c.mustExec(t, show)
	if after != before {
		t.Errorf("`%s` after restore:\n%s\nbefore the checkpoint:\n%s", show, after, before)
	}
}
