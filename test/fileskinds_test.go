package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// dumpRestoreTree is dumpRestoreWorkload for a workload with
// grandchildren: every descendant the dump killed is re-parented to this
// subreaper, parents first, and reaped, or its PID stays taken.
func dumpRestoreTree(t *testing.T, name string, args ...string) {
	t.Helper()
	needCtcr(t)
	w := startWorkload(t, name, args...)
	var desc []int
	for gen := []int{w.pid}; len(gen) > 0; {
		var next []int
		for _, p := range gen {
			for k := range childrenOf(p) {
				next = append(next, k)
			}
		}
		desc = append(desc, next...)
		gen = next
	}
	img := filepath.Join(t.TempDir(), "img")
	dump(t, w, img, false, 0)
	for _, pid := range desc {
		if _, _, err := reap(pid, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	restoreForeground(t, w, img, scenario{}, nil)
	if !t.Failed() {
		decodeWithCrit(t, img)
	}
}

// The file kinds of issue 10 that are not regular-file paths: each test
// dumps one workload holding one kind of fd, restores it, and lets the
// workload check the fd itself.

// TestOPathFds dumps O_PATH fds on a file, a directory and (with
// O_NOFOLLOW) a symlink: they have no SIGIO owner to read, and the
// symlink's fd names the link itself.
func TestOPathFds(t *testing.T) {
	t.Run("O_PATH fds on a file, a directory and a symlink come back as O_PATH fds on the same inodes", func(t *testing.T) {
		dumpRestoreWorkload(t, "opath")
	})
	t.Run("the opath workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "opath").checkPasses(30*time.Second, "opath")
	})
}

// TestSharedFdTableChain dumps three generations sharing one fd table
// (CLONE_FILES twice): the grandchild's table is its grandparent's, and
// restore must find it there, not in an image of the middle child.
func TestSharedFdTableChain(t *testing.T) {
	t.Run("an fd table shared by a child and a grandchild is one table after restore", func(t *testing.T) {
		dumpRestoreTree(t, "fdtchain")
	})
	t.Run("the fdtchain workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "fdtchain").checkPasses(30*time.Second, "fdtchain")
	})
}

// TestEpollTargetsByFile dumps epolls whose targets' fd numbers were
// closed, duplicated and reused, one of them in flight in an SCM_RIGHTS
// message: each target must be found by kcmp, not by its number.
func TestEpollTargetsByFile(t *testing.T) {
	t.Run("epoll targets whose numbers were closed or reused report their files after restore, also from an epoll in flight", func(t *testing.T) {
		dumpRestoreWorkload(t, "epolltfd")
	})
	t.Run("the epolltfd workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "epolltfd").checkPasses(30*time.Second, "epolltfd")
	})
}

// TestPidfdOfExitedProcess dumps pidfds of a child that exited and was
// reaped: they name no process, and restore must make such pidfds.
func TestPidfdOfExitedProcess(t *testing.T) {
	t.Run("pidfds of a reaped child come back as pidfds of no process", func(t *testing.T) {
		dumpRestoreWorkload(t, "pidfdexit")
	})
	t.Run("the pidfdexit workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "pidfdexit").checkPasses(30*time.Second, "pidfdexit")
	})
}

// TestMemfdModeAndPrivateMapping dumps a memfd with mode 0640 mapped
// privately, one page read, one written: the mode and every page of the
// mapping must come back.
func TestMemfdModeAndPrivateMapping(t *testing.T) {
	t.Run("a memfd keeps its mode and its private mapping keeps file pages and private copies", func(t *testing.T) {
		dumpRestoreWorkload(t, "memfdpriv")
	})
	t.Run("the memfdpriv workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "memfdpriv").checkPasses(30*time.Second, "memfdpriv")
	})
}

// TestNamespaceFds dumps fds on the workload's own namespace files: at
// restore they must name the namespaces the restored workload is in.
// An fd on a namespace the tree is not in is refused, naming it.
func TestNamespaceFds(t *testing.T) {
	t.Run("fds on the tree's namespace files name the restored tree's namespaces", func(t *testing.T) {
		dumpRestoreWorkload(t, "nsfd")
	})
	t.Run("the nsfd workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "nsfd").checkPasses(30*time.Second, "nsfd")
	})
	t.Run("an fd on a network namespace the tree is not in is refused naming the fd and the namespace", func(t *testing.T) {
		needCtcr(t)
		// A network namespace of its own, held by a file descriptor
		// only: a thread that unshares and opens it.
		nsc := make(chan *os.File, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends in its namespace
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				t.Error(err)
				nsc <- nil
				return
			}
			f, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
			if err != nil {
				t.Error(err)
			}
			nsc <- f
		}()
		f := <-nsc
		if f == nil {
			t.FailNow()
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
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
		assertFailed(t, r, "fd 3")
		for _, n := range []string{fmt.Sprintf("task %d", pid), fmt.Sprintf("net:[%d]", st.Ino), "not in"} {
			if !strings.Contains(r.stderr(), n) {
				t.Errorf("the error does not name %q: %s", n, r.stderr())
			}
		}
		if !exists(pid) {
			t.Errorf("the task %d did not survive the failed dump", pid)
		}
	})
}

// TestInotifyWatchOnRemovedFile dumps an inotify watch on a file that
// was removed while an fd keeps it: restore must watch the file it
// makes again for that fd, with the same watch descriptor.
func TestInotifyWatchOnRemovedFile(t *testing.T) {
	t.Run("a watch on a removed file that an fd holds reports on the restored file", func(t *testing.T) {
		dumpRestoreWorkload(t, "inotifygone")
	})
	t.Run("the inotifygone workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "inotifygone").checkPasses(30*time.Second, "inotifygone")
	})
}

// TestFileLeases dumps a read and a write lease with --file-locks: both
// must be held again after restore, and a conflicting open must break
// the read lease with SIGIO to the restored workload.
func TestFileLeases(t *testing.T) {
	t.Run("read and write leases are held again after restore and still break", func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, "lease")
		img := filepath.Join(t.TempDir(), "img")
		r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img, "--file-locks")
		if r.code() != 0 {
			t.Fatalf("%s: exit status %d: %s%s", r, r.code(), r.stderr(), w.report())
		}
		if _, err := w.waitOriginal(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		restoreForeground(t, w, img, scenario{}, nil)
		if !t.Failed() {
			decodeWithCrit(t, img)
		}
	})
	t.Run("the lease workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "lease").checkPasses(30*time.Second, "lease")
	})
}

// TestFanotifyGroup dumps a fanotify group with an inode mark, a mount
// mark and an ignored mask: each must report (or ignore) as before.
func TestFanotifyGroup(t *testing.T) {
	t.Run("a fanotify group keeps its inode mark, mount mark and ignored mask", func(t *testing.T) {
		dumpRestoreWorkload(t, "fanotify")
	})
	t.Run("the fanotify workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "fanotify").checkPasses(30*time.Second, "fanotify")
	})
}
