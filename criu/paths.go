package criu

import (
	"os"

	"github.com/ctcr/ctcr/internal/inroot"
)

// openInTree opens p, a path the kernel reported at the checkpoint (an
// fd's or a mapping's file, the executable), as the restored tree sees
// it: inside the root of its root task (host PID pid), never through a
// symlink (see package inroot: such a path had none at the checkpoint,
// so one there now was planted since).
func openInTree(pid int, p string, flags int) (*os.File, error) {
	root, err := inroot.OfTask(pid)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return root.OpenFile(p, flags, 0, inroot.NoLinks)
}

// openOnHost opens p, a path the kernel reported in ctcr's own mount
// namespace (a container's stdout its runtime opened on the host), with
// the same care.
func openOnHost(p string, flags int) (*os.File, error) {
	root, err := inroot.Open("/", "ctcr's root")
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return root.OpenFile(p, flags, 0, inroot.NoLinks)
}

// parentInTree resolves the directory that holds p inside the root of
// task pid, without following any symlink, for creating, binding or
// removing p's last component there.
func parentInTree(pid int, p string) (*inroot.Dir, error) {
	root, err := inroot.OfTask(pid)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return root.Parent(p, inroot.NoLinks)
}
