// Package images reads and writes checkpoint images in CRIU's on-disk
// format, so that CRIU's tools (crit, criu restore) and ctcr can read each
// other's checkpoints. The messages are go-criu's generated protobuf types
// (github.com/checkpoint-restore/go-criu/v7/crit/images/...); this package
// owns only the framing, the file names and the checkpoint directory.
//
// A protobuf image (every image except pages-N.img) is laid out as:
//
//	+--------------------------+  offset 0
//	| head magic     u32 LE    |  0x54564319 IMG_COMMON (most images),
//	|                          |  0x55105940 IMG_SERVICE (irmap-cache, stats);
//	|                          |  absent in inventory.img
//	+--------------------------+
//	| image magic    u32 LE    |  e.g. 0x55053847 CORE
//	+--------------------------+
//	| entry length n u32 LE    |  \
//	+--------------------------+   |
//	| protobuf message         |   | entry, repeated until end of file;
//	| n bytes                  |   | no count and no trailer
//	+--------------------------+  /
//	| ...                      |
//	+--------------------------+
//
// Some kinds put raw bytes after an entry, sized by a field of that entry
// (PIPES_DATA, FIFO_DATA, SK_QUEUES, TCP_STREAM, IPCNS_*, GHOST_FILE);
// callers read those with Reader.ReadPayload.
//
// pagemap-PID.img holds one PagemapHead entry, whose pages_id names
// pages-ID.img, then PagemapEntry items in address order. pages-ID.img is
// raw page data with no header: the pages of each PagemapEntry that is not
// a hole (in_parent, zero), one after another, 4096 bytes each.
//
//	pagemap-PID.img: [COMMON][PAGEMAP][len][head{pages_id}][len][entry]...
//	pages-ID.img:    [page][page][page]...
//
// A checkpoint directory holds one such file per image; inventory.img is
// written last (see Staging), so a directory without it is a partial dump.
// Just before it comes manifest.json, ctcr's own list of every file with
// its size and CRC32C (see manifest.go), which readers verify before they
// believe any image.
//
// Reading never trusts a length from disk: each entry is capped by
// MaxEntrySize and, when the size is known, by what is left of the file;
// every format error wraps ErrCorrupt and names the file and byte offset.
package images

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// MaxEntrySize caps one entry's length read from disk, so a corrupted
// length cannot make us allocate gigabytes. CRIU's largest entries (core
// with xsave, big mount tables) are far below it.
const MaxEntrySize = 64 << 20

// ErrCorrupt is wrapped by every format error: bad magic, truncation, bad
// length, bad protobuf. I/O errors of the underlying reader do not wrap it.
var ErrCorrupt = errors.New("corrupted image")

// FormatError describes a malformed image. It wraps ErrCorrupt and, when
// there is one, the underlying cause (io.ErrUnexpectedEOF, a protobuf
// error).
type FormatError struct {
	File   string // name given to NewReader, usually the path
	Offset int64  // byte offset in the image where the bad data starts
	What   string // what was wrong
	Err    error  // underlying cause, may be nil
}

func (e *FormatError) Error() string {
	s := fmt.Sprintf("%s: offset %d: %s", e.File, e.Offset, e.What)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s + " (" + ErrCorrupt.Error() + ")"
}

func (e *FormatError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrCorrupt}
	}
	return []error{ErrCorrupt, e.Err}
}

// Writer writes one image: the magic header, then framed entries. It does
// not buffer; wrap the destination in a bufio.Writer for many small
// entries.
type Writer struct {
	w    io.Writer // destination; immutable
	kind Kind      // immutable
	buf  []byte    // scratch for length + message, reused across Write calls
}

// NewWriter writes the magic header of kind k to w.
func NewWriter(w io.Writer, k Kind) (*Writer, error) {
	if k.Prefix == PrefixRaw {
		return nil, fmt.Errorf("images: %s is a raw image: write its bytes directly", k.File)
	}
	if _, err := w.Write(k.head()); err != nil {
		return nil, fmt.Errorf("images: writing %s header: %w", k.Name, err)
	}
	return &Writer{w: w, kind: k}, nil
}

// Write appends one entry: its length as u32 little-endian, then m
// marshalled. A message with an unset proto2 required field is an error,
// as CRIU would refuse to read it.
func (w *Writer) Write(m proto.Message) error {
	b, err := proto.MarshalOptions{Deterministic: true}.MarshalAppend(append(w.buf[:0], 0, 0, 0, 0), m)
	if err != nil {
		return fmt.Errorf("images: marshalling %s entry %T: %w", w.kind.Name, m, err)
	}
	n := len(b) - 4
	if n > MaxEntrySize {
		return fmt.Errorf("images: %s entry %T is %d bytes, over MaxEntrySize %d", w.kind.Name, m, n, MaxEntrySize)
	}
	binary.LittleEndian.PutUint32(b, uint32(n))
	w.buf = b
	if _, err := w.w.Write(b); err != nil {
		return fmt.Errorf("images: writing %s entry: %w", w.kind.Name, err)
	}
	return nil
}

