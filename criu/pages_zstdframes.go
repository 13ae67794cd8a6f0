package criu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/zstd"

	"github.com/ctcr/ctcr/criu/images"
)

// zstdFrames reads a compressed pages image frame by frame (RFC 8878),
// for fillPagesZstd. Memory that does not compress (random data,
// compressed or encrypted content) is stored by the encoder in raw
// blocks, which hold the pages as they are: such a frame is read from the
// file straight into the caller's buffer, one copy, as a raw image is,
// where a decoder would copy each byte twice more (into its window, then
// out of it), and its content checksum (XXH64) is computed as it is
// read, while the bytes are still in the CPU's cache. The manifest's
// CRC32C of the file was checked before the restore began, but it
// agrees with bytes that a faulty writer damaged before it summed them.
// A frame with a compressed block is read whole and decompressed with
// DecodeAll, which checks its checksum too.
type zstdFrames struct {
	f    *os.File
	path string
	off  int64 // in the file, of what comes next
	size int64 // of the file

	// The frame being read: raw or RLE blocks left (spans), or what
	// DecodeAll gave that is not read yet (out).
	spans []zstdSpan
	out   []byte
	// The raw frame's checksum, if it has one, and the XXH64 of its
	// content read so far.
	sum     *xxhash.Digest
	wantSum uint32
	sumOff  int64 // of the checksum, for messages

	dec      *zstd.Decoder // made on the first compressed frame
	digest   *xxhash.Digest
	frameBuf []byte // a compressed frame, read whole
	outBuf   []byte // what DecodeAll makes of it
}

// zstdSpan is a raw block's content, n bytes at off in the file, or an
// RLE block's: n times the byte rle.
type zstdSpan struct {
	off int64
	n   int
	rle bool
	b   byte
}

const (
	zstdMagic        = 0xFD2FB528
	zstdMaxBlock     = 128 << 10 // Block_Maximum_Size
	zstdMaxFrameSize = 16 << 20  // of a frame's content: ctcr writes 1 MiB
)

func newZstdFrames(f *os.File, path string) (*zstdFrames, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return &zstdFrames{f: f, path: path, size: st.Size()}, nil
}

func (z *zstdFrames) corrupt(format string, args ...any) error {
	return fmt.Errorf("%s at offset %d: %s: %w", z.path, z.off, fmt.Sprintf(format, args...), images.ErrCorrupt)
}

