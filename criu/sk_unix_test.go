package criu

import (
	"encoding/binary"
	"slices"
	"testing"
)

// diagMsg builds a unix_diag_msg with attributes, as the kernel sends it.
func diagMsg(typ, state uint8, ino uint32, attrs ...[]byte) []byte {
	b := make([]byte, sizeofUnixDiagMsg)
	b[0], b[1], b[2] = 1, typ, state
	binary.LittleEndian.PutUint32(b[4:], ino)
	for _, a := range attrs {
		b = append(b, a...)
	}
	return b
}

func nlattr(typ uint16, v []byte) []byte {
	a := make([]byte, 4, 4+len(v)+3)
	binary.LittleEndian.PutUint16(a, uint16(4+len(v)))
	binary.LittleEndian.PutUint16(a[2:], typ)
	a = append(a, v...)
	for len(a)%4 != 0 {
		a = append(a, 0)
	}
	return a
}

func u32s(vs ...uint32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

func TestParseUnixDiag(t *testing.T) {
	t.Run("a path name loses the NUL the kernel counts, and every attribute is read", func(t *testing.T) {
		d, err := parseUnixDiag(diagMsg(1, tcpListen, 42,
			nlattr(unixDiagName, []byte("/run/x.sock\x00")),
			nlattr(unixDiagVFS, u32s(7, 8)),
			nlattr(unixDiagPeer, u32s(0)),
			nlattr(unixDiagIcons, u32s(43, 44)),
			nlattr(unixDiagRQLen, u32s(2, 16)),
			nlattr(unixDiagShutdown, []byte{2}),
		))
		if err != nil {
			t.Fatal(err)
		}
		if d.ino != 42 || d.typ != 1 || d.state != tcpListen || string(d.name) != "/run/x.sock" ||
			!d.hasVFS || d.vfsIno != 7 || !slices.Equal(d.icons, []uint32{43, 44}) || d.rqueue != 2 || d.wqueue != 16 || d.shutdown != 2 {
			t.Errorf("parsed %+v", d)
		}
	})
	t.Run("an abstract name keeps its leading NUL", func(t *testing.T) {
		d, err := parseUnixDiag(diagMsg(2, tcpClose, 5, nlattr(unixDiagName, []byte("\x00abc"))))
		if err != nil {
			t.Fatal(err)
		}
		if string(d.name) != "\x00abc" {
			t.Errorf("name %q, want %q", d.name, "\x00abc")
		}
	})
	t.Run("an attribute longer than the message is an error", func(t *testing.T) {
		m := diagMsg(1, tcpClose, 5, nlattr(unixDiagPeer, u32s(9)))
		binary.LittleEndian.PutUint16(m[sizeofUnixDiagMsg:], 64)
		if _, err := parseUnixDiag(m); err == nil {
			t.Error("no error")
		}
	})
	t.Run("a short message is an error", func(t *testing.T) {
		if _, err := parseUnixDiag(make([]byte, 8)); err == nil {
			t.Error("no error")
		}
	})
}

// FuzzParseUnixDiag: whatever sock_diag sends, the parser returns a
// socket or an error, never panics, and never reports more pending
// connections than the message has room for.
func FuzzParseUnixDiag(f *testing.F) {
	f.Add(diagMsg(1, tcpListen, 42, nlattr(unixDiagName, []byte("/run/x.sock\x00")), nlattr(unixDiagVFS, u32s(7, 8)),
		nlattr(unixDiagPeer, u32s(0)), nlattr(unixDiagIcons, u32s(43, 44)), nlattr(unixDiagRQLen, u32s(2, 16)), nlattr(unixDiagShutdown, []byte{2})))
	f.Add(diagMsg(2, tcpClose, 5, nlattr(unixDiagName, []byte("\x00abc"))))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := parseUnixDiag(b)
		if err != nil {
			return
		}
		if len(d.icons)*4 > len(b) || len(d.name) > len(b) {
			t.Errorf("parsed %d icons and a %d-byte name from %d bytes", len(d.icons), len(d.name), len(b))
		}
	})
}