// WritePayload appends raw bytes after the last entry, for the kinds whose
// entries are followed by data (pipe buffers, socket queues, ...).
func (w *Writer) WritePayload(p []byte) error {
	if _, err := w.w.Write(p); err != nil {
		return fmt.Errorf("images: writing %s payload: %w", w.kind.Name, err)
	}
	return nil
}

// Reader reads the entries of one image.
type Reader struct {
	r      io.Reader // source; immutable
	kind   Kind      // immutable
	name   string    // for errors; immutable
	off    int64     // bytes consumed from r so far
	size   int64     // total bytes r had when opened, or -1 if unknown
	lenBuf [4]byte
	buf    []byte // reused entry buffer
}

// NewReader reads and checks the magic header of kind k from r. name
// (usually the path) is used in errors. When r can tell its size (an
// *os.File, a bytes.Reader, ...) no entry may claim more than what is left.
func NewReader(r io.Reader, k Kind, name string) (*Reader, error) {
	if k.Prefix == PrefixRaw {
		return nil, fmt.Errorf("images: %s: %s is a raw image without entries", name, k.File)
	}
	rd := &Reader{r: r, kind: k, name: name, size: sizeOf(r)}
	want := k.head()
	got := make([]byte, len(want))
	if n, err := io.ReadFull(r, got); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, rd.corrupt(0, fmt.Sprintf("truncated header: %d of %d bytes", n, len(want)), nil)
		}
		return nil, rd.ioError(0, err)
	}
	rd.off = int64(len(want))
	if k.Prefix != PrefixNone {
		head := binary.LittleEndian.Uint32(got)
		if head != headMagic(k.Prefix) {
			return nil, rd.corrupt(0, fmt.Sprintf("head magic %#08x, want %#08x for %s", head, headMagic(k.Prefix), k.Name), nil)
		}
		got = got[4:]
	}
	if m := binary.LittleEndian.Uint32(got); m != k.Magic {
		return nil, rd.corrupt(rd.off-4, fmt.Sprintf("magic %#08x, want %#08x (%s)", m, k.Magic, k.Name), nil)
	}
	return rd, nil
}

func headMagic(p Prefix) uint32 {
	if p == PrefixService {
		return MagicService
	}
	return MagicCommon
}

// sizeOf returns how many bytes r has left, or -1 if r cannot tell.
func sizeOf(r io.Reader) int64 {
	switch v := r.(type) {
	case interface{ Len() int }: // bytes.Reader, strings.Reader, bytes.Buffer
		return int64(v.Len())
	case interface {
		Stat() (fs.FileInfo, error)
		io.Seeker
	}:
		fi, err := v.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			return -1
		}
		pos, err := v.Seek(0, io.SeekCurrent)
		if err != nil || pos > fi.Size() {
			return -1
		}
		return fi.Size() - pos
	}
	return -1
}

// Offset returns the number of bytes consumed so far, header included.
func (r *Reader) Offset() int64 { return r.off }

// Next reads the next entry into m (which it resets first). It returns
// io.EOF, unwrapped, at a clean end of the image: exactly after the last
// entry.
func (r *Reader) Next(m proto.Message) error {
	start := r.off
	n, err := io.ReadFull(r.r, r.lenBuf[:])
	r.off += int64(n)
	switch {
	case err == io.EOF:
		return io.EOF
	case err == io.ErrUnexpectedEOF:
		return r.corrupt(start, fmt.Sprintf("truncated entry length: %d of 4 bytes", n), err)
	case err != nil:
		return r.ioError(start, err)
	}
	size := int64(binary.LittleEndian.Uint32(r.lenBuf[:]))
	if size > MaxEntrySize {
		return r.corrupt(start, fmt.Sprintf("entry length %d over the %d-byte cap", size, MaxEntrySize), nil)
	}
	if r.size >= 0 && size > r.size-r.off {
		return r.corrupt(start, fmt.Sprintf("entry length %d but only %d bytes left", size, r.size-r.off), io.ErrUnexpectedEOF)
	}
	body, err := r.readBody(int(size))
	if err != nil {
		return err
	}
	proto.Reset(m)
	if err := proto.Unmarshal(body, m); err != nil {
		return r.corrupt(start+4, fmt.Sprintf("bad %s entry (%d bytes) for %T", r.kind.Name, size, m), err)
	}
	return nil
}

// readChunk bounds what one read step allocates when the size of the
// source is unknown: a truncated file claiming a large entry costs at most
// about twice what it really holds, not the claimed length.
const readChunk = 1 << 20

func (r *Reader) readBody(size int) ([]byte, error) {
	start := r.off
	if cap(r.buf) >= size || r.size >= 0 || size <= readChunk {
		if cap(r.buf) < size {
			r.buf = make([]byte, size)
		}
		b := r.buf[:size]
		n, err := io.ReadFull(r.r, b)
		r.off += int64(n)
		if err != nil {
			return nil, r.bodyError(start, n, size, err)
		}
		return b, nil
	}
	b := r.buf[:0]
	for len(b) < size {
		step := min(size-len(b), readChunk)
		b = slices.Grow(b, step)[:len(b)+step]
		n, err := io.ReadFull(r.r, b[len(b)-step:])
		r.off += int64(n)
		if err != nil {
			return nil, r.bodyError(start, len(b)-step+n, size, err)
		}
	}
	r.buf = b
	return b, nil
}

