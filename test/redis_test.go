package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// respConn is a client of a Redis server speaking RESP over a unix
// socket: enough for SET, GET, DBSIZE and PING.
type respConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialRedis(sock string) (*respConn, error) {
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &respConn{c: c, r: bufio.NewReader(c)}, nil
}

// do sends one command and returns its reply as a string: a simple or
// bulk string, an integer in decimal, "(nil)" for a null bulk string.
// An error reply is returned as an error.
func (rc *respConn) do(args ...string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	rc.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(rc.c, b.String()); err != nil {
		return "", err
	}
	line, err := rc.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("redis: %s", line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", fmt.Errorf("bad bulk length %q", line)
		}
		if n < 0 {
			return "(nil)", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rc.r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

func (rc *respConn) close() { rc.c.Close() }

// unixSocketsIn counts the unix socket fds of the tasks of the checkpoint
// in img, as ctcr show --json lists them.
func unixSocketsIn(t *testing.T, img string) int {
	t.Helper()
	r := runCtcr(t, 60*time.Second, "show", img, "--json")
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d; stderr: %s", r, r.code(), r.stderr())
	}
	var sum struct {
		Checkpoint struct {
			Tasks []struct {
				Fds []struct {
					Type string `json:"type"`
				} `json:"fds"`
			} `json:"tasks"`
		} `json:"checkpoint"`
	}
	if err := json.Unmarshal([]byte(r.stdout()), &sum); err != nil {
		t.Fatalf("%s: %v", r, err)
	}
	n := 0
	for _, task := range sum.Checkpoint.Tasks {
		for _, fd := range task.Fds {
			if fd.Type == "UNIXSK" {
				n++
			}
		}
	}
	return n
}

// socketFds counts the fds of pid that are sockets.
func socketFds(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// TestRedis dumps a Debian redis-server that serves on a unix socket only
// (epoll, pipes, an eventfd or two, a listening unix socket, background
// threads) with a client connected: refused without --ext-unix-sk, kept
// with it as a connection its client has closed. It restores it with -d
// and reads back the keys written before the dump over new connections.
func TestRedis(t *testing.T) {
	needCtcr(t)
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed (apt-get install redis-server)")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "redis.sock")
	out, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	errf, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	cmd := exec.Command(bin, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", dir)
	cmd.Stdout, cmd.Stderr = out, errf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	waited := false
	logs := func() string {
		o, _ := os.ReadFile(filepath.Join(dir, "stdout"))
		e, _ := os.ReadFile(filepath.Join(dir, "stderr"))
		return fmt.Sprintf("\n--- redis stdout:\n%s\n--- redis stderr:\n%s", tail(string(o), 2000), tail(string(e), 2000))
	}
	t.Cleanup(func() {
		unix.Kill(pid, unix.SIGKILL)
		if !waited {
			cmd.Wait()
		} else {
			reap(pid, 10*time.Second)
		}
	})

	var client *respConn
	deadline := time.Now().Add(20 * time.Second)
	for {
		if client, err = dialRedis(sock); err == nil {
			if _, err = client.do("PING"); err == nil {
				break
			}
			client.close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server did not answer on %s within 20 s: %v%s", sock, err, logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	want := map[string]string{}
	for i := 0; i < 100; i++ {
		k := fmt.Sprintf("key:%d", i)
		v := fmt.Sprintf("value %d %s", i, strings.Repeat("x", i*37))
		want[k] = v
		if r, err := client.do("SET", k, v); err != nil || r != "OK" {
			t.Fatalf("SET %s: %q, %v", k, r, err)
		}
	}
	if r, err := client.do("INCRBY", "counter", "41"); err != nil || r != "41" {
		t.Fatalf("INCRBY counter 41: %q, %v", r, err)
	}

	// The client's connection has its peer outside the dumped tree, with
	// no name to connect to again: a dump refuses it and leaves redis
	// serving; with --ext-unix-sk the connection is kept as one its
	// client has closed, with a warning.
	img := filepath.Join(dir, "img")
	r := runCtcr(t, 120*time.Second, "dump", "-t", strconv.Itoa(pid), "-D", img)
	if r.code() != 1 || !strings.Contains(r.stderr(), "outside the dumped tree") {
		t.Fatalf("%s with a client connected: exit status %d, stderr %q; want 1 and a message naming the client's socket", r, r.code(), r.stderr())
	}
	if got, err := client.do("PING"); err != nil || got != "PONG" {
		t.Fatalf("PING after the refused dump: %q, %v; want PONG%s", got, err, logs())
	}
	r = runCtcr(t, 120*time.Second, "dump", "-t", strconv.Itoa(pid), "-D", img, "--ext-unix-sk")
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d; stderr: %s%s", r, r.code(), r.stderr(), logs())
	}
	if !strings.Contains(r.stderr(), "warning:") || !strings.Contains(r.stderr(), "its peer has closed") {
		t.Errorf("%s: stderr %q, want a warning that the client's connection comes back closed", r, r.stderr())
	}
	cmd.Wait()
	waited = true
	if exists(pid) {
		t.Fatalf("redis-server (PID %d) still exists after a dump that kills it", pid)
	}
	if got, err := client.do("PING"); err == nil {
		t.Errorf("PING to the dumped (killed) redis answered %q", got)
	}
	client.close()
	if n := unixSocketsIn(t, img); n != 2 {
		t.Errorf("the checkpoint holds %d unix sockets, want 2 (the listener and the client's connection)", n)
	}

	r = runCtcr(t, 120*time.Second, "restore", "-D", img, "-d")
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d; stderr: %s%s", r, r.code(), r.stderr(), logs())
	}
	if !exists(pid) {
		t.Fatalf("restore -d exited 0 but PID %d does not exist%s", pid, logs())
	}

	// The restored connection reads end of file: redis closes it.
	deadline = time.Now().Add(10 * time.Second)
	for n := socketFds(pid); n != 1; n = socketFds(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the restored redis-server holds %d sockets 10 s after restore, want 1 (the listener): the client's connection should read end of file", n)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// New clients connect to the restored listener and see every key.
	for n := 0; n < 3; n++ {
		c, err := dialRedis(sock)
		if err != nil {
			t.Fatalf("a new client cannot connect after restore: %v%s", err, logs())
		}
		defer c.close()
		if n == 0 {
			if got, err := c.do("INCR", "counter"); err != nil || got != "42" {
				t.Errorf("INCR counter after restore: %q, %v; want 42", got, err)
			}
		}
		if got, err := c.do("DBSIZE"); err != nil || got != strconv.Itoa(len(want)+1) {
			t.Errorf("DBSIZE: %q, %v; want %d", got, err, len(want)+1)
		}
		for k, v := range want {
			got, err := c.do("GET", k)
			if err != nil || got != v {
				t.Fatalf("GET %s after restore: %q, %v; want %q", k, tail(got, 80), err, tail(v, 80))
			}
		}
		if got, err := c.do("SET", fmt.Sprintf("after:%d", n), "new"); err != nil || got != "OK" {
			t.Errorf("SET after restore: %q, %v", got, err)
		}
		want[fmt.Sprintf("after:%d", n)] = "new"
	}
	if t.Failed() {
		t.Log(logs())
	}
}

// TestContainerRedis: a Redis server in a runc container (unix socket on
// the container's tmpfs, TCP inside its network namespace) holding
// 2,000 keys and a 32 MiB value, with a redis-cli loop in the container
// counting in it, is checkpointed with --pre-copy and restored: every
// key reads back, the loop counts on, and TCP clients inside still get
// answers.
func TestContainerRedis(t *testing.T) {
	for _, bin := range []string{"/usr/bin/redis-server", "/usr/bin/redis-cli"} {
		if _, err := os.Stat(bin); err != nil {
			t.Skipf("%s is missing (apt-get install redis-server): %v", bin, err)
		}
	}
	const script = `redis-server --unixsocket /data/redis.sock --unixsocketperm 777 --port 6379 --bind 127.0.0.1 --save '' --appendonly no > /data/redis.log 2>&1 &
while [ ! -S /data/redis.sock ]; do sleep 0.05; done
(while :; do redis-cli -s /data/redis.sock incr ticks > /dev/null; sleep 0.05; done) &
` + containerScript
	c := newContainer(t, "redis", func(s *specs.Spec) { s.Process.Args = []string{"sh", "-c", script} })
	for _, bin := range []string{"/usr/bin/redis-server", "/usr/bin/redis-cli"} {
		if err := c.installHostBinary(bin); err != nil {
			t.Fatalf("copy %s into the rootfs: %v", bin, err)
		}
	}
	c.start()
	// The host reaches the socket through the init's root.
	dial := func() *respConn {
		st, err := c.state()
		if err != nil {
			t.Fatal(err)
		}
		sock := fmt.Sprintf("/proc/%d/root/data/redis.sock", st.Pid)
		var rc *respConn
		for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if rc, err = dialRedis(sock); err == nil {
				return rc
			}
			if time.Now().After(end) {
				out, _ := c.exec("cat /data/redis.log")
				t.Fatalf("connect to %s: %v\n%s", sock, err, out)
			}
		}
	}
	rc := dial()
	const keys = 2000
	for i := range keys {
		if r, err := rc.do("SET", fmt.Sprintf("key:%d", i), fmt.Sprintf("value-%d", i*i)); err != nil || r != "OK" {
			t.Fatalf("SET key:%d: %q, %v", i, r, err)
		}
	}
	big := strings.Repeat("0123456789abcdef", 2<<20)
	if r, err := rc.do("SET", "big", big); err != nil || r != "OK" {
		t.Fatalf("SET big: %q, %v", r, err)
	}
	ticks := func(rc *respConn) int {
		r, err := rc.do("GET", "ticks")
		n, _ := strconv.Atoi(r)
		if err != nil || n == 0 {
			t.Fatalf("GET ticks: %q, %v: the redis-cli loop in the container does not count", r, err)
		}
		return n
	}
	before := ticks(rc)
	// A client outside the container would be refused (or come back
	// closed with --ext-unix-sk): hang up first.
	rc.close()

	dir := filepath.Join(t.TempDir(), "ck")
	checkpointContainer(t, c, dir, "--pre-copy")
	restoreContainer(t, c, dir)

	rc = dial()
	defer rc.close()
	for i := range keys {
		k, want := fmt.Sprintf("key:%d", i), fmt.Sprintf("value-%d", i*i)
		if r, err := rc.do("GET", k); err != nil || r != want {
			t.Fatalf("after restore GET %s: %q, %v; want %q", k, r, err, want)
		}
	}
	if r, err := rc.do("GET", "big"); err != nil || r != big {
		t.Errorf("after restore GET big: %d bytes (%v), want the %d bytes set", len(r), err, len(big))
	}
	after := ticks(rc)
	time.Sleep(300 * time.Millisecond)
	if later := ticks(rc); !(before <= after && after < later) {
		t.Errorf("ticks %d before the checkpoint, %d and %d after restore: want the loop to count on", before, after, later)
	}
	if out, err := c.exec("redis-cli -p 6379 ping"); err != nil || strings.TrimSpace(out) != "PONG" {
		t.Errorf("redis-cli over TCP inside the restored container: %q, %v", out, err)
	}
	c.assertCounting(t, "after restore")
}
