package test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/kernel"
	"github.com/ctcr/ctcr/test/harness"
)

// POSIX message queues: the mqueue workload (workloads/mqueue.c) makes
// two queues with messages of several priorities, keeps one open twice
// (O_RDWR|O_NONBLOCK and O_RDONLY), and after restore checks attributes,
// owner, mode, every message in order and its descriptors.

// mqUnlink removes the host queue name ("/x"), if it exists.
func mqUnlink(name string) {
	p, err := unix.BytePtrFromString(strings.TrimPrefix(name, "/"))
	if err != nil {
		return
	}
	unix.Syscall(unix.SYS_MQ_UNLINK, uintptr(unsafe.Pointer(p)), 0, 0)
}

// TestMqueueProcess: a plain process of the host's IPC namespace holding
// queue descriptors is dumped (and killed) and restored; the queues live
// on in the host's namespace and the restored process finds its
// descriptors on them again, with their flags.
func TestMqueueProcess(t *testing.T) {
	prefix := fmt.Sprintf("/ctcrt-mq-%d-", os.Getpid())
	t.Cleanup(func() {
		for _, s := range []string{"a", "b", "n"} {
			mqUnlink(prefix + s)
		}
	})
	t.Run("the workload passes when it is never dumped", func(t *testing.T) {
		w := startWorkload(t, "mqueue", prefix)
		w.checkPasses(30*time.Second, "mqueue")
	})
	t.Run("the workload fails when a message of its queue is taken", func(t *testing.T) {
		w := startWorkload(t, "mqueue", prefix)
		fd, err := kernel.MqOpen(strings.TrimPrefix(prefix, "/")+"a", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		_, _, err = kernel.MqReceive(fd, buf)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		w.requestCheck()
		ps, err := w.waitOriginal(30 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if res := w.read("result"); ps.ExitCode() != 1 || !strings.Contains(res, "curmsgs 3") {
			t.Errorf("mqueue: %v, result %q; want exit status 1 and a FAIL naming 3 messages", ps, res)
		}
	})
	t.Run("queue descriptors are reopened on the host's queues with their access mode and O_NONBLOCK", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "mqueue", prefix)
		img := filepath.Join(t.TempDir(), "img")
		dump(t, w, img, false, 0)
		r := runCtcr(t, 30*time.Second, "show", img)
		if r.code() != 0 || strings.Count(r.stdout(), "/dev/mqueue"+prefix+"a") != 2 {
			t.Errorf("%s: exit status %d; want two fds on /dev/mqueue%sa in:\n%s%s", r, r.code(), prefix, r.stdout(), r.stderr())
		}
		if crit, err := exec.LookPath("crit"); err != nil {
			t.Logf("crit is not installed (apt-get install criu python3-protobuf): files.img not decoded")
		} else if out, err := exec.Command(crit, "decode", "-i", filepath.Join(img, "files.img")).CombinedOutput(); err != nil ||
			!strings.Contains(string(out), `"/dev/mqueue`+prefix+`a"`) {
			t.Errorf("crit decode files.img: %v; want a REG entry named /dev/mqueue%sa in:\n%s", err, prefix, tail(string(out), 3000))
		}
		restoreForeground(t, w, img, scenario{}, nil)
	})
}

