package images

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v7/crit"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v7/magic"
	"google.golang.org/protobuf/proto"
)

func writeSample(t *testing.T, dir string, s sample) string {
	t.Helper()
	path := filepath.Join(dir, s.file)
	if err := WriteFile(path, s.kind, s.msgs...); err != nil {
		t.Fatalf("WriteFile %s: %v", s.file, err)
	}
	return path
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	for _, s := range samples() {
		t.Run(s.file, func(t *testing.T) {
			path := writeSample(t, dir, s)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			r, err := NewReader(f, s.kind, path)
			if err != nil {
				t.Fatalf("NewReader: %v", err)
			}
			for i, want := range s.msgs {
				got := s.newMsg(i)
				if err := r.Next(got); err != nil {
					t.Fatalf("entry %d: %v", i, err)
				}
				if !proto.Equal(got, want) {
					t.Errorf("entry %d:\n got %v\nwant %v", i, got, want)
				}
			}
			if err := r.Next(s.newMsg(len(s.msgs))); err != io.EOF {
				t.Errorf("after the last entry: got %v, want io.EOF", err)
			}
		})
	}
}

func TestReadAllAndReadOne(t *testing.T) {
	dir := t.TempDir()
	for _, s := range samples() {
		path := writeSample(t, dir, s)
		if s.kind == Pagemap {
			head, entries, err := ReadPagemap(path)
			if err != nil {
				t.Fatalf("ReadPagemap: %v", err)
			}
			if !proto.Equal(head, s.msgs[0]) || len(entries) != len(s.msgs)-1 {
				t.Errorf("ReadPagemap: head %v, %d entries", head, len(entries))
			}
			continue
		}
		all, err := ReadAll(path, s.kind, func() proto.Message { return s.newMsg(0) })
		if err != nil {
			t.Fatalf("ReadAll %s: %v", s.file, err)
		}
		if len(all) != len(s.msgs) {
			t.Fatalf("ReadAll %s: %d entries, want %d", s.file, len(all), len(s.msgs))
		}
		for i := range all {
			if !proto.Equal(all[i], s.msgs[i]) {
				t.Errorf("ReadAll %s entry %d differs", s.file, i)
			}
		}
		m := s.newMsg(0)
		err = ReadOne(path, s.kind, m)
		switch {
		case len(s.msgs) == 1 && err != nil:
			t.Errorf("ReadOne %s: %v", s.file, err)
		case len(s.msgs) == 1 && !proto.Equal(m, s.msgs[0]):
			t.Errorf("ReadOne %s: got %v", s.file, m)
		case len(s.msgs) > 1 && !errors.Is(err, ErrCorrupt):
			t.Errorf("ReadOne %s with %d entries: got %v, want ErrCorrupt", s.file, len(s.msgs), err)
		}
	}
}

// TestHeaders pins the first bytes of each kind of image to what CRIU's
// image.c writes: inventory alone has no head magic.
func TestHeaders(t *testing.T) {
	for _, tc := range []struct {
		kind Kind
		want []uint32
	}{
		{Inventory, []uint32{0x58313116}},
		{Core, []uint32{0x54564319, 0x55053847}},
		{Pagemap, []uint32{0x54564319, 0x56084025}},
		{IrmapCache, []uint32{0x55105940, 0x57004059}},
	} {
		var b bytes.Buffer
		if _, err := NewWriter(&b, tc.kind); err != nil {
			t.Fatal(err)
		}
		var want []byte
		for _, w := range tc.want {
			want = binary.LittleEndian.AppendUint32(want, w)
		}
		if !bytes.Equal(b.Bytes(), want) {
			t.Errorf("%s header % x, want % x", tc.kind.Name, b.Bytes(), want)
		}
	}
	if _, err := NewWriter(io.Discard, Pages); err == nil {
		t.Error("NewWriter(Pages) succeeded; pages images are raw")
	}
}

// TestMagicsMatchGoCriu checks every Kind's magic against go-criu's table,
// which is generated from CRIU's magic.h.
func TestMagicsMatchGoCriu(t *testing.T) {
	mm := magic.LoadMagic()
	if uint64(MagicCommon) != mm.ByName["IMG_COMMON"] || uint64(MagicService) != mm.ByName["IMG_SERVICE"] {
		t.Errorf("head magics differ from go-criu")
	}
	seen := map[string]bool{}
	for _, k := range AllKinds {
		if seen[k.File] {
			t.Errorf("file pattern %s used twice", k.File)
		}
		seen[k.File] = true
		if k.Prefix == PrefixRaw {
			continue
		}
		want, ok := mm.ByName[k.Name]
		if !ok {
			t.Errorf("%s: go-criu has no such magic", k.Name)
			continue
		}
		if uint64(k.Magic) != want {
			t.Errorf("%s: magic %#x, go-criu says %#x", k.Name, k.Magic, want)
		}
	}
}

