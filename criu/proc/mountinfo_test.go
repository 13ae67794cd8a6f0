package proc

import (
	"os"
	"strings"
	"testing"
)

const sampleMountinfo = `65 43 254:0 /tmp/ct1/rootfs / rw,relatime - ext4 /dev/vda rw,discard
66 65 0:40 / /proc rw,relatime - proc proc rw
67 65 0:41 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
68 67 0:42 / /dev/pts rw,nosuid,noexec,relatime - devpts devpts rw,gid=5,mode=620,ptmxmode=666
49 66 0:41 /null /proc/keys rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
90 65 254:0 /data\040dir /mnt/with\040space rw shared:5 master:2 - ext4 /dev/vda rw
`

func TestParseMountinfo(t *testing.T) {
	ms, err := ParseMountinfo(strings.NewReader(sampleMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 6 {
		t.Fatalf("got %d mounts, want 6", len(ms))
	}
	t.Run("a bind of a sub-directory keeps its root", func(t *testing.T) {
		m := ms[0]
		if m.Root != "/tmp/ct1/rootfs" || m.MountPoint != "/" || m.FSType != "ext4" || m.Major != 254 {
			t.Errorf("root mount parsed as %+v", m)
		}
	})
	t.Run("escaped spaces and optional fields are decoded", func(t *testing.T) {
		m := ms[5]
		if m.Root != "/data dir" || m.MountPoint != "/mnt/with space" || len(m.Optional) != 2 || m.Source != "/dev/vda" {
			t.Errorf("parsed as %+v", m)
		}
	})
	t.Run("super options are kept", func(t *testing.T) {
		if ms[3].SuperOptions != "rw,gid=5,mode=620,ptmxmode=666" {
			t.Errorf("super options %q", ms[3].SuperOptions)
		}
	})
}

func TestReadMountinfoOfSelf(t *testing.T) {
	ms, err := ReadMountinfo(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range ms {
		if m.MountPoint == "/" {
			found = true
		}
	}
	if !found {
		t.Errorf("no mount at / in %d mounts", len(ms))
	}
}

func FuzzParseMountinfo(f *testing.F) {
	f.Add(sampleMountinfo)
	f.Add("1 2 3:4 / / rw - x y z\n")
	f.Fuzz(func(t *testing.T, s string) {
		ParseMountinfo(strings.NewReader(s))
	})
}
