package ns

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/utsns"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
)

const utsNsID = 1

// inNamespace runs fn on an OS thread that joined pid's namespace of the
// given kind (ipc, uts, net: kinds a thread of a multi-threaded process
// may join). The thread is never reused: it exits with the goroutine.
func inNamespace(pid int, kind string, flag int, fn func() error) error {
	errc := make(chan error, 1)
	var run func()
	run = func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// The main thread: the runtime can never throw it away, and
			// /proc/self/ns shows its namespaces as ctcr's own. Keep it
			// locked while another thread does the work.
			done := make(chan struct{})
			go func() { run(); close(done) }()
			<-done
			runtime.UnlockOSThread()
			return
		}
		// Not unlocked: the thread carries the foreign namespace and
		// must end with this goroutine.
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, kind))
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		var want, mine, now unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &want); err != nil {
			errc <- err
			return
		}
		if err := unix.Stat("/proc/thread-self/ns/"+kind, &mine); err != nil {
			errc <- err
			return
		}
		if want.Ino == mine.Ino {
			// Restoring into, or dumping, ctcr's own namespace would
			// touch the host's objects: the caller asked for the tree's.
			errc <- fmt.Errorf("task %d is in ctcr's own %s namespace, not one of its own", pid, kind)
			return
		}
		if err := unix.Setns(int(f.Fd()), flag); err != nil {
			errc <- fmt.Errorf("enter the %s namespace of task %d: %w", kind, pid, err)
			return
		}
		if err := unix.Stat("/proc/thread-self/ns/"+kind, &now); err != nil || now.Ino != want.Ino {
			errc <- fmt.Errorf("entering the %s namespace of task %d did not take", kind, pid)
			return
		}
		errc <- fn()
	}
	go run()
	return <-errc
}

// DumpUTS records the host and domain names of pid's UTS namespace.
func DumpUTS(pid int, stage *images.Staging) error {
	var u unix.Utsname
	if err := inNamespace(pid, "uts", unix.CLONE_NEWUTS, func() error { return unix.Uname(&u) }); err != nil {
		return err
	}
	e := &utsns.UtsnsEntry{Nodename: proto.String(unix.ByteSliceToString(u.Nodename[:])), Domainname: proto.String(unix.ByteSliceToString(u.Domainname[:]))}
	return images.WriteFile(stage.Path(images.Utsns.FileName(utsNsID)), images.Utsns, e)
}

// RestoreUTS sets the names in the restored root's new UTS namespace.
func RestoreUTS(sc Syscaller, imgDir string) error {
	e := &utsns.UtsnsEntry{}
	if err := images.ReadOne(filepath.Join(imgDir, images.Utsns.FileName(utsNsID)), images.Utsns, e); err != nil {
		return err
	}
	for _, n := range []struct {
		nr   uintptr
		v    string
		what string
	}{{unix.SYS_SETHOSTNAME, e.GetNodename(), "hostname"}, {unix.SYS_SETDOMAINNAME, e.GetDomainname(), "domainname"}} {
		if len(n.v) > 64 {
			return fmt.Errorf("utsns image: %s of %d bytes: %w", n.what, len(n.v), images.ErrCorrupt)
		}
		if _, err := sc.Call(n.nr, []byte(n.v), uint64(len(n.v))); err != nil {
			return fmt.Errorf("set the %s %q: %w", n.what, n.v, err)
		}
	}
	return nil
}