func TestFileName(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{Inventory.FileName(), "inventory.img"},
		{Core.FileName(42), "core-42.img"},
		{Pagemap.FileName(42), "pagemap-42.img"},
		{Pages.FileName(3), "pages-3.img"},
		{Fdinfo.FileName(2), "fdinfo-2.img"},
		{Mnts.FileName(9), "mountpoints-9.img"},
		{GhostFile.FileName(255), "ghost-file-ff.img"},
		{Files.FileName(), "files.img"},
		{IpcShm.FileName(5), "ipcns-shm-5.img"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("Core.FileName() without a pid did not panic")
		}
	}()
	Core.FileName()
}

// TestGoCritDecodes reads every sample back with go-criu's own decoder.
func TestGoCritDecodes(t *testing.T) {
	dir := t.TempDir()
	for _, s := range samples() {
		t.Run(s.file, func(t *testing.T) {
			path := writeSample(t, dir, s)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			img, err := crit.New(f, nil, "", false, false).Decode(s.goCritT)
			if err != nil {
				t.Fatalf("go-criu Decode: %v", err)
			}
			if img.Magic != s.kind.Name {
				t.Errorf("go-criu magic %q, want %q", img.Magic, s.kind.Name)
			}
			if len(img.Entries) != len(s.msgs) {
				t.Fatalf("go-criu read %d entries, want %d", len(img.Entries), len(s.msgs))
			}
			for i, e := range img.Entries {
				if !proto.Equal(e.Message, s.msgs[i]) {
					t.Errorf("entry %d: go-criu read %v, want %v", i, e.Message, s.msgs[i])
				}
			}
		})
	}
}

// critPath finds CRIU's Python crit (Debian package criu) or skips.
func critPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("crit")
	if err != nil {
		t.Skipf("skipping: CRIU's Python crit is not installed (%v); apt-get install criu", err)
	}
	return p
}

// TestPythonCritDecodes runs CRIU's own `crit decode` on every sample.
func TestPythonCritDecodes(t *testing.T) {
	critBin := critPath(t)
	dir := t.TempDir()
	for _, s := range samples() {
		t.Run(s.file, func(t *testing.T) {
			path := writeSample(t, dir, s)
			out, err := exec.Command(critBin, "decode", "-i", path, "--pretty").CombinedOutput()
			if err != nil {
				t.Fatalf("crit decode: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), `"magic": "`+s.kind.Name+`"`) {
				t.Errorf("crit output lacks magic %s:\n%s", s.kind.Name, out)
			}
			if !strings.Contains(string(out), s.crit) {
				t.Errorf("crit output lacks %s:\n%s", s.crit, out)
			}
		})
	}
}

// TestPagesAreRaw checks that pages-N.img is just page bytes: crit has no
// decoder for it and does not need one, and this package refuses to frame
// it.
func TestPagesAreRaw(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, Pages.FileName(1))
	page := bytes.Repeat([]byte{0xa5}, 3*PageSize)
	if err := os.WriteFile(path, page, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewReader(bytes.NewReader(page), Pages, path); err == nil {
		t.Error("NewReader(Pages) succeeded; pages images are raw")
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := crit.ReadMagic(f); err == nil {
		t.Error("go-criu found a magic in raw page data")
	}
	critBin := critPath(t)
	out, err := exec.Command(critBin, "decode", "-i", path).CombinedOutput()
	if err == nil {
		t.Errorf("crit decoded raw pages as an image:\n%s", out)
	}
	if !strings.Contains(string(out), "Unknown magic") {
		t.Errorf("crit failed on raw pages for another reason than the magic:\n%s", out)
	}
}

// TestPythonCritExplores writes a one-process checkpoint and runs crit's
// explorers over the whole directory: they join pstree, core, mm, files and
// pagemap, so this checks that the images agree with each other as CRIU's
// tools expect, not only that each one parses.
func TestPythonCritExplores(t *testing.T) {
	critBin := critPath(t)
	dir := t.TempDir()
	for _, s := range samples() {
		if s.kind == Pstree {
			s.msgs = s.msgs[:1]
		}
		writeSample(t, dir, s)
	}
	if err := os.WriteFile(filepath.Join(dir, Pages.FileName(1)), make([]byte, 3*PageSize), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ what, want string }{
		{"ps", "ctcr-sample"},
		{"mems", "/usr/bin/ctcr-sample"},
		{"rss", "7f1234500000"},
	} {
		out, err := exec.Command(critBin, "x", dir, tc.what).CombinedOutput()
		if err != nil {
			t.Errorf("crit x %s: %v\n%s", tc.what, err, out)
			continue
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("crit x %s lacks %q:\n%s", tc.what, tc.want, out)
		}
	}
}

// image assembles image bytes from words and raw pieces for corruption
// tests.
func image(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch v := p.(type) {
		case uint32:
			b = binary.LittleEndian.AppendUint32(b, v)
		case []byte:
			b = append(b, v...)
		case string:
			b = append(b, v...)
		}
	}
	return b
}

func validCoreEntry(t testing.TB) []byte {
	b, err := proto.Marshal(samples()[2].msgs[0])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCorruptImages(t *testing.T) {
	core := validCoreEntry(t)
	n := uint32(len(core))
	for _, tc := range []struct {
		name string
		kind Kind
		data []byte
		want string // in the error text
	}{
		{"an empty file has no header", Core, nil, "truncated header"},
		{"a header cut after the head magic", Core, image(MagicCommon), "truncated header"},
		{"a wrong head magic", Core, image(uint32(0x11111111), Core.Magic), "head magic"},
		{"a service head on a common image", Core, image(MagicService, Core.Magic), "head magic"},
		{"the magic of another image", Core, image(MagicCommon, Mm.Magic), "magic 0x57492820"},
		{"an inventory written with a head magic", Inventory, image(MagicCommon, Inventory.Magic), "magic 0x54564319"},
		{"an entry length cut after two bytes", Core, image(MagicCommon, Core.Magic, "\x10\x00"), "truncated entry length"},
		{"an entry body shorter than its length", Core, image(MagicCommon, Core.Magic, n, core[:len(core)-1]), "bytes left"},
		{"a length over MaxEntrySize", Core, image(MagicCommon, Core.Magic, uint32(0xffffffff), "abc"), "over the"},
		{"a length past the end of the file", Core, image(MagicCommon, Core.Magic, uint32(1<<20), core), "bytes left"},
		{"garbage instead of protobuf", Core, image(MagicCommon, Core.Magic, uint32(3), "\xff\xff\xff"), "bad CORE entry"},
		{"an entry missing required fields", Core, image(MagicCommon, Core.Magic, uint32(0)), "bad CORE entry"},
		{"a second entry cut short", Core, image(MagicCommon, Core.Magic, n, core, n, core[:5]), "offset"},
		{"a pagemap entry before the previous one ends", Pagemap, pagemapImage(t, 0x2000, 2, 0x3000, 1), "overlaps"},
		{"a pagemap entry off a page boundary", Pagemap, pagemapImage(t, 0x2001, 1), "not page aligned"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), tc.kind.FileName(fileIDs(tc.kind)...))
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			var err error
			switch tc.kind {
			case Pagemap:
				_, _, err = ReadPagemap(path)
			case Core:
				_, err = ReadAll(path, tc.kind, func() *criu_core.CoreEntry { return &criu_core.CoreEntry{} })
			default:
				_, err = ReadAll(path, tc.kind, func() proto.Message { return &criu_core.CoreEntry{} })
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want an error wrapping ErrCorrupt", err)
			}
			if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, "offset") || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q should name %s, an offset and %q", msg, path, tc.want)
			}
		})
	}
}

