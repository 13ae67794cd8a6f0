package ns

import (
	"fmt"
	"testing"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/mnt"
	"google.golang.org/protobuf/proto"
)

func mntEntry(id, parent uint32, mp string) *mnt.MntEntry {
	return &mnt.MntEntry{MntId: proto.Uint32(id), ParentMntId: proto.Uint32(parent), Mountpoint: proto.String(mp)}
}

func order(es []*mnt.MntEntry) string {
	s := ""
	for _, e := range es {
		s += fmt.Sprintf(" %d", e.GetMntId())
	}
	return s
}

func TestParentsFirst(t *testing.T) {
	cases := []struct {
		name    string
		entries []*mnt.MntEntry
		want    string
	}{
		{
			// The order of an LXC container's mountinfo: /proc/sys/net
			// (69) is listed before the /proc/sys (70) it sits on.
			"an LXC mountinfo mounts /proc/sys before /proc/sys/net and keeps the rest in place",
			[]*mnt.MntEntry{mntEntry(66, 43, "/"), mntEntry(67, 66, "/dev"), mntEntry(68, 66, "/proc"),
				mntEntry(69, 70, "/proc/sys/net"), mntEntry(70, 68, "/proc/sys"), mntEntry(71, 66, "/sys"),
				mntEntry(45, 70, "/proc/sys/kernel/random/boot_id"), mntEntry(44, 66, "/data")},
			" 66 67 68 70 69 71 45 44",
		},
		{
			"an order that is parents first already stays as it is",
			[]*mnt.MntEntry{mntEntry(1, 0, "/"), mntEntry(5, 1, "/b"), mntEntry(3, 1, "/a"), mntEntry(4, 3, "/a/x")},
			" 1 5 3 4",
		},
		{
			"a cycle of parent ids keeps every mount, in recorded order",
			[]*mnt.MntEntry{mntEntry(1, 0, "/"), mntEntry(2, 3, "/a"), mntEntry(3, 2, "/b")},
			" 1 2 3",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := order(parentsFirst(tc.entries)); got != tc.want {
				t.Errorf("order%s, want%s", got, tc.want)
			}
		})
	}
}
