package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTimeNamespace dumps a tree in a time namespace of its own whose
// boot time runs 200000 s ahead of the host's, restores it and expects
// its clock to go on from where it was at the dump (the namespace is
// made again with offsets to match), not from the host's.
func TestTimeNamespace(t *testing.T) {
	needCtcr(t)
	dir := t.TempDir()
	script := `while :; do cat /proc/uptime > "$0/up.tmp" && mv "$0/up.tmp" "$0/up"; sleep 0.1; done`
	cmd := exec.Command("unshare", "--time", "--fork", "--boottime", "200000", "--monotonic", "100000", "sh", "-c", script, dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	uptime := func() float64 {
		b, _ := os.ReadFile(filepath.Join(dir, "up"))
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return 0
		}
		v, _ := strconv.ParseFloat(f[0], 64)
		return v
	}
	var sh int
	for end := time.Now().Add(10 * time.Second); sh == 0 || uptime() == 0; time.Sleep(20 * time.Millisecond) {
		for pid := range childrenOf(cmd.Process.Pid) {
			sh = pid
		}
		if time.Now().After(end) {
			t.Fatal("unshare --time started nothing that reports its uptime in 10 s")
		}
	}
	var host unix.Sysinfo_t
	unix.Sysinfo(&host)
	if up := uptime(); up < float64(host.Uptime)+199000 {
		t.Fatalf("inside, uptime is %.0f s, the host's %d s: the namespace's offset did not take", up, host.Uptime)
	}
	img := filepath.Join(t.TempDir(), "img")
	r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(sh), "-D", img)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d; stderr: %s", r, r.code(), r.stderr())
	}
	cmd.Wait()
	// The tree's killed children were re-parented to this subreaper.
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		zombies := 0
		for pid, st := range childrenOf(os.Getpid()) {
			if st.state == 'Z' {
				reap(pid, time.Second)
				zombies++
			}
		}
		if zombies == 0 && !exists(sh) {
			break
		}
	}
	atDump := uptime()
	time.Sleep(2 * time.Second) // time the tree should not see pass
	os.Remove(filepath.Join(dir, "up"))
	r = runCtcr(t, 60*time.Second, "restore", "-D", img, "-d")
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d; stderr: %s", r, r.code(), r.stderr())
	}
	t.Cleanup(func() { unix.Kill(sh, unix.SIGKILL); reap(sh, 10*time.Second) })
	var after float64
	for end := time.Now().Add(10 * time.Second); after == 0; time.Sleep(20 * time.Millisecond) {
		after = uptime()
		if time.Now().After(end) {
			t.Fatal("the restored tree reports no uptime in 10 s")
		}
	}
	if after < atDump || after > atDump+1.5 {
		t.Errorf("inside, uptime was %.2f s at the dump and is %.2f s after restore; want it to go on from there (the 2 s the tree was away unseen)", atDump, after)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/timens_offsets", sh))
	var boot int64
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "boottime" {
			boot, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	if err != nil || boot < 199990 || boot >= 200000 {
		t.Errorf("the restored tree's time namespace offsets are %q (%v), want a boottime offset a few seconds under 200000 s", b, err)
	}
}
