package criu

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctcr/ctcr/criu/images"
)

// loadCredsFrom runs loadCreds on a checkpoint whose unix-creds.json
// holds content.
func loadCredsFrom(t *testing.T, content string) (*unixRestore, error) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, unixCredsFile), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &fileRestore{cp: &checkpoint{dir: &images.Checkpoint{Dir: dir}}, state: map[string]any{unixTasksKey: &unixTasks{}}}
	ur := &unixRestore{}
	return ur, ur.loadCreds(r)
}

func TestUnixCredsLoad(t *testing.T) {
	ur, err := loadCredsFrom(t, `{"42": {"peer": {"pid": 7, "uid": 1000, "gid": 1001}, "connector": {"pid": 8, "uid": 0, "gid": 0}},
		"43": {"peer": {"pid": 0, "host_pid": 99, "uid": 0, "gid": 0}}}`)
	if err != nil {
		t.Fatal(err)
	}
	if c := ur.creds[42].Peer; c == nil || *c != (unixCred{Pid: 7, Uid: 1000, Gid: 1001}) {
		t.Errorf("socket 42: peer %+v", c)
	}
	if c := ur.creds[42].Connector; c == nil || c.Pid != 8 {
		t.Errorf("socket 42: connector %+v", c)
	}
	if c := ur.creds[43].Peer; c == nil || c.Pid != 0 || c.HostPid != 99 {
		t.Errorf("socket 43: peer %+v", c)
	}
	if ur.uidMap != nil || ur.gidMap != nil {
		t.Errorf("id maps without a userns image: %v %v", ur.uidMap, ur.gidMap)
	}
}

// A damaged unix-creds.json fails the restore with one line naming the
// file, as corrupt.
func TestUnixCredsCorrupt(t *testing.T) {
	for name, content := range map[string]string{
		"not JSON":         `{"42": `,
		"an inode no word": `{"sock": {"peer": {"pid": 1, "uid": 0, "gid": 0}}}`,
		"a null entry":     `{"42": null}`,
		"a negative pid":   `{"42": {"peer": {"pid": -5, "uid": 0, "gid": 0}}}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := loadCredsFrom(t, content)
			if err == nil || !errors.Is(err, images.ErrCorrupt) || !strings.Contains(err.Error(), unixCredsFile) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %v, want one line naming %s, wrapping ErrCorrupt", err, unixCredsFile)
			}
		})
	}
}
