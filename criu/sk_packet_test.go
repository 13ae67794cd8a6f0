package criu

import (
	"encoding/binary"
	"testing"
)

// FuzzParsePacketDiag: whatever packet sock_diag sends, the parser
// returns a socket or an error, never panics.
func FuzzParsePacketDiag(f *testing.F) {
	msg := make([]byte, 16)
	msg[1], msg[2] = 2, 8 // SOCK_DGRAM, ETH_P_IP
	binary.LittleEndian.PutUint32(msg[4:], 42)
	info := nlattr(0, make([]byte, 24))
	mc := nlattr(1, make([]byte, 44))
	f.Add(append(append(append([]byte(nil), msg...), info...), mc...))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		if ino, d, err := parsePacketDiag(b); err == nil && (d == nil || (ino == 0 && len(b) < 8)) {
			t.Errorf("parsed %v from %d bytes", d, len(b))
		}
	})
}
