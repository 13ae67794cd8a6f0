package ns

import (
	"fmt"
	"path/filepath"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/utsns"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/nsthread"
)

const utsNsID = 1

// inNamespace runs fn on an OS thread of its own that joined pid's
// namespace of the given kind (ipc, uts, net: kinds a thread of a
// multi-threaded process may join); ctcr's own namespace is refused.
func inNamespace(pid int, kind string, flag int, fn func() error) error {
	return nsthread.Run(func() error { return nsthread.Join(pid, kind, flag) }, fn)
}

// DumpUTS records the host and domain names of pid's UTS namespace.
func DumpUTS(pid int, stage *images.Staging) error {
	return dumpUTSAs(pid, stage, utsNsID)
}

// dumpUTSAs is DumpUTS into the image of namespace id.
func dumpUTSAs(pid int, stage *images.Staging, id int) error {
	var u unix.Utsname
	if err := inNamespace(pid, "uts", unix.CLONE_NEWUTS, func() error { return unix.Uname(&u) }); err != nil {
		return err
	}
	e := &utsns.UtsnsEntry{Nodename: proto.String(unix.ByteSliceToString(u.Nodename[:])), Domainname: proto.String(unix.ByteSliceToString(u.Domainname[:]))}
	return images.WriteFile(stage.Path(images.Utsns.FileName(id)), images.Utsns, e)
}

// RestoreUTS sets the names in the restored root's new UTS namespace.
func RestoreUTS(sc Syscaller, imgDir string) error {
	return restoreUTSAs(sc, imgDir, utsNsID)
}

// restoreUTSAs is RestoreUTS from the image of namespace id, in the
// task sc stands for.
func restoreUTSAs(sc Syscaller, imgDir string, id int) error {
	e := &utsns.UtsnsEntry{}
	if err := images.ReadOne(filepath.Join(imgDir, images.Utsns.FileName(id)), images.Utsns, e); err != nil {
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
