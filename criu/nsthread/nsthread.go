// Package nsthread runs work on an OS thread of its own that joins
// another task's namespaces or root: a thread of a multi-threaded process
// may join a network, IPC or UTS namespace, and chroot once it has its
// own fs (unshare CLONE_FS). Such a thread is never reused: it ends with
// the work, so no other goroutine ever runs in a foreign namespace.
package nsthread

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Run runs enter, then fn, on a fresh locked OS thread that is not the
// main thread (the runtime never throws the main thread away, and
// /proc/self/ns shows its namespaces as the process's own). fn does not
// run if enter fails.
func Run(enter func() error, fn func() error) error {
	errc := make(chan error, 1)
	var run func()
	run = func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// Keep the main thread locked while another does the work.
			done := make(chan struct{})
			go func() { run(); close(done) }()
			<-done
			runtime.UnlockOSThread()
			return
		}
		// Not unlocked: the thread carries the foreign namespace and
		// ends with this goroutine.
		if err := enter(); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}
	go run()
	return <-errc
}

// Same reports whether pid's namespace of kind (net, ipc, uts, mnt...)
// is the calling thread's own.
func Same(pid int, kind string) (bool, error) {
	var theirs, mine unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/%s", pid, kind), &theirs); err != nil {
		return false, fmt.Errorf("task %d: %s namespace: %w", pid, kind, err)
	}
	if err := unix.Stat("/proc/thread-self/ns/"+kind, &mine); err != nil {
		return false, err
	}
	return theirs.Ino == mine.Ino && theirs.Dev == mine.Dev, nil
}

// Join makes the calling locked thread join pid's namespace of kind (a
// kind a thread may join alone: net, ipc, uts), and checks that it took.
// Joining ctcr's own namespace is refused: callers ask for the tree's.
func Join(pid int, kind string, flag int) error {
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, kind))
	if err != nil {
		return err
	}
	defer f.Close()
	var want, now unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &want); err != nil {
		return err
	}
	if same, err := Same(pid, kind); err != nil {
		return err
	} else if same {
		return fmt.Errorf("task %d is in ctcr's own %s namespace, not one of its own", pid, kind)
	}
	if err := unix.Setns(int(f.Fd()), flag); err != nil {
		return fmt.Errorf("enter the %s namespace of task %d: %w", kind, pid, err)
	}
	if err := unix.Stat("/proc/thread-self/ns/"+kind, &now); err != nil || now.Ino != want.Ino {
		return fmt.Errorf("entering the %s namespace of task %d did not take", kind, pid)
	}
	return nil
}

// SameRoot reports whether pid's root directory is the calling thread's.
func SameRoot(pid int) (bool, error) {
	var theirs, mine unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/root", pid), &theirs); err != nil {
		return false, fmt.Errorf("task %d: root: %w", pid, err)
	}
	if err := unix.Stat("/proc/thread-self/root", &mine); err != nil {
		return false, err
	}
	return theirs.Ino == mine.Ino && theirs.Dev == mine.Dev, nil
}

// View makes the calling locked thread see paths and network as task pid
// does: its network namespace (unless the same) and its root, with the
// mounts of its mount namespace under it (unless the same root). Paths
// through /proc then name the task's /proc, not ctcr's.
func View(pid int) error {
	if same, err := Same(pid, "net"); err != nil {
		return err
	} else if !same {
		if err := Join(pid, "net", unix.CLONE_NEWNET); err != nil {
			return err
		}
	}
	if same, err := SameRoot(pid); err != nil || same {
		return err
	}
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("a thread of its own fs: %w", err)
	}
	if err := unix.Chroot(fmt.Sprintf("/proc/%d/root", pid)); err != nil {
		return fmt.Errorf("enter the root of task %d: %w", pid, err)
	}
	return unix.Chdir("/")
}

// Foreign reports whether task pid sees the network or paths otherwise
// than ctcr: then work on its sockets must run under View.
func Foreign(pid int) (bool, error) {
	sameNet, err := Same(pid, "net")
	if err != nil {
		return false, err
	}
	sameRoot, err := SameRoot(pid)
	if err != nil {
		return false, err
	}
	return !sameNet || !sameRoot, nil
}
