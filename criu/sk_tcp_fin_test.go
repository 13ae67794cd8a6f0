package criu

import "testing"

// TestInetChecksum checks the checksum of the FIN restore makes against
// RFC 1071's worked example (section 3: the sum of 0001 f203 f4f5 f6f7
// is ddf2, so the checksum is its complement) and an odd length.
func TestInetChecksum(t *testing.T) {
	for _, c := range []struct {
		b    []byte
		want uint16
	}{
		{[]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, ^uint16(0xddf2)},
		{[]byte{0x00, 0x01, 0xf2}, ^uint16(0xf201)},
		{[]byte{0xff, 0xff, 0x00, 0x01}, ^uint16(0x0001)},
	} {
		if got := inetChecksum(c.b); got != c.want {
			t.Errorf("inetChecksum(% x) = %#04x, want %#04x", c.b, got, c.want)
		}
	}
}
