package proc

import (
	"bufio"
	"errors"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// collect returns the lines of r, and the error that ended them.
func collect(t *testing.T, l *lines) ([]string, error) {
	t.Helper()
	var got []string
	for {
		s, ok := l.next()
		if !ok {
			return got, l.err()
		}
		got = append(got, s)
	}
}

func TestLines(t *testing.T) {
	long := strings.Repeat("x", maxLine)
	readErr := errors.New("read failed")
	tests := []struct {
		name    string
		r       func() *lines
		want    []string
		wantErr error
		errLine int
	}{
		{"a file read by readText is split on '\\n' only", func() *lines {
			return newLines(&text{s: "a\r\nb\n\nc"}, "f")
		}, []string{"a\r", "b", "", "c"}, nil, 0},
		{"any other reader is split the same way", func() *lines {
			return newLines(strings.NewReader("a\r\nb\n\nc\n"), "f")
		}, []string{"a\r", "b", "", "c"}, nil, 0},
		{"an empty file has no line", func() *lines { return newLines(&text{}, "f") }, nil, nil, 0},
		{"a line of maxLine bytes ends the file with an error naming it", func() *lines {
			return newLines(&text{s: "a\n" + long + "\nb\n"}, "f")
		}, []string{"a"}, bufio.ErrTooLong, 2},
		{"a line one byte shorter is taken", func() *lines {
			return newLines(&text{s: long[1:] + "\n"}, "f")
		}, []string{long[1:]}, nil, 0},
		{"a read error gives the whole lines read before it, then the error", func() *lines {
			return newLines(iotest.DataErrReader(&errAfter{s: "a\nb\npartial", err: readErr}), "f")
		}, []string{"a", "b"}, readErr, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := collect(t, tt.r())
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("lines %q, want %q", got, tt.want)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			var pe *ParseError
			if tt.wantErr != nil && (!errors.As(err, &pe) || pe.Line != tt.errLine || pe.File != "f") {
				t.Errorf("error %#v does not name line %d of f", err, tt.errLine)
			}
		})
	}
}

// errAfter reads s, then fails with err.
type errAfter struct {
	s   string
	err error
}

func (e *errAfter) Read(p []byte) (int, error) {
	if e.s == "" {
		return 0, e.err
	}
	n := copy(p, e.s)
	e.s = e.s[n:]
	return n, nil
}

func TestParseVmFlags(t *testing.T) {
	smaps := "7f6a63406000-7f6a63407000 rw-p 00000000 00:00 0 \n" +
		"Size:                  4 kB\n" +
		"VmFlags: rd wr mr mw me ac wf \n" +
		"7f6a63500000-7f6a63600000 r--s 00001000 fd:01 42                         /a file-with:colon\n" +
		"Rss:                   0 kB\n" +
		"VmFlags: rd sh mr mw me ms dc\n"
	got, err := ParseVmFlags(strings.NewReader(smaps))
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64][]string{
		0x7f6a63406000: {"rd", "wr", "mr", "mw", "me", "ac", "wf"},
		0x7f6a63500000: {"rd", "sh", "mr", "mw", "me", "ms", "dc"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	_, err = ParseVmFlags(strings.NewReader("Size: 4 kB\nVmFlags: rd\n"))
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Line != 2 || !strings.Contains(err.Error(), "VmFlags before any mapping") {
		t.Errorf("VmFlags before a mapping: error %v, want one naming line 2", err)
	}
}