func (r *Reader) bodyError(start int64, got, want int, err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return r.corrupt(start, fmt.Sprintf("truncated entry: %d of %d bytes", got, want), io.ErrUnexpectedEOF)
	}
	return r.ioError(r.off, err)
}

// ReadPayload reads exactly n raw bytes that follow the last entry, for
// the kinds that carry data after an entry. n comes from an entry on disk,
// so it is capped like an entry length.
func (r *Reader) ReadPayload(n int64) ([]byte, error) {
	start := r.off
	if n < 0 || n > MaxEntrySize {
		return nil, r.corrupt(start, fmt.Sprintf("payload length %d out of range", n), nil)
	}
	if r.size >= 0 && n > r.size-r.off {
		return nil, r.corrupt(start, fmt.Sprintf("payload length %d but only %d bytes left", n, r.size-r.off), io.ErrUnexpectedEOF)
	}
	b, err := r.readBody(int(n))
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(b))
	copy(out, b)
	return out, nil
}

func (r *Reader) corrupt(off int64, what string, err error) error {
	return &FormatError{File: r.name, Offset: off, What: what, Err: err}
}

func (r *Reader) ioError(off int64, err error) error {
	return fmt.Errorf("%s: offset %d: reading %s image: %w", r.name, off, r.kind.Name, err)
}

// WriteFile creates path, which must not exist (CreateFile), and writes
// an image of kind k holding msgs. It does not fsync: Staging.Commit
// does, for every file, before the checkpoint becomes visible.
func WriteFile(path string, k Kind, msgs ...proto.Message) error {
	return writeFile(path, path, k, msgs)
}

// ReplaceFile writes anew an image that this dump wrote already and now
// writes again with what it learnt since (the mm and pagemap images of a
// process whose pages are copied once the tree runs). The new image is
// created under a new name, as CreateFile does, then renamed over path:
// a rename replaces whatever is at path, a symlink included, and never
// writes through it.
func ReplaceFile(path string, k Kind, msgs ...proto.Message) error {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	tmp := path + ".ctcr-new-" + hex.EncodeToString(rnd[:])
	if err := writeFile(tmp, path, k, msgs); err != nil {
		return err
	}
	// The old inode's checksum goes with it: a later file may reuse
	// its inode number.
	if old, err := os.OpenFile(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
		ForgetSum(old)
		old.Close()
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return WriteError(filepath.Dir(path), filepath.Base(path), err)
	}
	return nil
}

// writeFile writes the image at path; errors name it shown.
func writeFile(path, shown string, k Kind, msgs []proto.Message) (err error) {
	dir, name := filepath.Dir(shown), filepath.Base(shown)
	f, err := CreateFile(path, os.O_WRONLY)
	if err != nil {
		return WriteError(dir, name, err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = WriteError(dir, name, cerr)
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	// Checksummed on the way out, for the manifest.
	sum := crc32.New(Castagnoli)
	bw := bufio.NewWriter(io.MultiWriter(f, sum))
	w, err := NewWriter(bw, k)
	if err != nil {
		return fmt.Errorf("%s: %w", shown, err)
	}
	for _, m := range msgs {
		if err := w.Write(m); err != nil {
			return fmt.Errorf("%s: %w", shown, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return WriteError(dir, name, err)
	}
	return RecordSum(f, sum.Sum32())
}

// ReadAll reads every entry of the image at path, each into a new message
// from newT.
func ReadAll[T proto.Message](path string, k Kind, newT func() T) ([]T, error) {
	f, done, err := openImage(path)
	if err != nil {
		return nil, err
	}
	defer done()
	r, err := NewReader(f, k, path)
	if err != nil {
		return nil, err
	}
	var out []T
	for {
		m := newT()
		if err := r.Next(m); err == io.EOF {
			return out, nil
		} else if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
}

// ReadOne reads the image at path, which must hold exactly one entry, into
// m. Images such as inventory, core, mm, fs and ids are one entry each.
func ReadOne(path string, k Kind, m proto.Message) error {
	f, done, err := openImage(path)
	if err != nil {
		return err
	}
	defer done()
	r, err := NewReader(f, k, path)
	if err != nil {
		return err
	}
	if err := r.Next(m); err == io.EOF {
		return r.corrupt(r.off, "no entry, want exactly one", nil)
	} else if err != nil {
		return err
	}
	end := r.off
	extra := m.ProtoReflect().New().Interface()
	if err := r.Next(extra); err == nil {
		return r.corrupt(end, "more than one entry, want exactly one", nil)
	} else if err != io.EOF {
		return err
	}
	return nil
}
