package proc

import (
	"os"
	"strings"
	"testing"
)

func TestParseNetSockets(t *testing.T) {
	f, err := os.Open("testdata/net_icmp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := ParseNetSockets(f, "testdata/net_icmp")
	if err != nil {
		t.Fatal(err)
	}
	s, ok := got[822001]
	// 127.0.0.1 as the kernel prints it: the address bytes 7f 00 00 01
	// read as a little-endian word.
	if !ok || len(s.Local) != 1 || s.Local[0] != 0x0100007f || s.LocalPort != 4242 || s.Remote[0] != 0x0100007f || s.RemotePort != 0 || s.State != 1 {
		t.Errorf("socket 822001: %+v (found %v)", s, ok)
	}
	// Captured: a raw ICMP socket connected to 127.0.0.1 (its "port" is
	// its protocol, 1).
	f2, err := os.Open("testdata/net_raw")
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	raw, err := ParseNetSockets(f2, "testdata/net_raw")
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := raw[1446051]; !ok || r.Local[0] != 0x0100007f || r.LocalPort != 1 || r.Remote[0] != 0x0100007f || r.State != 1 {
		t.Errorf("raw socket 1446051: %+v (found %v)", r, ok)
	}
	for _, bad := range []string{"hdr\n  1: 0100007F 0100007F:0000 01 0 0 0 0 0 0 1\n", "hdr\n  1: 0100007F:1 0100007F:0000 01 0 0 0\n", "hdr\n 1: XYZ:1 0:0 01 a b c d e f 12\n"} {
		if _, err := ParseNetSockets(strings.NewReader(bad), "bad"); err == nil {
			t.Errorf("%q parsed without an error", bad)
		}
	}
}
