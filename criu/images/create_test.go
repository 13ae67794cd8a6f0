package images

import (
	"os"
	"path/filepath"
	"testing"
)

// TestReplaceFileReplacesASymlinkWithoutFollowingIt: an image written
// again (ReplaceFile) takes the place of whatever is at its name, the
// image written first or a symlink, and never writes through the link.
func TestReplaceFileReplacesASymlinkWithoutFollowingIt(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "precious")
	if err := os.WriteFile(target, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, Inventory.FileName())
	if err := WriteFile(path, Inventory); err != nil {
		t.Fatal(err)
	}
	if err := ReplaceFile(path, Inventory); err != nil {
		t.Fatalf("writing an image again over the first: %v", err)
	}
	os.Remove(path)
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	if err := ReplaceFile(path, Inventory); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(target); err != nil || string(b) != "precious" {
		t.Errorf("the symlink's target holds %q (%v), want it untouched", b, err)
	}
	if fi, err := os.Lstat(path); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("%s is not the new image (%v, %v)", path, fi, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("left in the directory: %v, want the image and the target", ents)
	}
}
