package ns

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/mnt"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
)

func TestParsePropagation(t *testing.T) {
	for _, tc := range []struct {
		fields []string
		want   propagation
	}{
		{nil, propagation{}},
		{[]string{"shared:3"}, propagation{shared: 3}},
		{[]string{"shared:3", "master:7"}, propagation{shared: 3, master: 7}},
		{[]string{"master:7", "propagate_from:2"}, propagation{master: 7, from: 2}},
		{[]string{"unbindable"}, propagation{unbindable: true}},
		{[]string{"shared:x", "master:-1", "other"}, propagation{}},
	} {
		if got := parsePropagation(tc.fields); got != tc.want {
			t.Errorf("parsePropagation(%q) = %+v, want %+v", tc.fields, got, tc.want)
		}
	}
}

func TestDominantMaster(t *testing.T) {
	inside, onHost := map[uint32]bool{2: true}, map[uint32]bool{7: true}
	for _, tc := range []struct {
		p    propagation
		want uint32
	}{
		{propagation{}, 0},
		{propagation{master: 2}, 2},
		{propagation{master: 7, from: 2}, 7}, // the host shows the master: keep it
		{propagation{master: 9, from: 2}, 2}, // gone from view: the dominating group
		{propagation{master: 9}, 9},          // no better choice
	} {
		if got := tc.p.dominantMaster(inside, onHost); got != tc.want {
			t.Errorf("%+v: master %d, want %d", tc.p, got, tc.want)
		}
	}
}

// entry builds a MntEntry: mount point, device, root, peer group,
// master and flags.
func entry(mp string, dev uint32, root string, shared, master, flags uint32) *mnt.MntEntry {
	e := &mnt.MntEntry{Mountpoint: proto.String(mp), RootDev: proto.Uint32(dev), Root: proto.String(root), Flags: proto.Uint32(flags)}
	if shared != 0 {
		e.SharedId = proto.Uint32(shared)
	}
	if master != 0 {
		e.MasterId = proto.Uint32(master)
	}
	return e
}

// internal sets e's internal_sharing, as a dump does for a mount bound
// from the host.
func internal(e *mnt.MntEntry, v bool) *mnt.MntEntry {
	e.InternalSharing = proto.Bool(v)
	return e
}

