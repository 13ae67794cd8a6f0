package criu

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// RootTask is the root of a tree being restored, stopped in its new
// namespaces before it has created any other task. Syscalls run in it
// change those namespaces (mounts, pivot_root, hostname).
//
// Preconditions: used only inside RestoreOptions.PrepareRoot.
type RootTask struct {
	Pid int // host PID
	t   *restoringTask
}

// Call runs syscall nr in the root task. Arguments are integers, or
// strings and byte slices, which are copied into the task's memory and
// passed by address; nil passes 0.
func (r *RootTask) Call(nr uintptr, args ...any) (uint64, error) {
	b := r.t.ctl.newBatch()
	var raw []uint64
	for _, a := range args {
		switch v := a.(type) {
		case nil:
			raw = append(raw, 0)
		case int:
			raw = append(raw, uint64(v))
		case uint64:
			raw = append(raw, v)
		case uintptr:
			raw = append(raw, uint64(v))
		case string, []byte:
			addr, err := b.put(v)
			if err != nil {
				return 0, err
			}
			raw = append(raw, addr)
		default:
			return 0, fmt.Errorf("RootTask.Call: argument of type %T", a)
		}
	}
	b.add(nr, raw...)
	res, err := b.run()
	if err != nil {
		return 0, err
	}
	return res[0], nil
}

// path returns where ctcr finds path as the task sees it: through
// /proc/PID/root, which crosses into the task's mount namespace and root.
func (t *restoringTask) path(p string) string { return taskPath(t.pid, p) }

// taskPath returns where ctcr finds path p, as /proc shows the paths of
// task pid (its fd, cwd, root, exe and map links), from ctcr's side.
//
// /proc renders a task's path from the reader's root when the reader can
// reach it: for a task in ctcr's own mount namespace p is a path of
// ctcr's, whatever the task's root, so it is used as is (going through
// /proc/PID/root would resolve it again below a task's chroot, where it
// does not exist). For a task in another mount namespace (a container),
// p is rendered from that namespace's root, which /proc/PID/root reaches
// when the task is not chrooted inside it.
func taskPath(pid int, p string) string {
	if inMountNSOfCtcr(pid) {
		return p
	}
	return fmt.Sprintf("/proc/%d/root%s", pid, p)
}

// inMountNSOfCtcr reports whether task pid is in ctcr's mount namespace.
func inMountNSOfCtcr(pid int) bool {
	var mine, theirs unix.Stat_t
	if unix.Stat("/proc/self/ns/mnt", &mine) != nil || unix.Stat(fmt.Sprintf("/proc/%d/ns/mnt", pid), &theirs) != nil {
		return false
	}
	return mine.Dev == theirs.Dev && mine.Ino == theirs.Ino
}

// joinNamespace makes the root task join the namespace at path (of kind
// flag), which must be one: setns checks it.
func (r *RootTask) joinNamespace(path string, flag int) error {
	atFdcwd := unix.AT_FDCWD
	fd, err := r.Call(unix.SYS_OPENAT, uint64(int64(atFdcwd)), path, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	_, err = r.Call(unix.SYS_SETNS, fd, int(flag))
	r.Call(unix.SYS_CLOSE, fd)
	return err
}
