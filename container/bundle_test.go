package container

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestReadBundleRefusesCgroupEscapes: cgroup names and limit files of a
// crafted ctcr.json that would lead out of /sys/fs/cgroup are refused
// before restore makes any directory or writes any file.
func TestReadBundleRefusesCgroupEscapes(t *testing.T) {
	for name, meta := range map[string]string{
		"a v1 path climbing out":        `{"id":"x","cgroups":{"v1":{"freezer":"/../../../../tmp/x"}}}`,
		"a controller named ..":         `{"id":"x","cgroups":{"v1":{"name=..":"/x"}}}`,
		"a v2 path climbing out":        `{"id":"x","cgroups":{"v2":"/a/../../../../etc"}}`,
		"a limit file with a slash":     `{"id":"x","limits":{"v2":{"../../../../etc/passwd":"x"}}}`,
		"a sub-cgroup path climbing up": `{"id":"x","sub_cgroups":[{"cgroups":{"v1":{"memory":"../.."}},"pids":[1]}]}`,
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "ctcr.json"), []byte(meta), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := ReadBundle(dir); !errors.Is(err, ErrBadBundle) {
			t.Errorf("%s: ReadBundle: %v, want ErrBadBundle", name, err)
		}
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ctcr.json"), []byte(`{"id":"x","cgroups":{"v1":{"freezer":"/a/b","name=systemd":"/a"},"v2":"/a/b"},"limits":{"v2":{"pids.max":"max"}}}`), 0o600)
	if _, _, err := ReadBundle(dir); err != nil {
		t.Errorf("a genuine ctcr.json: %v", err)
	}
}

// TestStatsRewrittenAfterCommit: the figures written again once the tasks
// are ended (WriteStats) leave the committed bundle verifiable: a ctcr
// killed between the new stats.json and anything else must not leave a
// checkpoint refused as damaged.
func TestStatsRewrittenAfterCommit(t *testing.T) {
	dir := t.TempDir()
	if err := WriteBundle(dir, &Container{ID: "c"}, &Meta{ID: "c"}, &Stats{}); err != nil {
		t.Fatal(err)
	}
	if err := WriteStats(dir, &Stats{Tasks: 3, PagesBytes: 1 << 30, FrozenSeconds: 0.25, Warnings: []string{"a longer file"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyBundle(dir); err != nil {
		t.Fatalf("the bundle with its figures rewritten: %v", err)
	}
	if _, st, err := ReadBundle(dir); err != nil || st.Tasks != 3 {
		t.Fatalf("ReadBundle: %+v, %v; want the rewritten figures", st, err)
	}
}