// Read fills p with the pages that come next, across frames.
func (z *zstdFrames) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		switch {
		case len(z.out) > 0:
			k := copy(p[n:], z.out)
			z.out = z.out[k:]
			n += k
		case len(z.spans) > 0:
			s := &z.spans[0]
			k := min(s.n, len(p)-n)
			if s.rle {
				for i := range p[n : n+k] {
					p[n+i] = s.b
				}
			} else if _, err := z.f.ReadAt(p[n:n+k], s.off); err != nil {
				if errors.Is(err, io.EOF) {
					return n, fmt.Errorf("%s: a block ends past the end of the file: %w", z.path, images.ErrCorrupt)
				}
				return n, err
			}
			if z.sum != nil {
				z.sum.Write(p[n : n+k])
			}
			s.off += int64(k)
			s.n -= k
			n += k
			if s.n == 0 {
				z.spans = z.spans[1:]
				if len(z.spans) == 0 && z.sum != nil {
					if got := uint32(z.sum.Sum64()); got != z.wantSum {
						return n, fmt.Errorf("%s at offset %d: the checksum of a frame is %08x, its content's %08x: %w", z.path, z.sumOff, z.wantSum, got, images.ErrCorrupt)
					}
				}
			}
		case z.off >= z.size:
			if n > 0 {
				return n, nil
			}
			return 0, io.EOF
		default:
			if err := z.nextFrame(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// nextFrame reads the frame at z.off: its blocks' places if they are all
// raw or RLE, else its content, decompressed.
func (z *zstdFrames) nextFrame() error {
	start := z.off
	var hdr [18]byte // the largest frame header: 4 + 1 + 1 + 4 + 8
	k, err := z.f.ReadAt(hdr[:], start)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if k < 6 {
		return z.corrupt("a frame header cut short")
	}
	magic := binary.LittleEndian.Uint32(hdr[:])
	if magic&^0xf == 0x184D2A50 { // a skippable frame
		z.off += 8 + int64(binary.LittleEndian.Uint32(hdr[4:]))
		return nil
	}
	if magic != zstdMagic {
		return z.corrupt("not a zstd frame (magic %#x)", magic)
	}
	fhd := hdr[4]
	checksum := fhd&0x04 != 0
	if fhd&0x08 != 0 {
		return z.corrupt("a reserved bit of the frame header is set")
	}
	hlen, fcsLen := zstdHeaderLen(fhd)
	if k < hlen {
		return z.corrupt("a frame header cut short")
	}
	if fhd&3 != 0 {
		return z.corrupt("a frame that needs a dictionary")
	}
	pos := start + int64(hlen)
	var spans []zstdSpan
	compressed := false
	var content int64
	for {
		var bh [3]byte
		if _, err := z.f.ReadAt(bh[:], pos); err != nil {
			if errors.Is(err, io.EOF) {
				return z.corrupt("a block header past the end of the file")
			}
			return err
		}
		h := uint32(bh[0]) | uint32(bh[1])<<8 | uint32(bh[2])<<16
		last, typ, size := h&1 != 0, (h>>1)&3, int(h>>3)
		if size > zstdMaxBlock {
			return z.corrupt("a block of %d bytes, more than %d", size, zstdMaxBlock)
		}
		pos += 3
		switch typ {
		case 0: // raw
			spans = append(spans, zstdSpan{off: pos, n: size})
			pos += int64(size)
		case 1: // RLE: one byte, repeated size times
			var b [1]byte
			if _, err := z.f.ReadAt(b[:], pos); errors.Is(err, io.EOF) {
				return z.corrupt("an RLE block past the end of the file")
			} else if err != nil {
				return err
			}
			spans = append(spans, zstdSpan{n: size, rle: true, b: b[0]})
			pos++
		case 2:
			compressed = true
			pos += int64(size)
		default:
			return z.corrupt("a block of reserved type 3")
		}
		if typ != 2 {
			content += int64(size)
		}
		if content > zstdMaxFrameSize {
			return z.corrupt("a frame of more than %d bytes", zstdMaxFrameSize)
		}
		if last {
			break
		}
	}
	sumOff := pos
	if checksum {
		pos += 4
	}
	if pos > z.size {
		return z.corrupt("a frame that ends past the end of the file")
	}
	z.off = pos
	if !compressed {
		if fcsLen > 0 {
			var fcs uint64 // little-endian, fcsLen bytes
			for i := fcsLen - 1; i >= 0; i-- {
				fcs = fcs<<8 | uint64(hdr[hlen-fcsLen+i])
			}
			if fhd>>6 == 1 {
				fcs += 256 // a 2-byte size is stored less 256
			}
			if int64(fcs) != content {
				return z.corrupt("a frame of %d bytes whose header says %d", content, fcs)
			}
		}
		z.spans, z.sum = spans, nil
		if checksum && len(spans) > 0 {
			var c [4]byte
			if _, err := z.f.ReadAt(c[:], sumOff); err != nil {
				return err
			}
			if z.digest == nil {
				z.digest = xxhash.New()
			}
			z.digest.Reset()
			z.sum, z.wantSum, z.sumOff = z.digest, binary.LittleEndian.Uint32(c[:]), sumOff
		}
		return nil
	}
	// A compressed frame: read it whole and decompress it.
	if pos-start > zstdMaxFrameSize {
		return z.corrupt("a compressed frame of %d bytes", pos-start)
	}
	if z.dec == nil {
		if z.dec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(8<<20), zstd.WithDecoderMaxMemory(zstdMaxFrameSize)); err != nil {
			return err
		}
	}
	z.frameBuf = append(z.frameBuf[:0], make([]byte, pos-start)...)
	if _, err := z.f.ReadAt(z.frameBuf, start); err != nil {
		return err
	}
	if z.outBuf, err = z.dec.DecodeAll(z.frameBuf, z.outBuf[:0]); err != nil {
		z.off = start
		return z.corrupt("%v", err)
	}
	z.out = z.outBuf
	return nil
}

// zstdHeaderLen returns the length of a frame header (its magic
// included) whose descriptor byte is fhd, and that of its content size
// field (RFC 8878, 3.1.1.1).
func zstdHeaderLen(fhd byte) (hlen, fcsLen int) {
	single := fhd&0x20 != 0
	hlen = 5
	if !single {
		hlen++ // window descriptor
	}
	hlen += []int{0, 1, 2, 4}[fhd&3] // dictionary ID
	fcsLen = []int{0, 2, 4, 8}[fhd>>6]
	if fhd>>6 == 0 && single {
		fcsLen = 1
	}
	return hlen + fcsLen, fcsLen
}

func (z *zstdFrames) close() {
	if z.dec != nil {
		z.dec.Close()
	}
}