// TestMqueueOwnNamespace: a plain dump of a process in an IPC namespace
// of its own saves that namespace's POSIX queues (posix-mq.json), so a
// process holding queue descriptors there is dumped and restored with its
// queues, their messages and its descriptors as they were.
func TestMqueueOwnNamespace(t *testing.T) {
	needCtcr(t)
	dir := t.TempDir()
	cmd := exec.Command(workloadBin(t, "mqueue"), dir, "/own-")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: syscall.CLONE_NEWIPC}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if err := harness.WaitFile(filepath.Join(dir, "ready"), 20*time.Second); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	img := filepath.Join(t.TempDir(), "img")
	if r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(pid), "-D", img); r.code() != 0 {
		t.Fatalf("%s: exit status %d; stderr: %s", r, r.code(), r.stderr())
	}
	cmd.Wait()
	if _, err := os.Stat(filepath.Join(img, "posix-mq.json")); err != nil {
		t.Errorf("the checkpoint has no posix-mq.json: %v", err)
	}
	r := runCtcr(t, 60*time.Second, "restore", "-D", img, "-d")
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d; stderr: %s", r, r.code(), r.stderr())
	}
	t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL); reap(pid, 10*time.Second) })
	if err := os.WriteFile(filepath.Join(dir, "check"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := harness.WaitFile(filepath.Join(dir, "result"), 20*time.Second); err != nil {
		t.Fatalf("after restore: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "result")); !strings.HasPrefix(string(b), "PASS") {
		t.Errorf("after restore the workload says %s", b)
	}
}

// buildStaticMqueue builds workloads/mqueue.c statically into bin, for
// a busybox container that has no libc.
func buildStaticMqueue(t *testing.T, bin string) {
	t.Helper()
	out, err := exec.Command("gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11", "-static", "-o", bin, "workloads/mqueue.c").CombinedOutput()
	if err != nil {
		t.Fatalf("gcc -static workloads/mqueue.c: %v\n%s", err, out)
	}
}

// mqContainer starts a busybox container whose init runs the mqueue
// workload (DIR /data/mq, queues /ctcr-a, /ctcr-b, and /ctcr-n with
// notify) beside the usual counting loops, and waits for it to be ready.
func mqContainer(t *testing.T, name string, args ...string) *runcContainer {
	t.Helper()
	c := newContainer(t, name, func(s *specs.Spec) {
		s.Process.Args = []string{"sh", "-c", "mkdir -p /data/mq; /bin/mqueue /data/mq /ctcr- " + strings.Join(args, " ") +
			" </dev/null >/data/mq/out 2>/data/mq/err &\n" + containerScript}
		// The workload gives queue b another owner: runc's default
		// capabilities lack CAP_CHOWN.
		caps := s.Process.Capabilities
		for _, set := range []*[]string{&caps.Bounding, &caps.Effective, &caps.Permitted} {
			*set = append(*set, "CAP_CHOWN")
		}
	})
	buildStaticMqueue(t, filepath.Join(c.rootfs, "bin/mqueue"))
	c.start()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(c.mqPath(t, "ready")); err == nil {
			break
		}
		if e := c.mqRead(t, "err"); e != "" || time.Now().After(deadline) {
			t.Fatalf("the mqueue workload in container %s is not ready; err: %s", c.id, e)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return c
}

// mqPath is DIR/name of the container's workload, seen from the host.
func (c *runcContainer) mqPath(t *testing.T, name string) string {
	st, err := c.state()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("/proc/%d/root/data/mq/%s", st.Pid, name)
}

func (c *runcContainer) mqRead(t *testing.T, name string) string {
	b, err := os.ReadFile(c.mqPath(t, name))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return string(b)
}

// mqCheck asks the container's workload to check and wants PASS.
func (c *runcContainer) mqCheck(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(c.mqPath(t, "check"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := harness.WaitFile(c.mqPath(t, "result"), 20*time.Second); err != nil {
		t.Fatalf("the mqueue workload gave no result: %v; err: %s", err, c.mqRead(t, "err"))
	}
	if res := c.mqRead(t, "result"); !strings.HasPrefix(res, "PASS") {
		t.Errorf("the mqueue workload in container %s: %s", c.id, strings.TrimSpace(res))
	}
}

// TestContainerMqueue: the POSIX message queues of a container's IPC
// namespace, with their messages, and the descriptors its processes
// hold on them, survive a checkpoint and restore; a checkpoint that lets
// the container run leaves every queue exactly as it was; a queue with
// an mq_notify registration is refused by name and left alone.
func TestContainerMqueue(t *testing.T) {
	t.Run("queues, messages in order and kept descriptors are there after restore", func(t *testing.T) {
		c := mqContainer(t, "mq")
		dir := filepath.Join(t.TempDir(), "ck")
		checkpointContainer(t, c, dir)
		b, err := os.ReadFile(filepath.Join(dir, "images", "posix-mq.json"))
		if err != nil {
			t.Fatalf("the checkpoint has no POSIX queue image: %v", err)
		}
		var img struct {
			Queues []struct {
				Name     string
				Messages []json.RawMessage
			}
		}
		if err := json.Unmarshal(b, &img); err != nil {
			t.Fatalf("posix-mq.json: %v", err)
		}
		var got []string
		for _, q := range img.Queues {
			got = append(got, q.Name+":"+strconv.Itoa(len(q.Messages)))
		}
		if strings.Join(got, " ") != "ctcr-a:4 ctcr-b:3" {
			t.Errorf("posix-mq.json holds queues %v, want ctcr-a:4 ctcr-b:3", got)
		}
		if r := runCtcr(t, 30*time.Second, "show", dir); r.code() != 0 {
			t.Errorf("%s: exit status %d: %s", r, r.code(), r.stderr())
		}
		restoreContainer(t, c, dir)
		if ls := c.mustExec(t, "ls /dev/mqueue"); strings.Join(strings.Fields(ls), " ") != "ctcr-a ctcr-b" {
			t.Errorf("ls /dev/mqueue in the restored container: %q, want ctcr-a ctcr-b", ls)
		}
		c.mqCheck(t)
	})
	t.Run("a checkpoint that lets the container run leaves its queues as they were", func(t *testing.T) {
		c := mqContainer(t, "mqlr")
		checkpointContainer(t, c, filepath.Join(t.TempDir(), "ck"), "--leave-running")
		c.mqCheck(t)
	})
	t.Run("a queue with an mq_notify registration is refused by name and left alone", func(t *testing.T) {
		c := mqContainer(t, "mqn", "notify")
		r := runCtcr(t, 60*time.Second, "checkpoint", c.id, "-D", filepath.Join(t.TempDir(), "ck"))
		// 16: vzctl's "checkpoint failed, the container runs on".
		if r.code() != 16 || !strings.Contains(r.stderr(), "/ctcr-n") || !strings.Contains(r.stderr(), "mq_notify") {
			t.Errorf("%s: exit status %d, want 16 and a message naming /ctcr-n and mq_notify; stderr: %s", r, r.code(), r.stderr())
		}
		if got := c.status(); got != "running" {
			t.Fatalf("after the refused checkpoint runc says %q, want running", got)
		}
		c.mqCheck(t)
	})
}
