package ns

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/netdev"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
)

// netState is what `ip` prints of pid's namespace that a restore must
// give back: devices (name, MTU, MAC, up, peer), addresses, routes of
// the main table. Counters, qdisc and operational state are left out;
// the peer's ifindex is kept as ip prints it (vethX@ifN).
func netState(t *testing.T, pid int) string {
	t.Helper()
	links := inNetns(t, pid, nil, "ip", "-o", "link", "show")
	var out []string
	keep := regexp.MustCompile(`^\d+: (\S+): <([^>]*)> mtu (\d+).*link/\S+ (\S+)`)
	for _, l := range strings.Split(strings.TrimSpace(links), "\n") {
		m := keep.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("ip -o link show: unexpected line %q", l)
		}
		up := strings.Contains(","+m[2]+",", ",UP,")
		out = append(out, fmt.Sprintf("%s up=%v mtu=%s mac=%s", m[1], up, m[3], m[4]))
	}
	addrs := inNetns(t, pid, nil, "ip", "-o", "addr", "show")
	for _, l := range strings.Split(strings.TrimSpace(addrs), "\n") {
		f := strings.Fields(l)
		// The kernel makes the IPv6 link-local address a moment after
		// the device is up: there or not yet, it is not the restore's.
		if len(f) >= 4 && !strings.HasPrefix(f[3], "fe80:") {
			out = append(out, "addr "+f[1]+" "+f[3])
		}
	}
	out = append(out, strings.Split(strings.TrimSpace(inNetns(t, pid, nil, "ip", "route", "show", "table", "main")), "\n")...)
	for _, l := range strings.Split(strings.TrimSpace(inNetns(t, pid, nil, "ip", "-6", "route", "show", "table", "main")), "\n") {
		// fe80::/64 comes with the link-local address, see above.
		if !strings.HasPrefix(l, "fe80::") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestVethRoundTrip: a veth pair between two network namespaces (MTU,
// MAC, addresses, a route through the peer), plus a pair with both
// ends in the first, is dumped from them and restored into two fresh
// ones, each restored in turn as the engine makes them: `ip` prints
// the same devices, addresses and routes, and a ping crosses the pair.
func TestVethRoundTrip(t *testing.T) {
	a, b := newNetns(t), newNetns(t)
	inNetns(t, a, nil, "sh", "-c", fmt.Sprintf(`set -e
ip link set lo up
ip link add vetha0 mtu 1400 address 02:00:00:00:aa:01 type veth peer name vethb0 mtu 1400 address 02:00:00:00:bb:01 netns /proc/%d/ns/net
ip addr add 10.91.0.1/24 dev vetha0
ip link set vetha0 up
ip route add 10.92.0.0/24 via 10.91.0.2 dev vetha0
ip -6 addr add fd00:91::1/64 dev vetha0 nodad
ip -6 route add fd00:92::/64 via fd00:91::2 dev vetha0
ip link add vethx0 type veth peer name vethx1
ip link set vethx0 up`, b))
	inNetns(t, b, nil, "sh", "-c", `set -e
ip link set lo up
ip addr add 10.92.0.5/32 dev lo
ip addr add 10.91.0.2/24 dev vethb0
ip link set vethb0 up
ip route add default via 10.91.0.1`)
	wantA, wantB := netState(t, a), netState(t, b)
	stage, err := images.NewStaging(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	idB, err := NestedID(b, "net")
	if err != nil {
		t.Fatal(err)
	}
	spaces, err := netSpaces(a, []int{b}, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := dumpNetNS(a, stage, netNsID, spaces, true); err != nil {
		t.Fatal(err)
	}
	if err := dumpNetNS(b, stage, idB, spaces, true); err != nil {
		t.Fatal(err)
	}
	ra, rb := newNetns(t), newNetns(t)
	if err := RestoreNet(ra, stage.Dir); err != nil {
		t.Fatalf("restore of the first namespace: %v", err)
	}
	if err := restoreNetAs(rb, stage.Dir, idB); err != nil {
		t.Fatalf("restore of the second namespace: %v", err)
	}
	if got := netState(t, ra); got != wantA {
		t.Errorf("first namespace after restore:\n%s\nwant:\n%s", got, wantA)
	}
	if got := netState(t, rb); got != wantB {
		t.Errorf("second namespace after restore:\n%s\nwant:\n%s", got, wantB)
	}
	// Traffic crosses the pair: a connection from the first namespace
	// to the second's address on lo, through the route via the peer.
	var ln net.Listener
	if err := inNamespace(rb, "net", unix.CLONE_NEWNET, func() (err error) {
		ln, err = net.Listen("tcp4", "10.92.0.5:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := inNamespace(ra, "net", unix.CLONE_NEWNET, func() error {
		c, err := net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		t.Errorf("connect across the restored pair: %v", err)
	}
}

// TestOtherDevicesRefused: a bridge or a tun in a saved namespace is
// refused by name and kind; a container's own namespace leaves it out.
func TestOtherDevicesRefused(t *testing.T) {
	a := newNetns(t)
	inNetns(t, a, nil, "sh", "-c", "ip link add br7 type bridge && ip tuntap add tun7 mode tun")
	stage, err := images.NewStaging(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	spaces, err := netSpaces(a, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	err = dumpNetNS(a, stage, netNsID, spaces, true)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "br7 (bridge)") || !strings.Contains(err.Error(), "tun7 (tun)") {
		t.Errorf("dump of a bridge and a tun: %v, want a refusal naming br7 (bridge) and tun7 (tun)", err)
	}
	if err := dumpNetNS(a, stage, netNsID, spaces, false); err != nil {
		t.Errorf("non-strict dump: %v", err)
	}
	devs, err := images.ReadAll(stage.Path(images.Netdev.FileName(netNsID)), images.Netdev, func() *netdev.NetDeviceEntry { return &netdev.NetDeviceEntry{} })
	if err != nil || len(devs) != 1 || devs[0].GetName() != "lo" {
		t.Errorf("non-strict dump saved %v (%v), want lo alone", devs, err)
	}
}

// TestVethIntoUnsavedNamespaceRefused: a veth whose peer is in a
// namespace the dump does not save is refused, naming both ends.
func TestVethIntoUnsavedNamespaceRefused(t *testing.T) {
	a, b := newNetns(t), newNetns(t)
	inNetns(t, a, nil, "ip", "link", "add", "vethin0", "type", "veth", "peer", "name", "vethout0", "netns", fmt.Sprintf("/proc/%d/ns/net", b))
	stage, err := images.NewStaging(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	spaces, err := netSpaces(a, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	err = dumpNetNS(a, stage, netNsID, spaces, true)
	if err == nil || !strings.Contains(err.Error(), "vethin0 (veth): its peer (ifindex") {
		t.Errorf("dump of a veth into another namespace: %v, want a refusal naming vethin0", err)
	}
	// With b among the tree's namespaces but not saved (the host's when
	// the root shares it), the refusal names the peer too.
	spaces = append(spaces, netNS{pid: b, what: "the host's network namespace"})
	err = dumpNetNS(a, stage, netNsID, spaces, true)
	if err == nil || !strings.Contains(err.Error(), "vethin0 (veth): its peer vethout0 is in the host's network namespace") {
		t.Errorf("dump of a veth into the host's namespace: %v, want a refusal naming vethin0 and vethout0", err)
	}
	// A container's own namespace leaves it out instead.
	if err := dumpNetNS(a, stage, netNsID, spaces, false); err != nil {
		t.Errorf("non-strict dump: %v", err)
	}
}

// TestRouteImageBounds: a damaged route image is refused with an error
// naming it, never read past its end; an ifaddr message in it is not a
// route.
func TestRouteImageBounds(t *testing.T) {
	magic := []byte{0x24, 0x12, 0x31, 0x45}
	good := appendNlmsg(append([]byte(nil), magic...), nlmsghdr(24), make([]byte, 12))
	if _, err := parseNlmsgImage(good, "r.img", routeMagic, 24, 12); err != nil {
		t.Fatalf("a well-formed image: %v", err)
	}
	for name, b := range map[string][]byte{
		"empty":          nil,
		"ifaddr magic":   append([]byte{0x22, 0x12, 0x36, 0x47}, good[4:]...),
		"truncated":      good[:len(good)-3],
		"not a route":    appendNlmsg(append([]byte(nil), magic...), nlmsghdr(20), make([]byte, 12)),
		"short payload":  appendNlmsg(append([]byte(nil), magic...), nlmsghdr(24), make([]byte, 8)),
		"length too big": append(append([]byte(nil), magic...), append([]byte{0xff, 0xff, 0, 0}, good[8:]...)...),
	} {
		if _, err := parseNlmsgImage(b, "r.img", routeMagic, 24, 12); err == nil || !strings.Contains(err.Error(), "r.img") {
			t.Errorf("%s: error %v, want one naming r.img", name, err)
		}
	}
}

// TestNetdevImageOtherTypeRefused: a netdev image with a device ctcr
// does not make (a tun) is refused at restore, naming the device.
func TestNetdevImageOtherTypeRefused(t *testing.T) {
	dir := t.TempDir()
	devs := []proto.Message{
		&netdev.NetDeviceEntry{Type: netdev.NdType_LOOPBACK.Enum(), Ifindex: proto.Uint32(1), Mtu: proto.Uint32(65536), Flags: proto.Uint32(0), Name: proto.String("lo")},
		&netdev.NetDeviceEntry{Type: netdev.NdType_TUN.Enum(), Ifindex: proto.Uint32(2), Mtu: proto.Uint32(1500), Flags: proto.Uint32(0), Name: proto.String("tun7")},
	}
	if err := images.WriteFile(filepath.Join(dir, images.Netdev.FileName(5)), images.Netdev, devs...); err != nil {
		t.Fatal(err)
	}
	_, err := readNetImages(dir, 5)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), `"tun7"`) {
		t.Errorf("restore of a tun: %v, want a refusal naming tun7", err)
	}
}

func FuzzParseRouteImage(f *testing.F) {
	f.Add(appendNlmsg([]byte{0x24, 0x12, 0x31, 0x45}, nlmsghdr(24), make([]byte, 12)))
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, err := parseNlmsgImage(b, "fuzz", routeMagic, unix.RTM_NEWROUTE, unix.SizeofRtMsg)
		if err != nil {
			return
		}
		for _, m := range msgs {
			parseRoute(m.Data)
			setRouteOif(m.Data, 7)
		}
	})
}

// TestVethNameTakenRefused: a restore into a namespace where a device
// already has the name of the pair's end fails, after a bounded wait
// for it to go, naming it.
func TestVethNameTakenRefused(t *testing.T) {
	a, b := newNetns(t), newNetns(t)
	inNetns(t, a, nil, "ip", "link", "add", "vethn0", "type", "veth", "peer", "name", "vethn1", "netns", fmt.Sprintf("/proc/%d/ns/net", b))
	stage, err := images.NewStaging(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	idB, _ := NestedID(b, "net")
	spaces, err := netSpaces(a, []int{b}, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := dumpNetNS(a, stage, netNsID, spaces, true); err != nil {
		t.Fatal(err)
	}
	if err := dumpNetNS(b, stage, idB, spaces, true); err != nil {
		t.Fatal(err)
	}
	ra, rb := newNetns(t), newNetns(t)
	inNetns(t, ra, nil, "ip", "link", "add", "vethn0", "type", "veth", "peer", "name", "vethzz0")
	defer func(d time.Duration) { vethGoneTimeout = d }(vethGoneTimeout)
	vethGoneTimeout = 300 * time.Millisecond
	if err := RestoreNet(ra, stage.Dir); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = restoreNetAs(rb, stage.Dir, idB)
	if err == nil || !strings.Contains(err.Error(), "vethn1") || !strings.Contains(err.Error(), "is there already") {
		t.Errorf("restore with vethn0 taken: %v, want an error naming the pair", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the refusal took %v", d)
	}
}
