package ns

import (
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/mnt"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/proc"
)

// entryID is entry with a mount id and a parent's.
func entryID(id, parent uint32, mp string, dev uint32, root string, shared, master, flags uint32) *mnt.MntEntry {
	e := entry(mp, dev, root, shared, master, flags)
	e.MntId, e.ParentMntId = proto.Uint32(id), proto.Uint32(parent)
	return e
}

func TestPlanNestedPropagation(t *testing.T) {
	// The container's table: / and /run shared (systemd), /data private.
	base := []*mnt.MntEntry{
		entryID(1, 0, "/", 1, "/ct/rootfs", 1, 0, 0),
		entryID(2, 1, "/run", 2, "/", 2, 0, 0),
		entryID(3, 1, "/data", 3, "/", 0, 0, 0),
	}
	for _, tc := range []struct {
		name     string
		base     []*mnt.MntEntry
		nested   []*mnt.MntEntry
		steps    []string
		anchors  []string
		warnings int
	}{
		{name: "systemd's MS_SLAVE|MS_REC: slaves of the container's groups, PrivateTmp's bind too",
			nested: []*mnt.MntEntry{
				entry("/", 1, "/ct/rootfs", 0, 1, 0), entry("/run", 2, "/", 0, 2, 0), entry("/data", 3, "/", 0, 0, 0),
				entry("/tmp", 1, "/ct/rootfs/tmp/priv", 0, 1, 0)},
			steps: []string{
				"join / to the peer group of the container's mount /", "make / a slave",
				"join /run to the peer group of the container's mount /run", "make /run a slave",
				"join /tmp to the peer group of the container's mount /", "make /tmp a slave"},
			anchors: []string{"/", "/run"}},
		{name: "a plain unshare: peers of the container's groups",
			nested:  []*mnt.MntEntry{entry("/", 1, "/ct/rootfs", 1, 0, 0), entry("/run", 2, "/", 2, 0, 0), entry("/data", 3, "/", 0, 0, 0)},
			steps:   []string{"join / to the peer group of the container's mount /", "join /run to the peer group of the container's mount /run"},
			anchors: []string{"/", "/run"}},
		{name: "shared again and a slave (systemd's default MountFlags=shared), with a peer bind",
			nested: []*mnt.MntEntry{entry("/", 1, "/ct/rootfs", 7, 1, 0), entry("/run", 2, "/", 8, 2, 0), entry("/srv", 2, "/x", 8, 2, 0)},
			steps: []string{
				"join / to the peer group of the container's mount /", "make / a slave", "make / shared",
				"join /run to the peer group of the container's mount /run", "make /run a slave", "make /run shared",
				"join /srv to the peer group of /run"},
			anchors: []string{"/", "/run"}},
		{name: "a private namespace needs nothing, an unbindable mount is made so",
			nested: []*mnt.MntEntry{entry("/", 1, "/ct/rootfs", 0, 0, 0), entry("/data", 3, "/", 0, 0, unix.MS_UNBINDABLE)},
			steps:  []string{"make /data unbindable"}},
		{name: "a container mount covered by another is no source: the slave is private, and that is said",
			base: []*mnt.MntEntry{
				entryID(1, 0, "/", 1, "/ct/rootfs", 0, 0, 0),
				entryID(2, 1, "/m", 2, "/", 5, 0, 0),
				entryID(3, 2, "/m", 2, "/", 0, 0, 0)},
			nested:   []*mnt.MntEntry{entry("/", 1, "/ct/rootfs", 0, 0, 0), entry("/m", 2, "/", 0, 5, 0)},
			warnings: 1},
		{name: "a peer of a container group none of whose members shows its root: a group of its own, and that is said",
			base:     []*mnt.MntEntry{entryID(1, 0, "/", 1, "/ct/rootfs", 0, 0, 0), entryID(2, 1, "/a", 2, "/x", 5, 0, 0)},
			nested:   []*mnt.MntEntry{entry("/", 1, "/ct/rootfs", 0, 0, 0), entry("/b", 2, "/", 5, 0, 0)},
			steps:    []string{"make /b shared"},
			warnings: 1},
		{name: "a slave of a host group follows a container mount that is that group's slave",
			base:    []*mnt.MntEntry{entryID(1, 0, "/", 1, "/ct/rootfs", 0, 9, 0)},
			nested:  []*mnt.MntEntry{entry("/", 1, "/ct/rootfs", 0, 9, 0)},
			steps:   []string{"join / to the peer group of the container's mount /"},
			anchors: []string{"/"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.base
			if b == nil {
				b = base
			}
			plan, err := planNestedPropagation(b, tc.nested)
			if err != nil {
				t.Fatal(err)
			}
			var steps []string
			for _, s := range plan.steps {
				steps = append(steps, s.String())
			}
			if !reflect.DeepEqual(steps, tc.steps) {
				t.Errorf("steps:\n%s\nwant:\n%s", strings.Join(steps, "\n"), strings.Join(tc.steps, "\n"))
			}
			if !reflect.DeepEqual(plan.hostMounts, tc.anchors) {
				t.Errorf("anchors %q, want %q", plan.hostMounts, tc.anchors)
			}
			if len(plan.warnings) != tc.warnings {
				t.Errorf("warnings %q, want %d", plan.warnings, tc.warnings)
			}
		})
	}
}

// TestNestedMountEntriesPropagation: the nested tables record what
// mountinfo's optional fields say, as the container's does.
func TestNestedMountEntriesPropagation(t *testing.T) {
	es := mountEntriesOf(t, "10 1 8:1 / / rw shared:1 - ext4 /dev/sda rw\n"+
		"11 10 0:5 / /a rw shared:4 master:1 - tmpfs t rw\n"+
		"12 10 0:6 / /b rw,nosuid unbindable - tmpfs t rw\n")
	got := []string{}
	for _, e := range es {
		got = append(got, strings.Join([]string{e.GetMountpoint(), utoa(e.GetSharedId()), utoa(e.GetMasterId()), utoa(e.GetFlags() &^ perMountFlags)}, " "))
	}
	want := []string{"/ 1 0 0", "/a 4 1 0", "/b 0 0 " + utoa(unix.MS_UNBINDABLE)}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("entries %q, want %q", got, want)
	}
}

func mountEntriesOf(t *testing.T, mountinfo string) []*mnt.MntEntry {
	t.Helper()
	ms, err := proc.ParseMountinfo(strings.NewReader(mountinfo))
	if err != nil {
		t.Fatal(err)
	}
	return mountEntries(ms)
}

func utoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }
