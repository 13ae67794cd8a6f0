package criu

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// RootTask is the root of a tree being restored, stopped in its new
// namespaces before it has created any other task. Syscalls run in it
// change those namespaces (mounts, pivot_root, hostname).
//
// Preconditions: used only inside RestoreOptions.PrepareRoot, or
// RestoreOptions.NestedNS, where it stands for the task below the root
// that has just made a namespace of its own.
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
