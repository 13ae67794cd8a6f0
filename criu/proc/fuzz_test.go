package proc

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// seed adds every captured file whose name starts with prefix.
func seed(f *testing.F, prefix string) {
	files, err := filepath.Glob(filepath.Join("testdata", prefix+"*"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seed files %s*: %v", prefix, err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

func FuzzParseMaps(f *testing.F) {
	seed(f, "maps-")
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, err := ParseMaps(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, m := range ms {
			if m.Start >= m.End {
				t.Errorf("accepted empty or inverted mapping %+v", m)
			}
		}
	})
}

func FuzzParseStatus(f *testing.F) {
	seed(f, "status-")
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseStatus(bytes.NewReader(b))
	})
}

func FuzzParseStat(f *testing.F) {
	seed(f, "stat-")
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseStat(bytes.NewReader(b))
		if err == nil && len(s.Comm) > len(b) {
			t.Errorf("comm %q is longer than the input", s.Comm)
		}
	})
}

func FuzzParseFdinfo(f *testing.F) {
	seed(f, "fdinfo-")
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseFdinfo(bytes.NewReader(b))
	})
}

func FuzzParseLimits(f *testing.F) {
	seed(f, "limits-")
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseLimits(bytes.NewReader(b))
	})
}

func FuzzParseAuxv(f *testing.F) {
	seed(f, "auxv-")
	f.Fuzz(func(t *testing.T, b []byte) {
		words, err := ParseAuxv(b)
		if err != nil {
			return
		}
		if len(words)%2 != 0 || len(words)*8 > len(b) || words[len(words)-2] != 0 {
			t.Errorf("%d words from %d bytes, last pair %v", len(words), len(b), words[len(words)-2:])
		}
	})
}

func FuzzParsePersonality(f *testing.F) {
	seed(f, "personality-")
	f.Fuzz(func(t *testing.T, b []byte) {
		ParsePersonality(bytes.NewReader(b))
	})
}

func FuzzParseTimers(f *testing.F) {
	f.Add([]byte("ID: 2\nsignal: 12/0000000000000000\nnotify: signal/tid.17989\nClockID: 1\n"))
	f.Add([]byte("ID: 0\nsignal: 10/0000000000001234\nnotify: none/pid.17987\nClockID: 0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, err := ParseTimers(bytes.NewReader(b))
		for _, tm := range ts {
			if err == nil && (tm.Signo < 0 || tm.Signo > 64) {
				t.Errorf("took signal %d", tm.Signo)
			}
		}
	})
}

func FuzzParseVmFlags(f *testing.F) {
	f.Add([]byte("7f6a63406000-7f6a63407000 rw-p 00000000 00:00 0 \nSize:                  4 kB\nVmFlags: rd wr mr mw me ac wf \n"))
	f.Add([]byte("VmFlags: rd\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseVmFlags(bytes.NewReader(b))
	})
}
