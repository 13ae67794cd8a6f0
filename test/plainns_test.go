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

// descendantsOf lists every task below pid (children, grandchildren...).
func descendantsOf(pid int) []int {
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for k := range childrenOf(p) {
			out = append(out, k)
			queue = append(queue, k)
		}
	}
	return out
}

// nsInode is the inode of pid's namespace of kind.
func nsInode(t *testing.T, pid int, kind string) string {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, kind))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestPlainNestedNamespaces: a process tree whose root is in ctcr's own
// namespaces, and whose children made UTS, IPC, network or mount
// namespaces of their own (plainns workload, one state per mode), is
// dumped with a plain `ctcr dump` and restored with each task in its own
// namespace again, holding its state: the hostname; a SysV segment
// (attached), semaphore set, message queue and a POSIX queue with its
// message; lo up and a TCP listener
// it connects to; a private tmpfs with a file. In "shared" mode a child
// made all four, its own child stayed in them and its sibling joined them
// with setns: after restore the three share one set, not the root's.
func TestPlainNestedNamespaces(t *testing.T) {
	needCtcr(t)
	for _, tc := range []struct {
		mode   string
		images []string // globs, each matching one image of the nested namespace
	}{
		{"uts", []string{"utsns-*.img"}},
		{"ipc", []string{"ipcns-shm-*.img", "ipcns-sem-*.img", "ipcns-msg-*.img", "posix-mq-*.json"}},
		{"net", []string{"netdev-*.img"}},
		{"mnt", []string{"tmpfs-dev-*.tar.gz.img"}},
		{"shared", []string{"utsns-*.img", "ipcns-shm-*.img", "netdev-*.img", "tmpfs-dev-*.tar.gz.img"}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			w := startWorkload(t, "plainns", tc.mode)
			kids := descendantsOf(w.pid)
			for _, k := range kids {
				if nsInode(t, k, "uts")+nsInode(t, k, "ipc")+nsInode(t, k, "net")+nsInode(t, k, "mnt") ==
					nsInode(t, w.pid, "uts")+nsInode(t, w.pid, "ipc")+nsInode(t, w.pid, "net")+nsInode(t, w.pid, "mnt") {
					t.Fatalf("task %d is in every namespace of the root %d: the workload made none", k, w.pid)
				}
			}
			img := filepath.Join(t.TempDir(), "img")
			dump(t, w, img, false, 0)
			// The killed tasks were re-parented to this subreaper: reap
			// them, or their PIDs stay taken.
			for _, k := range kids {
				if _, _, err := reap(k, 10*time.Second); err != nil {
					t.Fatal(err)
				}
			}
			for _, g := range tc.images {
				if m, _ := filepath.Glob(filepath.Join(img, g)); len(m) != 1 {
					t.Errorf("%d images %s in the checkpoint (%v), want 1: the nested namespace's", len(m), g, m)
				}
			}
			restoreForeground(t, w, img, scenario{}, nil)
			if !t.Failed() {
				decodeWithCrit(t, img)
			}
		})
	}
}

// TestPlainRootOwnNamespaces: a plain tree whose root itself runs in UTS,
// IPC and network namespaces of its own (plainns "root" mode, started
// with those clone flags) is restored in new ones that hold what its own
// held: the hostname, its SysV segment (attached), semaphores, message
// queue and POSIX queue, lo up and a TCP listener it connects to.
func TestPlainRootOwnNamespaces(t *testing.T) {
	needCtcr(t)
	bin := workloadBin(t, "plainns")
	w := &workload{t: t, name: "plainns", dir: t.TempDir()}
	out, err := os.Create(w.path("out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	w.cmd = exec.Command(bin, w.dir, "root")
	w.cmd.Stdout, w.cmd.Stderr = out, out
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWNET}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.pid = w.cmd.Process.Pid
	t.Cleanup(w.cleanup)
	w.waitReady()
	img := filepath.Join(t.TempDir(), "img")
	dump(t, w, img, false, 0)
	for _, name := range []string{"utsns-1.img", "ipcns-shm-1.img", "ipcns-sem-1.img", "ipcns-msg-1.img", "netdev-1.img"} {
		if _, err := os.Stat(filepath.Join(img, name)); err != nil {
			t.Errorf("the checkpoint lacks the root's own namespace's %s: %v", name, err)
		}
	}
	restoreForeground(t, w, img, scenario{}, nil)
	if !t.Failed() {
		decodeWithCrit(t, img)
	}
}

// TestPlainRootOwnMountNamespace: a plain tree's root in a mount
// namespace of its own comes back in a copy of ctcr's. With ctcr's
// mounts (unshare -m alone) it is dumped; with a tmpfs of its own the
// dump is refused, naming the mount, instead of restoring it without.
func TestPlainRootOwnMountNamespace(t *testing.T) {
	needCtcr(t)
	for _, c := range []struct {
		name, script, refusal string
	}{
		{"with ctcr's mounts it is dumped", "exec sleep 1000", ""},
		{"with a tmpfs of its own it is refused by name", "mount -t tmpfs ctcr-own /mnt && exec sleep 1000", "its own mount namespace differs from ctcr's (tmpfs at /mnt"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command("unshare", "-m", "sh", "-c", c.script)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pid := cmd.Process.Pid
			t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL); cmd.Wait() })
			// unshare execs sh, which execs sleep once the mount is made.
			deadline := time.Now().Add(10 * time.Second)
			for {
				b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
				if strings.TrimSpace(string(b)) == "sleep" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("unshare -m sh -c %q: no sleep after 10 s", c.script)
				}
				time.Sleep(10 * time.Millisecond)
			}
			r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(pid), "-D", filepath.Join(t.TempDir(), "img"), "--leave-running")
			if c.refusal == "" {
				if r.code() != 0 {
					t.Fatalf("%s: exit %d: %s", r, r.code(), r.stderr())
				}
				return
			}
			if r.code() != 1 || !strings.Contains(r.stderr(), c.refusal) {
				t.Fatalf("%s: exit %d, want 1 and %q: %s", r, r.code(), c.refusal, r.stderr())
			}
		})
	}
}
