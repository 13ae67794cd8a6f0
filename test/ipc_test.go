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

// TestIPCDumpRestore dumps the ipc workload (pipes within a process and
// with a child, a FIFO, unix sockets of every type with queued data, a
// listener with a pending connection, bound datagram sockets), restores
// it and expects it to find every queue, boundary, flag and option again.
func TestIPCDumpRestore(t *testing.T) {
	t.Run("pipes, a FIFO and unix sockets keep their data, peers and options", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "ipc")
		kids := childrenOf(w.pid)
		if len(kids) != 1 {
			t.Fatalf("ipc has %d children, want 1", len(kids))
		}
		img := filepath.Join(t.TempDir(), "img")
		dump(t, w, img, false, 0)
		// The child, killed by the dump, was re-parented to this
		// subreaper: reap it, or its PID stays taken.
		for pid := range kids {
			if _, _, err := reap(pid, 10*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		restoreForeground(t, w, img, scenario{}, nil)
	})
	t.Run("the ipc workload passes when it is never dumped", func(t *testing.T) {
		w := startWorkload(t, "ipc")
		w.checkPasses(30*time.Second, "ipc")
	})
}

// TestSCMRights dumps the scmrights workload, whose unix sockets hold
// messages carrying fds nobody has received yet (a pipe, a file, an
// eventfd, a memfd, a unix socket), restores it and expects every fd to
// arrive with its message, in its state, and still shared with what the
// workload kept.
func TestSCMRights(t *testing.T) {
	t.Run("fds in flight in unix socket queues come back with their messages", func(t *testing.T) {
		dumpRestoreWorkload(t, "scmrights")
	})
	t.Run("the scmrights workload passes when it is never dumped", func(t *testing.T) {
		w := startWorkload(t, "scmrights")
		w.checkPasses(30*time.Second, "scmrights")
	})
}

// TestNetlinkSockets dumps the netlink workload (a NETLINK_ROUTE socket
// with groups below and above 32), restores it and expects the same port
// id and groups, and answers to its requests.
func TestNetlinkSockets(t *testing.T) {
	t.Run("a netlink socket keeps its port id and groups and is answered", func(t *testing.T) {
		dumpRestoreWorkload(t, "netlink")
	})
	t.Run("the netlink workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "netlink").checkPasses(30*time.Second, "netlink")
	})
}

// TestPidfds dumps the pidfd workload (a pidfd of its child and one of
// itself), restores it and expects both to name the restored processes.
func TestPidfds(t *testing.T) {
	t.Run("pidfds name the restored processes", func(t *testing.T) {
		dumpRestoreWorkload(t, "pidfd")
	})
	t.Run("the pidfd workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "pidfd").checkPasses(30*time.Second, "pidfd")
	})
}

// TestPacketSockets dumps the packet workload (an AF_PACKET socket bound
// to lo with auxdata and an all-multicast membership), restores it and
// expects the same binding, options and membership, and frames; and the
// packetring workload (a TPACKET_V3 RX ring and a TPACKET_V2 TX ring,
// each mapped), which expects its rings mapped where they were and a
// frame sent through one to arrive in the other; and the spkt workload
// (a SOCK_PACKET socket bound to lo by name).
func TestPacketSockets(t *testing.T) {
	t.Run("a packet socket keeps its interface, protocol, options and memberships", func(t *testing.T) {
		dumpRestoreWorkload(t, "packet")
	})
	t.Run("the packet workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "packet").checkPasses(30*time.Second, "packet")
	})
	t.Run("mapped RX and TX rings are set up and mapped again, and carry a frame", func(t *testing.T) {
		dumpRestoreWorkload(t, "packetring")
	})
	t.Run("the packetring workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "packetring").checkPasses(30*time.Second, "packetring")
	})
	t.Run("a SOCK_PACKET socket keeps its interface and carries a frame", func(t *testing.T) {
		dumpRestoreWorkload(t, "spkt")
	})
	t.Run("the spkt workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "spkt").checkPasses(30*time.Second, "spkt")
	})
}

// pipelineCmd is a three-stage shell pipeline of ipcpipe: a producer of
// numbered lines, a filter that rewrites them, a consumer that appends
// them to out.
func pipelineCmd(t *testing.T, out string, lines int) string {
	bin := workloadBin(t, "ipcpipe")
	return bin + " produce " + strconv.Itoa(lines) + " | " + bin + " filter | " + bin + " consume " + out
}

func startPipeline(t *testing.T, out string, lines int) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", pipelineCmd(t, out, lines))
	logf, err := os.Create(out + ".err")
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if cmd.ProcessState == nil {
			cmd.Wait()
		}
	})
	return cmd
}

