package ns

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Own reports which of pid's namespaces (mnt, uts, ipc, net, pid,
// cgroup) differ from ctcr's own.
func Own(pid int) (map[string]bool, error) {
	out := map[string]bool{}
	for _, k := range []string{"mnt", "uts", "ipc", "net", "pid", "cgroup"} {
		var mine, theirs unix.Stat_t
		if err := unix.Stat("/proc/self/ns/"+k, &mine); err != nil {
			return nil, err
		}
		if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/%s", pid, k), &theirs); err != nil {
			return nil, fmt.Errorf("task %d: %s namespace: %w", pid, k, err)
		}
		out[k] = mine.Ino != theirs.Ino || mine.Dev != theirs.Dev
	}
	return out, nil
}
