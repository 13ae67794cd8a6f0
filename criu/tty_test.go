package criu

import (
	"testing"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/tty"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

func TestPtyEndsAreToldApartByDeviceNumber(t *testing.T) {
	for _, c := range []struct {
		name          string
		mode          uint32
		maj, min      uint32
		master, slave bool
	}{
		{"/dev/ptmx is a master", unix.S_IFCHR, 5, 2, true, false},
		{"/dev/pts/0 is a slave", unix.S_IFCHR, 136, 0, false, true},
		{"/dev/pts/2047 is a slave", unix.S_IFCHR, 143, 255, false, true},
		{"/dev/tty is neither", unix.S_IFCHR, 5, 0, false, false},
		{"/dev/tty1 is neither", unix.S_IFCHR, 4, 1, false, false},
		{"a block device 136:0 is neither", unix.S_IFBLK, 136, 0, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := unix.Stat_t{Mode: c.mode | 0o620, Rdev: unix.Mkdev(c.maj, c.min)}
			m, s := ptyEnd(&st)
			if m != c.master || s != c.slave {
				t.Errorf("ptyEnd = master %v slave %v, want %v %v", m, s, c.master, c.slave)
			}
		})
	}
}

func TestTermiosSurvivesItsImageEntry(t *testing.T) {
	in := unix.Termios{Iflag: 0o2401, Oflag: 5, Cflag: 0o277, Lflag: 0o105073, Line: 1}
	for i := range in.Cc {
		in.Cc[i] = uint8(i * 3)
	}
	e := termiosEntry(&in)
	b, err := proto.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var back tty.TermiosEntry
	if err := proto.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	out, err := termiosFromEntry(&back)
	if err != nil {
		t.Fatal(err)
	}
	if *out != in {
		t.Errorf("termios %+v came back as %+v", in, *out)
	}
	back.CCc = back.CCc[:5]
	if _, err := termiosFromEntry(&back); err == nil {
		t.Error("a termios entry with 5 control characters was accepted")
	}
}

func TestTTYInfoIDsKeepCRIUsNumbering(t *testing.T) {
	if got := ttyInfoID(7, true); got != 15 {
		t.Errorf("master of pty 7: id %d, want 15", got)
	}
	if got := ttyInfoID(7, false); got != 14 {
		t.Errorf("slave of pty 7: id %d, want 14", got)
	}
}