// TestPipelineDumpRestore dumps `sh -c 'producer | filter | consumer'`
// while data flows through its pipes, restores it and expects the
// consumer's file to equal that of a run that was never interrupted.
func TestPipelineDumpRestore(t *testing.T) {
	needCtcr(t)
	const lines = 3000
	dir := t.TempDir()

	ref := filepath.Join(dir, "reference")
	cmd := startPipeline(t, ref, lines)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the uninterrupted pipeline: %v", err)
	}
	want, err := os.ReadFile(ref)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(want), "\n"); n != lines+1 {
		t.Fatalf("the uninterrupted pipeline wrote %d lines, want %d", n, lines+1)
	}

	out := filepath.Join(dir, "out")
	cmd = startPipeline(t, out, lines)
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(out)
		if strings.Count(string(b), "\n") >= 300 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pipeline wrote only %q in 20 s", tail(string(b), 200))
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The stages, killed by the dump, are re-parented to this subreaper:
	// reap them, or their PIDs stay taken.
	stages := childrenOf(cmd.Process.Pid)
	if len(stages) != 3 {
		t.Fatalf("the shell has %d children, want 3 stages", len(stages))
	}
	img := filepath.Join(dir, "img")
	logFile := filepath.Join(dir, "dump.log")
	r := runCtcr(t, 120*time.Second, "dump", "-t", strconv.Itoa(cmd.Process.Pid), "-D", img, "-v", "--log-file", logFile)
	if r.code() != 0 {
		b, _ := os.ReadFile(logFile)
		t.Fatalf("%s: exit status %d; stderr: %s\nlog:\n%s", r, r.code(), r.stderr(), tail(string(b), 3000))
	}
	cmd.Wait()
	for pid := range stages {
		if _, _, err := reap(pid, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := os.ReadFile(out)
	if len(got) >= len(want) {
		t.Fatalf("the pipeline had finished before the dump: the test proves nothing")
	}
	rr := runCtcr(t, 120*time.Second, "restore", "-D", img)
	if rr.code() != 0 {
		t.Fatalf("%s: exit status %d, want 0 (the shell's); stderr: %s", rr, rr.code(), rr.stderr())
	}
	got, err = os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("after dump and restore the consumer wrote %d bytes, the uninterrupted run %d; they differ\ngot tail: %q\nwant tail: %q",
			len(got), len(want), tail(string(got), 200), tail(string(want), 200))
	}
}

// TestIPCRefusals: a dump that meets a socket it cannot restore fails
// naming the task, the fd and what is wrong, and leaves the task running.
func TestIPCRefusals(t *testing.T) {
	cases := []struct {
		name  string
		file  func(t *testing.T) *os.File // fd 3 of the dumped process
		names []string                    // stderr must name all of these
	}{
		{
			name: "a unix socket whose peer is outside the dumped tree is refused naming both inodes",
			file: func(t *testing.T) *os.File {
				fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					t.Fatal(err)
				}
				ours := os.NewFile(uintptr(fds[1]), "ours")
				t.Cleanup(func() { ours.Close() })
				return os.NewFile(uintptr(fds[0]), "theirs")
			},
			names: []string{"fd 3", "unix socket", "peer", "outside the dumped tree"},
		},
		{
			name: "a pidfd of a process outside the tree is refused naming the fd and the process",
			file: func(t *testing.T) *os.File {
				fd, err := unix.PidfdOpen(os.Getpid(), 0)
				if err != nil {
					t.Fatal(err)
				}
				return os.NewFile(uintptr(fd), "pidfd")
			},
			names: []string{"fd 3", "pidfd of process " + strconv.Itoa(os.Getpid())},
		},
		{
			// Raw sockets are kept now (TestRawSockets); an MPTCP one
			// is not.
			name: "an MPTCP socket is refused naming the fd, its family and protocol",
			file: func(t *testing.T) *os.File {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_MPTCP)
				if err != nil {
					t.Skipf("no MPTCP socket here: %v", err)
				}
				return os.NewFile(uintptr(fd), "mptcp")
			},
			names: []string{"fd 3", "socket:[", "protocol 262", "TCP, UDP, UDP-Lite, ping and raw sockets are"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			needCtcr(t)
			f := c.file(t)
			cmd := exec.Command("/bin/sleep", "60")
			cmd.ExtraFiles = []*os.File{f}
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			f.Close()
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			pid := cmd.Process.Pid
			r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(pid), "-D", filepath.Join(t.TempDir(), "img"))
			assertFailed(t, r, c.names[0])
			for _, n := range append([]string{fmt.Sprintf("task %d", pid)}, c.names...) {
				if !strings.Contains(r.stderr(), n) {
					t.Errorf("%s: stderr %q does not name %q", r, strings.TrimSpace(r.stderr()), n)
				}
			}
			if err := assertRunnable(pid); err != nil {
				t.Errorf("after the failed dump: %v", err)
			}
		})
	}
}

// TestSigio dumps the sigio workload (a pipe, a socket and a pipe in
// O_ASYNC mode, owned by the process, its group and a thread, with
// F_SETSIG signals), restores it and expects the owners, signals and
// flags kept, and each write signalled where it belongs.
func TestSigio(t *testing.T) {
	t.Run("files in O_ASYNC mode keep their SIGIO owners and signals", func(t *testing.T) {
		dumpRestoreWorkload(t, "sigio")
	})
	t.Run("with --leave-running the task goes on with its owners and signals", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "sigio")
		r := runCtcr(t, 60*time.Second, "dump", "--leave-running", "-t", strconv.Itoa(w.pid), "-D", filepath.Join(t.TempDir(), "img"))
		if r.code() != 0 {
			t.Fatalf("%s: exit status %d; stderr: %s", r, r.code(), r.stderr())
		}
		w.checkPasses(30*time.Second, "sigio after dump --leave-running")
	})
	t.Run("the sigio workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "sigio").checkPasses(30*time.Second, "sigio")
	})
}
