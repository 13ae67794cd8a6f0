package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// needsCapsAnnotation marks the commands that seize, freeze or create
// tasks: run without the capabilities they need, they would fail
// midway (a ptrace EPERM, an unwritable freezer) after creating their
// directory. checkPrivileges refuses them up front instead.
const needsCapsAnnotation = "ctcr-needs-caps"

// neededCaps are the capabilities a dump or restore cannot do without:
// ptrace of others' tasks (and reading their /proc/PID/mem and
// map_files), and clone3 with set_tid, namespaces, mounts and cgroup
// writes. CAP_SYS_RESOURCE is not among them: ctcr works without it.
var neededCaps = []struct {
	cap  uint
	name string
}{
	{unix.CAP_SYS_PTRACE, "CAP_SYS_PTRACE"},
	{unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN"},
}

// needsCaps marks c as one checkPrivileges guards.
func needsCaps(c *cobra.Command) *cobra.Command {
	if c.Annotations == nil {
		c.Annotations = map[string]string{}
	}
	c.Annotations[needsCapsAnnotation] = "yes"
	return c
}

// checkPrivileges refuses a command marked needsCaps when ctcr's
// effective capabilities lack one it needs, naming it.
func checkPrivileges(c *cobra.Command) error {
	if c.Annotations[needsCapsAnnotation] == "" {
		return nil
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read ctcr's capabilities: %w", os.NewSyscallError("capget", err))
	}
	for _, n := range neededCaps {
		if data[n.cap/32].Effective&(1<<(n.cap%32)) == 0 {
			return fmt.Errorf("%s needs %s, which this ctcr (uid %d) lacks: run it as root", strings.TrimPrefix(c.CommandPath(), "ctcr "), n.name, os.Geteuid())
		}
	}
	return nil
}
