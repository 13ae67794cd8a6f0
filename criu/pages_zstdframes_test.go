package criu

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/ctcr/ctcr/criu/images"
)

// zstdImage writes chunks as a dump does (one frame each, ctcr's
// encoder) into a file, and returns it and their concatenation.
func zstdImage(t *testing.T, chunks ...[]byte) (string, []byte) {
	t.Helper()
	enc, err := zstdEnc()
	if err != nil {
		t.Fatal(err)
	}
	var file, want []byte
	for _, c := range chunks {
		file = enc.EncodeAll(c, file)
		want = append(want, c...)
	}
	path := filepath.Join(t.TempDir(), "pages-1.img.zst")
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, want
}

// readFrames reads the image at path through zstdFrames, bufSize bytes
// a call, as fillPagesZstd does with its buffer.
func readFrames(t *testing.T, path string, bufSize int) ([]byte, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := newZstdFrames(f, path)
	if err != nil {
		t.Fatal(err)
	}
	defer z.close()
	var got []byte
	buf := make([]byte, bufSize)
	for {
		n, err := io.ReadFull(z, buf)
		got = append(got, buf[:n]...)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return got, nil
		}
		if err != nil {
			return got, err
		}
	}
}

func TestZstdFrames(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	text := bytes.Repeat([]byte("a page of memory that compresses well; "), 1<<20/40)
	mixed := append(random(512<<10), make([]byte, 512<<10)...)
	path, want := zstdImage(t, random(1<<20), text, make([]byte, 1<<20), mixed, random(4096), random(1<<20))
	enc, err := zstdEnc()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(enc.EncodeAll(random(1<<20), nil)); n <= 1<<20 {
		t.Fatalf("the encoder made %d bytes of 1 MiB of random bytes: the test no longer covers raw frames", n)
	}
	for _, size := range []int{4 << 20, 1 << 20, 4096, 1000} {
		got, err := readFrames(t, path, size)
		if err != nil {
			t.Fatalf("reading by %d bytes: %v", size, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("reading by %d bytes: %d bytes, want %d, first difference at %d", size, len(got), len(want), firstDiff(got, want))
		}
	}
	// Any zstd tool reads the same pages.
	f, _ := os.ReadFile(path)
	dec, err := zstd.NewReader(bytes.NewReader(f))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	stream, err := io.ReadAll(dec)
	if err != nil || !bytes.Equal(stream, want) {
		t.Fatalf("the streaming decoder read %d bytes (%v), want the %d read by frames", len(stream), err, len(want))
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestZstdFramesRefusesDamage damages a raw frame and a compressed one:
// each read fails with images.ErrCorrupt naming the file, never with
// wrong pages or a panic.
func TestZstdFramesRefusesDamage(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	random := make([]byte, 256<<10)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	text := bytes.Repeat([]byte("compressible "), 20000)
	path, _ := zstdImage(t, random, text)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := zstdEnc()
	first := len(enc.EncodeAll(random, nil))
	tests := []struct {
		name   string
		damage func([]byte) []byte
	}{
		{"cut inside a raw block", func(b []byte) []byte { return b[:first/2] }},
		{"cut inside a compressed frame", func(b []byte) []byte { return b[:first+20] }},
		{"cut inside the second frame's header", func(b []byte) []byte { return b[:first+3] }},
		{"a bad magic", func(b []byte) []byte { b[first] ^= 0xff; return b }},
		{"a block of the reserved type", func(b []byte) []byte {
			h, _ := zstdHeaderLen(b[4])
			b[h] |= 3 << 1
			return b
		}},
		{"a raw block larger than the largest", func(b []byte) []byte {
			h, _ := zstdHeaderLen(b[4])
			v := uint32(b[h]) | uint32(b[h+1])<<8 | uint32(b[h+2])<<16
			v |= (zstdMaxBlock + 8) << 3
			b[h], b[h+1], b[h+2] = byte(v), byte(v>>8), byte(v>>16)
			return b
		}},
		{"a flipped byte in a raw block", func(b []byte) []byte { b[first/2] ^= 0x55; return b }},
		{"a flipped byte in a raw frame's checksum", func(b []byte) []byte { b[first-1] ^= 0x55; return b }},
		{"a flipped byte in a compressed block", func(b []byte) []byte { b[first+30] ^= 0x55; return b }},
		{"a reserved bit in the frame header", func(b []byte) []byte { b[4] |= 0x08; return b }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "pages-1.img.zst")
			if err := os.WriteFile(p, tt.damage(bytes.Clone(good)), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := readFrames(t, p, 1<<20)
			if !errors.Is(err, images.ErrCorrupt) || !bytes.Contains([]byte(err.Error()), []byte(p)) {
				t.Fatalf("error %v, want one naming %s and wrapping ErrCorrupt", err, p)
			}
		})
	}
}

// FuzzZstdFrames reads arbitrary bytes as a compressed pages image: an
// error or pages, never a panic or a hang.
func FuzzZstdFrames(f *testing.F) {
	enc, err := zstdEnc()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(enc.EncodeAll([]byte("pages"), nil))
	f.Add(enc.EncodeAll(bytes.Repeat([]byte{7}, 5000), nil))
	f.Add(enc.EncodeAll(bytes.Repeat([]byte("abc"), 50000), nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "pages-1.img.zst")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		readFrames(t, path, 4096)
	})
}