func fileIDs(k Kind) []int {
	return make([]int, strings.Count(k.File, "%"))
}

func pagemapImage(t *testing.T, pairs ...uint64) []byte {
	var b bytes.Buffer
	w, err := NewWriter(&b, Pagemap)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(&pagemap.PagemapHead{PagesId: proto.Uint32(1)}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(pairs); i += 2 {
		if err := w.Write(&pagemap.PagemapEntry{Vaddr: proto.Uint64(pairs[i]), NrPages: proto.Uint32(uint32(pairs[i+1]))}); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

// unsized hides the size of a reader, as a pipe or socket would.
type unsized struct{ r io.Reader }

func (u unsized) Read(p []byte) (int, error) { return u.r.Read(p) }

// TestHugeLengthFromStream checks that a stream of unknown size claiming a
// large entry costs memory in proportion to what it holds, not to the
// claimed length.
func TestHugeLengthFromStream(t *testing.T) {
	data := image(MagicCommon, Core.Magic, uint32(MaxEntrySize), "only a few bytes")
	r, err := NewReader(unsized{bytes.NewReader(data)}, Core, "stream")
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err = r.Next(&criu_core.CoreEntry{})
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "truncated entry: 16 of 67108864 bytes") {
		t.Fatalf("got %v, want a truncated entry error", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4*readChunk {
		t.Errorf("allocated %d bytes for a 16-byte entry", alloc)
	}
}

// TestLargeEntryFromStream reads an entry bigger than one read chunk from a
// stream of unknown size.
func TestLargeEntryFromStream(t *testing.T) {
	core := samples()[2].msgs[0].(*criu_core.CoreEntry)
	big := proto.Clone(core).(*criu_core.CoreEntry)
	big.Tc.Comm = proto.String(strings.Repeat("x", 3*readChunk+17))
	var b bytes.Buffer
	w, _ := NewWriter(&b, Core)
	if err := w.Write(big); err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(unsized{&b}, Core, "stream")
	if err != nil {
		t.Fatal(err)
	}
	got := &criu_core.CoreEntry{}
	if err := r.Next(got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, big) {
		t.Error("large entry changed on the way")
	}
}

func TestIOErrorIsNotCorrupt(t *testing.T) {
	boom := errors.New("disk on fire")
	r, err := NewReader(io.MultiReader(bytes.NewReader(image(MagicCommon, Core.Magic)), errReader{boom}), Core, "f")
	if err != nil {
		t.Fatal(err)
	}
	err = r.Next(&criu_core.CoreEntry{})
	if !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) {
		t.Errorf("got %v, want the I/O error and not ErrCorrupt", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
