package criu

import "testing"

// The fdinfo lines below are copied from /proc/PID/fdinfo on kernel 6.18.

func TestParseEpollTarget(t *testing.T) {
	got, err := parseEpollTarget("tfd:        5 events:       19 data:     deadbeefcafe  pos:0 ino:61af sdev:f")
	if err != nil {
		t.Fatal(err)
	}
	want := epollTarget{tfd: 5, events: 0x19, data: 0xdeadbeefcafe, pos: 0, ino: 0x61af, sdev: 0xf}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := parseEpollTarget("tfd: x events: 1 data: 2"); err == nil {
		t.Error("a line with a bad fd number parsed")
	}
}

func TestParseInotifyWatch(t *testing.T) {
	w, err := parseInotifyWatch("inotify wd:2 ino:98a3c9 sdev:fe00000 mask:108 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:c9a3980012345678")
	if err != nil {
		t.Fatal(err)
	}
	if w.wd != 2 || w.ino != 0x98a3c9 || w.sdev != 0xfe00000 || w.mask != 0x108 || w.handleType != 1 || len(w.handle) != 8 || w.handle[0] != 0xc9 {
		t.Errorf("parsed %+v", w)
	}
	if got := kernelDev(w.sdev); got != 0xfe00 {
		t.Errorf("kernel dev %#x is user dev %#x, want 0xfe00 (254:0)", w.sdev, got)
	}
	if _, err := parseInotifyWatch("inotify wd:2 ino:1 sdev:1 mask:1 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:c9"); err == nil {
		t.Error("a handle shorter than fhandle-bytes parsed")
	}
}

func TestParseLockLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		want fileLock
	}{
		{"lock:\t1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF", fileLock{kind: "FLOCK", mode: "ADVISORY", write: true, pid: 1234, start: 0, end: -1}},
		{"lock:\t1: POSIX  ADVISORY  WRITE 99 fe:00:5678 10 19", fileLock{kind: "POSIX", mode: "ADVISORY", write: true, pid: 99, start: 10, end: 19}},
		{"lock:\t1: LEASE  ACTIVE    READ 2927 fe:00:9986242 0 EOF", fileLock{kind: "LEASE", mode: "ACTIVE", pid: 2927, start: 0, end: -1}},
		{"lock:\t1: OFDLCK ADVISORY  READ  -1 fe:00:5678 0 EOF", fileLock{kind: "OFDLCK", mode: "ADVISORY", pid: -1, start: 0, end: -1}},
	} {
		got, err := parseLockLine(tc.line)
		if err != nil || got != tc.want {
			t.Errorf("parseLockLine(%q) = %+v, %v; want %+v", tc.line, got, err, tc.want)
		}
	}
	if _, err := parseLockLine("lock:\t1: POSIX  ADVISORY  WRITE 99 fe:00:5678 19 10"); err == nil {
		t.Error("a lock ending before it starts parsed")
	}
}

func TestParseTimespecPair(t *testing.T) {
	s, ns, err := parseTimespecPair(" (3599, 999953211)")
	if err != nil || s != 3599 || ns != 999953211 {
		t.Errorf("got %d, %d, %v", s, ns, err)
	}
	if _, _, err := parseTimespecPair("3599, 1"); err == nil {
		t.Error("a value without parentheses parsed")
	}
}

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/mnt/a\040b`); got != "/mnt/a b" {
		t.Errorf("got %q", got)
	}
}
