package atomicfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestWriteReplacesAPlantedLinkWithoutFollowingIt(t *testing.T) {
	dir, victims := t.TempDir(), t.TempDir()
	victim := filepath.Join(victims, "victim")
	os.WriteFile(victim, []byte("victim"), 0o644)
	os.Symlink(victim, filepath.Join(dir, "state.json"))
	os.Symlink(victim, filepath.Join(dir, "state.json.ctcr-tmp"))
	os.Symlink(victim, filepath.Join(dir, "state.json.tmp"))
	if err := Write(dir, "state.json", []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "victim" {
		t.Errorf("the victim holds %q", b)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "state.json"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Mode&0o7777 != 0o600 {
		t.Errorf("state.json: mode %#o (%v), want a regular file 0600", st.Mode, err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			t.Errorf("a temporary file is left: %s", e.Name())
		}
	}
	if err := Write(dir, "../x", nil, 0o600); err == nil {
		t.Error("Write of ../x succeeded")
	}
}

func TestOpenLockRefusesALink(t *testing.T) {
	dir, victims := t.TempDir(), t.TempDir()
	os.Symlink(filepath.Join(victims, "made"), filepath.Join(dir, "c.lock"))
	if f, err := OpenLock(dir, "c.lock", 0o600); err == nil {
		f.Close()
		t.Error("OpenLock through a dangling symlink succeeded")
	}
	if _, err := os.Stat(filepath.Join(victims, "made")); err == nil {
		t.Error("OpenLock made the file a symlink named")
	}
	f, err := OpenLock(dir, "d.lock", 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if st, err := os.Lstat(filepath.Join(dir, "d.lock")); err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o600 {
		t.Errorf("d.lock: %v (%v), want a regular file 0600", st.Mode(), err)
	}
}

func TestPrivateDir(t *testing.T) {
	base := t.TempDir()
	loose := filepath.Join(base, "loose")
	os.Mkdir(loose, 0o755)
	if err := PrivateDir(loose); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(loose); st.Mode().Perm() != 0o700 {
		t.Errorf("an existing 0755 directory is %v after PrivateDir, want 0700", st.Mode().Perm())
	}
	link := filepath.Join(base, "link")
	os.Symlink(t.TempDir(), link)
	if err := PrivateDir(link); err == nil {
		t.Error("PrivateDir accepted a symlink")
	}
	made := filepath.Join(base, "a", "b")
	if err := PrivateDir(made); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(made); err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
		t.Errorf("a new private directory: %v (%v)", st.Mode(), err)
	}
}
