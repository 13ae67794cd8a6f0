package criu

import (
	"strings"
	"testing"

	criucore "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/mnt"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/regfile"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
)

// TestViewPidFollowsTheMountsNamespace: a reg-file entry that names a
// mount of a nested namespace's table is opened through a restored task
// of that namespace; one naming no mount, or a mount of no nested
// table, through the default (the root); a namespace none of whose
// tasks exists yet is an error that names the file.
func TestViewPidFollowsTheMountsNamespace(t *testing.T) {
	dir := t.TempDir()
	cp := &images.Checkpoint{Dir: dir}
	entry := func(id, parent uint32, mp string) *mnt.MntEntry {
		return &mnt.MntEntry{
			Fstype: proto.Uint32(uint32(mnt.Fstype_AUTO)), MntId: proto.Uint32(id), RootDev: proto.Uint32(0),
			ParentMntId: proto.Uint32(parent), Flags: proto.Uint32(0), Root: proto.String("/"),
			Mountpoint: proto.String(mp), Source: proto.String("none"), Options: proto.String(""),
		}
	}
	const nested = 4026532999
	if err := images.WriteFile(cp.Path(images.Mnts.FileName(nested)), images.Mnts, entry(700, 1, "/"), entry(701, 700, "/tmp")); err != nil {
		t.Fatal(err)
	}
	task := func(pid int32, mntNS uint32) *restoredTaskImages {
		return &restoredTaskImages{
			pstree: &pstree.PstreeEntry{Pid: proto.Uint32(uint32(pid))},
			core:   &criucore.CoreEntry{Ids: &criucore.TaskKobjIdsEntry{MntNsId: proto.Uint32(mntNS)}},
		}
	}
	hosts := map[int]int{1: 1001, 2: 1002}
	r := &fileRestore{
		cp:      &checkpoint{dir: cp, tasks: []*restoredTaskImages{task(1, nsHost), task(2, nested), task(3, 77)}},
		rootPid: 1001,
		state:   map[string]any{},
		hostPid: func(v int) (int, bool) { h, ok := hosts[v]; return h, ok },
	}
	if err := images.WriteFile(cp.Path(images.Mnts.FileName(77)), images.Mnts, entry(900, 1, "/")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		mntID *int32
		want  int
		err   string
	}{
		{"an entry without mnt_id opens in the root's view", nil, 1001, ""},
		{"a mount of the nested table opens in that namespace's task", proto.Int32(701), 1002, ""},
		{"a mount of no nested table opens in the root's view", proto.Int32(5), 1001, ""},
		{"a namespace with no restored task yet is an error", proto.Int32(900), 0, "no task is restored yet"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := r.viewPid(&regfile.RegFileEntry{Name: proto.String("/tmp/f"), MntId: c.mntID}, r.rootPid)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), "/tmp/f") {
					t.Fatalf("viewPid: %v, want an error naming /tmp/f and %q", err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("viewPid = %d, %v; want %d", got, err, c.want)
			}
		})
	}
}
