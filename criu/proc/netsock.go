package proc

import (
	"io"
	"strconv"
	"strings"
)

// NetSock is one row of /proc/PID/net/{tcp,udp,icmp,raw}[6]: the
// socket's addresses as the kernel prints them (each 32-bit word of the
// address as it lies in memory, in hex, so the words read back equal
// binary.LittleEndian over the address bytes on x86-64) and its ports.
type NetSock struct {
	Local, Remote         []uint32
	LocalPort, RemotePort uint32
	State                 uint8
	Inode                 uint32
}

// ParseNetSockets parses a /proc/net/{tcp,udp,icmp,raw}[6] table
// (ip4_seq_show and friends: a header line, then "sl: LOCAL:PORT
// REMOTE:PORT ST ... UID TIMEOUT INODE ..."), by inode.
func ParseNetSockets(r io.Reader, file string) (map[uint32]NetSock, error) {
	l := newLines(r, file)
	out := map[uint32]NetSock{}
	if _, ok := l.next(); !ok { // the header
		return out, l.err()
	}
	addr := func(s string) ([]uint32, uint32, bool) {
		a, p, ok := strings.Cut(s, ":")
		if !ok || len(a)%8 != 0 || len(a) == 0 || len(a) > 32 {
			return nil, 0, false
		}
		port, err := strconv.ParseUint(p, 16, 16)
		if err != nil {
			return nil, 0, false
		}
		var words []uint32
		for i := 0; i < len(a); i += 8 {
			w, err := strconv.ParseUint(a[i:i+8], 16, 32)
			if err != nil {
				return nil, 0, false
			}
			words = append(words, uint32(w))
		}
		return words, uint32(port), true
	}
	for {
		line, ok := l.next()
		if !ok {
			break
		}
		f := strings.Fields(line)
		if len(f) < 10 {
			return nil, l.errorf("%d fields, want at least 10", len(f))
		}
		var s NetSock
		var ok1, ok2 bool
		s.Local, s.LocalPort, ok1 = addr(f[1])
		s.Remote, s.RemotePort, ok2 = addr(f[2])
		st, err := strconv.ParseUint(f[3], 16, 8)
		ino, err2 := strconv.ParseUint(f[9], 10, 32)
		if !ok1 || !ok2 || err != nil || err2 != nil {
			return nil, l.errorf("malformed socket row %q", line)
		}
		s.State, s.Inode = uint8(st), uint32(ino)
		out[s.Inode] = s
	}
	return out, l.err()
}

// NetSockets reads /proc/PID/net/NAME (the table of task pid's network
// namespace), by inode.
func NetSockets(pid int, name string) (map[uint32]NetSock, error) {
	path := pidFile(pid, "net/"+name)
	t, err := readText(path, false)
	if err != nil {
		return nil, err
	}
	return ParseNetSockets(t, path)
}
