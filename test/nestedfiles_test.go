package test

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPlainNestedMountFiles: a child of a plain tree made a mount
// namespace of its own with a tmpfs over DIR/priv and a bind of the
// tmpfs's directory inner over DIR/bound (as PrivateTmp= makes /tmp a
// service's own), and holds files there that only its view reaches
// (nestedfiles workload): an fd open read-write at an offset, shared
// with the root task through SCM_RIGHTS; a MAP_SHARED mapping; its cwd;
// an unlinked file; a FIFO with bytes queued. The root's view has
// other files at the same paths. After a plain dump and restore the
// child finds each in its own view again (on its tmpfs, with its
// content and offset; a write through the mapping reaches the file of
// its view), the root's files are untouched, and the root's copy of
// the child's fd is the child's file. The images name the mount of
// each such file (RegFileEntry.mnt_id) in the nested namespace's table.
func TestPlainNestedMountFiles(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "nestedfiles")
	kids := descendantsOf(w.pid)
	if len(kids) != 1 || nsInode(t, kids[0], "mnt") == nsInode(t, w.pid, "mnt") {
		t.Fatalf("the workload's child %v made no mount namespace of its own", kids)
	}
	img := filepath.Join(t.TempDir(), "img")
	dump(t, w, img, false, 0)
	for _, k := range kids {
		if _, _, err := reap(k, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	checkNestedMntIDs(t, img)
	restoreForeground(t, w, img, scenario{}, nil)
	if !t.Failed() {
		decodeWithCrit(t, img)
	}
}

// checkNestedMntIDs checks, with crit, that the reg-file entries of the
// child's own files name a mount of its namespace's table, and that the
// root's files name none. DIR/bound/map and DIR/bound/wd are the root's
// too (its own files at the same paths): one entry each names a nested
// mount, the other none.
func checkNestedMntIDs(t *testing.T, img string) {
	t.Helper()
	crit, err := exec.LookPath("crit")
	if err != nil {
		t.Logf("crit is not installed; mnt_id of the images not checked")
		return
	}
	decode := func(name string) []map[string]any {
		out, err := exec.Command(crit, "decode", "-i", filepath.Join(img, name)).Output()
		if err != nil {
			t.Fatalf("crit decode %s: %v", name, err)
		}
		var doc struct {
			Entries []map[string]any `json:"entries"`
		}
		if err := json.Unmarshal(out, &doc); err != nil {
			t.Fatalf("crit decode %s: %v", name, err)
		}
		return doc.Entries
	}
	tables, _ := filepath.Glob(filepath.Join(img, "mountpoints-*.img"))
	nested := map[float64]bool{}
	for _, p := range tables {
		if filepath.Base(p) == "mountpoints-1.img" {
			continue
		}
		for _, e := range decode(filepath.Base(p)) {
			if id, ok := e["mnt_id"].(float64); ok {
				nested[id] = true
			}
		}
	}
	if len(nested) == 0 {
		t.Fatalf("no nested mount table in %v", tables)
	}
	want := map[string]bool{"/priv/data": false, "/bound/map": false, "/bound/wd": false, "/priv/gone": false, "/priv/fifo": false}
	rootToo := map[string]int{"/bound/map": 0, "/bound/wd": 0} // entries of the root's own files
	for _, e := range decode("files.img") {
		reg, ok := e["reg"].(map[string]any)
		if !ok {
			continue
		}
		name, _ := reg["name"].(string)
		id, has := reg["mnt_id"].(float64)
		for suffix := range want {
			if !strings.HasSuffix(name, suffix) {
				continue
			}
			if n, ok := rootToo[suffix]; ok && (!has || id < 0) {
				rootToo[suffix] = n + 1
				continue
			}
			if !has || !nested[id] {
				t.Errorf("files.img: %s names mount %v, not one of the nested table", name, reg["mnt_id"])
			}
			want[suffix] = true
		}
		if strings.HasSuffix(name, "/out") || strings.HasSuffix(name, "/err") {
			if has && id >= 0 {
				t.Errorf("files.img: %s, a file of the root's view, names mount %v", name, id)
			}
		}
	}
	for suffix, seen := range want {
		if !seen {
			t.Errorf("files.img has no entry for DIR%s", suffix)
		}
	}
	for suffix, n := range rootToo {
		if n != 1 {
			t.Errorf("files.img has %d entries for the root's own DIR%s, want 1", n, suffix)
		}
	}
}

// TestPlainNestedMountSocketRefused: a unix socket bound to a name of a
// nested mount namespace's own view would be bound again in the root's
// view at restore (unix sockets are made there), where the name is
// another file's or its directory missing: the dump refuses it naming
// the socket's path, and the tree runs on and checks itself as if never
// dumped (nestedfiles workload, "sock" mode).
func TestPlainNestedMountSocketRefused(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "nestedfiles", "sock")
	r := runCtcr(t, 60*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", filepath.Join(t.TempDir(), "img"))
	if r.code() != 1 || !strings.Contains(r.stderr(), "unix socket bound to "+w.path("priv/sock")) || !strings.Contains(r.stderr(), "its own mount namespace") {
		t.Fatalf("%s: exit %d, want 1 naming the socket bound to %s in its own mount namespace: %s", r, r.code(), w.path("priv/sock"), r.stderr())
	}
	w.checkPasses(30*time.Second, "the nestedfiles workload after the refused dump")
}
