package ns

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ctcr/ctcr/criu/images"
)

// newNetns starts `unshare -n sleep` and returns its PID: a task alone
// in a new network namespace, ended at cleanup.
func newNetns(t *testing.T) int {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: it creates network namespaces")
	}
	for _, bin := range []string{"unshare", "nsenter", "ip"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s is not installed (util-linux, iproute2)", bin)
		}
	}
	cmd := exec.Command("unshare", "-n", "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// unshare execs sleep once the namespace exists.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if b, _ := os.ReadFile("/proc/" + itoa(cmd.Process.Pid) + "/comm"); strings.TrimSpace(string(b)) == "sleep" {
			return cmd.Process.Pid
		}
		if time.Now().After(deadline) {
			t.Fatal("unshare -n sleep did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func nlmsghdr(typ uint16) syscall.NlMsghdr { return syscall.NlMsghdr{Type: typ} }

// inNetns runs a command in pid's network namespace.
func inNetns(t *testing.T, pid int, stdin []byte, args ...string) string {
	t.Helper()
	cmd := exec.Command("nsenter", append([]string{"-t", itoa(pid), "-n"}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter -n %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	// An IPv6 address is "tentative" until duplicate address detection
	// is over, a moment after it is added: a passing state, not kept.
	return strings.ReplaceAll(string(out), " tentative", "")
}

// TestLoopbackRoundTrip: lo with extra IPv4 and IPv6 addresses and
// another MTU is dumped from one namespace and restored into a fresh
// one, where `ip addr show dev lo` prints the same; `ip addr restore`
// applies the same ifaddr image (CRIU's way of restoring it).
func TestLoopbackRoundTrip(t *testing.T) {
	want, stage := loRoundTrip(t, "ip link set lo up mtu 1500 && ip addr add 10.77.0.1/32 dev lo && ip addr add 10.78.0.1/24 brd + dev lo label lo:x && ip -6 addr add fd00:77::1/128 dev lo")

	img, err := os.ReadFile(stage.Path(ifaddrImage))
	if err != nil {
		t.Fatal(err)
	}
	byIP := newNetns(t)
	inNetns(t, byIP, nil, "ip", "link", "set", "lo", "up", "mtu", "1500")
	inNetns(t, byIP, img, "ip", "addr", "restore")
	if got := inNetns(t, byIP, nil, "ip", "addr", "show", "dev", "lo"); got != want {
		t.Errorf("lo after ip addr restore < ifaddr-1.img:\n%s\nwant:\n%s", got, want)
	}
}

// TestLoopbackDownStaysDown: lo that was down comes back down, with
// the address it had.
func TestLoopbackDownStaysDown(t *testing.T) {
	loRoundTrip(t, "ip addr add 10.79.0.1/32 dev lo")
}

// loRoundTrip runs the shell commands setup in a new network namespace,
// dumps it and restores it into another, where `ip addr show dev lo`
// must print the same. It returns that and the images.
func loRoundTrip(t *testing.T, setup string) (string, *images.Staging) {
	t.Helper()
	src := newNetns(t)
	inNetns(t, src, nil, "sh", "-c", setup)
	want := inNetns(t, src, nil, "ip", "addr", "show", "dev", "lo")
	stage, err := images.NewStaging(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := DumpNet(src, stage); err != nil {
		t.Fatal(err)
	}
	dst := newNetns(t)
	if err := RestoreNet(dst, stage.Dir); err != nil {
		t.Fatal(err)
	}
	if got := inNetns(t, dst, nil, "ip", "addr", "show", "dev", "lo"); got != want {
		t.Errorf("lo after RestoreNet:\n%s\nwant:\n%s", got, want)
	}
	return want, stage
}

// TestIfaddrImageBounds: a damaged ifaddr image is refused with an
// error naming it, never read past its end.
func TestIfaddrImageBounds(t *testing.T) {
	good := appendNlmsg([]byte{0x22, 0x12, 0x36, 0x47}, nlmsghdr(20), make([]byte, 8))
	if _, err := parseIfaddrImage(good, "x.img"); err != nil {
		t.Fatalf("a well-formed image: %v", err)
	}
	for name, b := range map[string][]byte{
		"empty":            nil,
		"wrong magic":      append([]byte{1, 2, 3, 4}, good[4:]...),
		"truncated":        good[:len(good)-3],
		"length too long":  append(append([]byte(nil), good[:4]...), append([]byte{0xff, 0xff, 0, 0}, good[8:]...)...),
		"length too short": append(append([]byte(nil), good[:4]...), append([]byte{4, 0, 0, 0}, good[8:]...)...),
	} {
		if _, err := parseIfaddrImage(b, "x.img"); err == nil || !strings.Contains(err.Error(), "x.img") {
			t.Errorf("%s: error %v, want one naming x.img", name, err)
		}
	}
}

func FuzzParseIfaddrImage(f *testing.F) {
	f.Add(appendNlmsg([]byte{0x22, 0x12, 0x36, 0x47}, nlmsghdr(20), make([]byte, 8)))
	f.Fuzz(func(t *testing.T, b []byte) { parseIfaddrImage(b, "fuzz") })
}