func TestPlanPropagation(t *testing.T) {
	root := entry("/", 1, "/ct/rootfs", 0, 0, 0)
	for _, tc := range []struct {
		name     string
		entries  []*mnt.MntEntry
		hosts    []*hostMount
		steps    []string
		hostMnts []string
		warnings int
		err      error
	}{
		{name: "private mounts need nothing", entries: []*mnt.MntEntry{root, entry("/a", 2, "/", 0, 0, unix.MS_NOSUID)}},
		{name: "peers join the member that shows the most, a slave follows them",
			entries: []*mnt.MntEntry{root, entry("/b", 2, "/x", 5, 0, 0), entry("/a", 2, "/", 5, 0, 0), entry("/c", 2, "/x/y", 0, 5, 0)},
			steps:   []string{"make /a shared", "join /b to the peer group of /a", "join /c to the peer group of /a", "make /c a slave"}},
		{name: "a master group is made before its slaves, listed first or not",
			entries: []*mnt.MntEntry{root, entry("/s", 2, "/", 6, 5, 0), entry("/m", 2, "/", 5, 0, 0)},
			steps:   []string{"make /m shared", "join /s to the peer group of /m", "make /s a slave", "make /s shared"}},
		{name: "a slave of a host group follows the host mount it was bound from",
			entries:  []*mnt.MntEntry{entry("/", 1, "/ct/rootfs", 0, 9, 0)},
			hosts:    []*hostMount{{mountpoint: "/ct/rootfs", dev: 1, prop: propagation{shared: 9}}},
			steps:    []string{"join / to the peer group of the host mount /ct/rootfs", "make / a slave"},
			hostMnts: []string{"/ct/rootfs"}},
		{name: "a host group renumbered since is followed, and that is said",
			entries:  []*mnt.MntEntry{entry("/", 1, "/ct/rootfs", 0, 9, 0)},
			hosts:    []*hostMount{{mountpoint: "/ct/rootfs", dev: 1, prop: propagation{shared: 10}}},
			steps:    []string{"join / to the peer group of the host mount /ct/rootfs", "make / a slave"},
			hostMnts: []string{"/ct/rootfs"}, warnings: 1},
		{name: "a host source no longer shared leaves the mount private, and that is said",
			entries:  []*mnt.MntEntry{entry("/", 1, "/ct/rootfs", 0, 9, 0)},
			hosts:    []*hostMount{{mountpoint: "/ct/rootfs", dev: 1}},
			warnings: 1},
		{name: "a host source on another device is no source",
			entries:  []*mnt.MntEntry{entry("/", 1, "/ct/rootfs", 0, 9, 0)},
			hosts:    []*hostMount{{mountpoint: "/ct/rootfs", dev: 3, prop: propagation{shared: 9}}},
			warnings: 1},
		{name: "a peer of a host group joins that group again",
			entries:  []*mnt.MntEntry{root, entry("/sh", 2, "/b", 4, 0, 0), entry("/sh2", 2, "/b/c", 4, 0, 0)},
			hosts:    []*hostMount{nil, {mountpoint: "/src", dev: 2, prop: propagation{shared: 4}}, {mountpoint: "/src", dev: 2, prop: propagation{shared: 4}}},
			steps:    []string{"join /sh to the peer group of the host mount /src", "join /sh2 to the peer group of /sh"},
			hostMnts: []string{"/src"}},
		{name: "a slave of a group that has host members, outside what the container's members show",
			entries:  []*mnt.MntEntry{root, entry("/sh", 2, "/b", 4, 0, 0), entry("/sl", 2, "/a", 0, 4, 0)},
			hosts:    []*hostMount{nil, {mountpoint: "/src", dev: 2, prop: propagation{shared: 4}}, {mountpoint: "/src", dev: 2, prop: propagation{shared: 4}}},
			steps:    []string{"join /sh to the peer group of the host mount /src", "join /sl to the peer group of the host mount /src", "make /sl a slave"},
			hostMnts: []string{"/src"}},
		{name: "a group that was the container's alone is made anew, whatever number the host mount has now",
			entries: []*mnt.MntEntry{root, internal(entry("/sh", 2, "/b", 4, 0, 0), true)},
			hosts:   []*hostMount{nil, {mountpoint: "/src", dev: 2, prop: propagation{shared: 4}}},
			steps:   []string{"make /sh shared"}},
		{name: "a group that had the host mount joins it again, renumbered since",
			entries:  []*mnt.MntEntry{root, internal(entry("/sh", 2, "/b", 4, 0, 0), false)},
			hosts:    []*hostMount{nil, {mountpoint: "/src", dev: 2, prop: propagation{shared: 7}}},
			steps:    []string{"join /sh to the peer group of the host mount /src"},
			hostMnts: []string{"/src"}},
		{name: "a group that had the host mount is made anew if the host mount is no longer shared",
			entries: []*mnt.MntEntry{root, internal(entry("/sh", 2, "/b", 4, 0, 0), false)},
			hosts:   []*hostMount{nil, {mountpoint: "/src", dev: 2}},
			steps:   []string{"make /sh shared"}},
		{name: "unbindable comes last",
			entries: []*mnt.MntEntry{root, entry("/u", 2, "/", 0, 0, unix.MS_UNBINDABLE|unix.MS_NOEXEC)},
			steps:   []string{"make /u unbindable"}},
		{name: "peers none of which shows the others' roots",
			entries: []*mnt.MntEntry{root, entry("/a", 2, "/a", 5, 0, 0), entry("/b", 2, "/b", 5, 0, 0)},
			err:     ErrUnsupported},
		{name: "groups that are each other's master",
			entries: []*mnt.MntEntry{root, entry("/a", 2, "/", 5, 6, 0), entry("/b", 2, "/", 6, 5, 0)},
			err:     images.ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hosts := tc.hosts
			if hosts == nil {
				hosts = make([]*hostMount, len(tc.entries))
			}
			plan, err := planPropagation(tc.entries, hosts)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("error %v, want %v", err, tc.err)
				}
				return
			}
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
			if !reflect.DeepEqual(plan.hostMounts, tc.hostMnts) {
				t.Errorf("host mounts %q, want %q", plan.hostMounts, tc.hostMnts)
			}
			if len(plan.warnings) != tc.warnings {
				t.Errorf("warnings %q, want %d", plan.warnings, tc.warnings)
			}
		})
	}
}
