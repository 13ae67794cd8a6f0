package ns

import (
	"testing"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/mnt"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

func newfsEntry(mp, fs, root string, dev uint32, flags uint32) *mnt.MntEntry {
	return &mnt.MntEntry{Mountpoint: proto.String(mp), Fsname: proto.String(fs), Root: proto.String(root), RootDev: proto.Uint32(dev), Flags: proto.Uint32(flags), Source: proto.String(fs)}
}

// A service with ProtectProc= has a proc of its own on /proc: the plan
// mounts it anew; a new hugetlbfs or ramfs (whose content would have to
// be looked at) and an unknown file system are still refused.
func TestNestedPlanMountsStatelessFSAnew(t *testing.T) {
	container := []*mnt.MntEntry{newfsEntry("/", "ext4", "/", 1, 0), newfsEntry("/proc", "proc", "/", 2, unix.MS_NOSUID)}
	nested := append(container[:2:2], newfsEntry("/proc", "proc", "/", 9, unix.MS_NOSUID|unix.MS_NODEV))
	steps, err := nestedMountPlan(container, nested)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 1 || steps[0].op != "new" || steps[0].e.GetMountpoint() != "/proc" || steps[0].flags != unix.MS_NOSUID|unix.MS_NODEV {
		t.Fatalf("steps %v, want one new mount of proc at /proc", steps)
	}
	for _, fs := range []string{"hugetlbfs", "ramfs", "ext4"} {
		nested := append(container[:2:2], newfsEntry("/x", fs, "/", 9, 0))
		if _, err := nestedMountPlan(container, nested); err == nil {
			t.Errorf("a nested namespace's own %s is planned, want it refused", fs)
		}
	}
}
