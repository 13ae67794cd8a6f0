package criu

// Compressed page images (dump --compress zstd).
//
// A compressed checkpoint keeps every image as CRIU writes it except the
// tasks' pages: pages-N.img becomes pages-N.img.zst, the same bytes as a
// zstd stream, and compression.json says so. crit is never asked to read
// a .zst (it decodes images by name), and a CRIU restore of such a
// checkpoint fails on the missing pages-N.img rather than reading wrong
// memory. The manifest lists the .zst like any other file, with the size
// and CRC32C of its compressed bytes, so a truncated or damaged one is
// refused before a restore creates anything.
//
//	DIR/compression.json   {"pages": "zstd"}
//	DIR/pages-N.img.zst    frame | frame | frame ...   (each frame: 1 MiB of pages or less)
//
// Each page buffer of the write path (pageSink, 1 MiB) is compressed on
// its own into one zstd frame, on every core at once, and the frames are
// written in order: a concatenation of frames is one valid zstd stream,
// which any zstd tool decompresses into the raw pages image. Each frame
// carries zstd's checksum of its content.
//
// Restore decompresses in ctcr into one small buffer at a time and
// writes the pages into the task with process_vm_writev (fillPagesZstd):
// the task cannot read a compressed file with preadv. A frame the encoder
// stored raw (memory that does not compress) is read straight into that
// buffer (zstdFrames).

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/images"
)

// Compression names how page images are stored.
const (
	CompressNone = ""
	CompressZstd = "zstd"
)

// compressionFile records the compression of a checkpoint's page images;
// a checkpoint without one has raw page images.
const compressionFile = "compression.json"

// zstdSuffix is added to the name of a compressed pages image.
const zstdSuffix = ".zst"

type compressionImage struct {
	Pages string `json:"pages"` // CompressZstd
}

// CheckCompression refuses a compression ctcr does not write.
func CheckCompression(c string) error {
	switch c {
	case CompressNone, CompressZstd:
		return nil
	}
	return fmt.Errorf("compression %q: ctcr writes %q or none", c, CompressZstd)
}

// pagesImagePath is where the pages image pagesID of a dump goes.
func pagesImagePath(stage *images.Staging, pagesID int, compress string) string {
	p := stage.Path(images.Pages.FileName(pagesID))
	if compress == CompressZstd {
		p += zstdSuffix
	}
	return p
}

// writeCompression records the compression of the staged checkpoint.
func writeCompression(stage *images.Staging, compress string) error {
	if compress == CompressNone {
		return nil
	}
	b, err := json.Marshal(compressionImage{Pages: compress})
	if err != nil {
		return err
	}
	if err := stage.WriteFile(compressionFile, append(b, '\n')); err != nil {
		return images.WriteError(stage.Dir, compressionFile, err)
	}
	return nil
}

// readCompression returns the compression of the page images in dir.
func readCompression(dir string) (string, error) {
	path := filepath.Join(dir, compressionFile)
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		return CompressNone, nil
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	var img compressionImage
	if err := json.Unmarshal(b, &img); err != nil {
		return "", corruptf(path, "%v", err)
	}
	if img.Pages != CompressZstd {
		return "", corruptf(path, "page compression %q: this ctcr reads %q", img.Pages, CompressZstd)
	}
	return img.Pages, nil
}

// The encoder is made once: EncodeAll may be called from several
// goroutines, each getting one of its GOMAXPROCS inner encoders.
var zstdEnc = sync.OnceValues(func() (*zstd.Encoder, error) {
	return zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(zstdWorkers()),
		// One frame per 1 MiB buffer: a bigger window buys nothing.
		zstd.WithWindowSize(pageBufSize),
		zstd.WithEncoderCRC(true),
		zstd.WithZeroFrames(false))
})

// zstdWorkers is how many buffers are compressed at once: every core.
func zstdWorkers() int { return max(1, min(runtime.GOMAXPROCS(0), pageBufCount)) }

// zstdOutPool holds compressed frames between their encoder and the
// file: at most pageBufCount+workers exist at a time.
var zstdOutPool = sync.Pool{New: func() any { b := make([]byte, 0, pageBufSize+pageBufSize/64); return &b }}

// zstdJob is one buffer to compress; its frame comes back on out.
type zstdJob struct {
	w   pageWrite
	out chan *[]byte
}

// zstdWriter replaces pageSink.writer for a .zst image: it hands every
// submitted buffer to a compressing worker, then writes the frames in
// submission order, computing the CRC32C of what goes to disk (the
// manifest's checksum is of the file).
func (s *pageSink) zstdWriter(enc *zstd.Encoder) {
	defer s.wg.Done()
	jobs := make(chan zstdJob, pageBufCount)
	order := make(chan chan *[]byte, pageBufCount)
	var workers sync.WaitGroup
	for range zstdWorkers() {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for j := range jobs {
				bp := zstdOutPool.Get().(*[]byte)
				*bp = enc.EncodeAll(j.w.buf.b[:j.w.n], (*bp)[:0])
				s.free <- j.w.buf
				j.out <- bp
			}
		}()
	}
	go func() {
		for w := range s.work {
			out := make(chan *[]byte, 1)
			order <- out
			jobs <- zstdJob{w: w, out: out}
		}
		close(jobs)
		close(order)
	}()
	for out := range order {
		bp := <-out
		if s.failed() == nil {
			if err := s.put(*bp, s.zoff); err != nil {
				s.mu.Lock()
				s.err = images.WriteError(s.dir, s.name, err)
				s.mu.Unlock()
			}
			s.zcrc = crc32.Update(s.zcrc, images.Castagnoli, *bp)
			s.zoff += int64(len(*bp))
		}
		zstdOutPool.Put(bp)
	}
	workers.Wait()
}

// zstdReadBuf is what fillPagesZstd decompresses into before one
// process_vm_writev: large enough that a call moves a lot, small enough
// that ctcr's memory stays small whatever the task's size.
const zstdReadBuf = 4 << 20

// fillPagesZstd is fillPages for a checkpoint whose pages image is
// compressed: ctcr decompresses it, in order, into a buffer and writes
// each piece into the task's memory with process_vm_writev (the task's
// mappings are writable while they are filled: needsWrite); pre-copied
// pages, raw in the parent images, are read by ctcr the same way. The
// image must hold exactly the pages its pagemap describes.
//
// Preconditions: runs on the tracer thread; the task's mappings exist.
func (t *restoringTask) fillPagesZstd() error {
	var f io.Reader = eofReader{} // no image: only pre-copied pages
	var pf *os.File
	if t.img.pagesPath != "" {
		var err error
		if pf, err = os.OpenFile(t.img.pagesPath, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err != nil {
			return fmt.Errorf("%s: pages image: %w", t.where(), err)
		}
		defer pf.Close()
		f = pf
	}
	// A raw image with compressed parents (a dump without --compress
	// on top of a compressed pre-dump) is read as it is.
	var dec io.Reader = bufio.NewReaderSize(f, 1<<20)
	if t.img.pagesZstd && pf != nil {
		zf, err := newZstdFrames(pf, t.img.pagesPath)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", t.where(), t.img.pagesPath, err)
		}
		defer zf.close()
		dec = zf
	}
	var parents []*parentImageReader
	defer func() {
		for _, p := range parents {
			if p != nil {
				p.close()
			}
		}
	}()
	buf, err := unix.Mmap(-1, 0, zstdReadBuf, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("%s: page buffer: %w", t.where(), err)
	}
	defer unix.Munmap(buf)
	w := taskWriter{pid: t.pid, buf: buf, where: t.where(), progress: t.tree.progress}
	defer w.close()
	var read uint64 // bytes decompressed so far
	if err := t.eachImageRun(func(file int, addr, n, off uint64) error {
		if file < 0 {
			if err := w.copy(dec, addr, n, t.img.pagesPath); err != nil {
				return err
			}
			read += n
			return nil
		}
		for len(parents) <= file {
			parents = append(parents, nil)
		}
		if parents[file] == nil {
			pf, err := os.OpenFile(t.img.parentPaths[file], os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("%s: parent image: %w", t.where(), err)
			}
			parents[file] = &parentImageReader{f: pf, zstd: strings.HasSuffix(pf.Name(), zstdSuffix)}
		}
		r, err := parents[file].section(off, n)
		if err != nil {
			return fmt.Errorf("%s: parent image %s: %w", t.where(), t.img.parentPaths[file], err)
		}
		return w.copy(r, addr, n, t.img.parentPaths[file])
	}); err != nil {
		return err
	}
	if err := w.flush(); err != nil {
		return err
	}
	// Anything after the last page means the image is not the one the
	// pagemap describes.
	var one [1]byte
	if n, err := io.ReadFull(dec, one[:]); n != 0 || !errors.Is(err, io.EOF) {
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%s: %s after %d bytes: %w", t.where(), t.img.pagesPath, read, err)
		}
		return fmt.Errorf("%s: %s holds more than the %d bytes of pages its pagemap describes: %w", t.where(), t.img.pagesPath, read, images.ErrCorrupt)
	}
	return nil
}

// newZstdDecoder reads a compressed pages image. The window is bounded
// so that a crafted frame header cannot make the decoder allocate much;
// ctcr's own frames use 1 MiB.
func newZstdDecoder(r io.Reader) (*zstd.Decoder, error) {
	return zstd.NewReader(r, zstd.WithDecoderConcurrency(2), zstd.WithDecoderMaxWindow(8<<20))
}

// parentImageReader reads the pages of one parent image (a pre-dump) at
// given offsets. A raw image is read where asked; a compressed one
// (pre-dump --compress) has no index, so it is decompressed forward,
// skipping what is not asked for: a task's runs come in address order,
// which is their order in the image, so the image is decompressed once.
// An offset behind the last read starts it over.
type parentImageReader struct {
	f    *os.File
	zstd bool
	dec  *zstd.Decoder // made on first use
	pos  uint64        // of dec in the decompressed pages
}

// section returns a reader of the n bytes of pages at offset off.
func (p *parentImageReader) section(off, n uint64) (io.Reader, error) {
	if !p.zstd {
		return io.NewSectionReader(p.f, int64(off), int64(n)), nil
	}
	if p.dec == nil || off < p.pos {
		if _, err := p.f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		if p.dec == nil {
			dec, err := newZstdDecoder(p.f)
			if err != nil {
				return nil, err
			}
			p.dec = dec
		} else if err := p.dec.Reset(p.f); err != nil {
			return nil, err
		}
		p.pos = 0
	}
	if skip := off - p.pos; skip > 0 {
		if k, err := io.CopyN(io.Discard, p.dec, int64(skip)); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("ends %d bytes short of the pages at offset %d: %w", skip-uint64(k), off, images.ErrCorrupt)
			}
			return nil, err
		}
	}
	// The caller reads all n (taskWriter.copy) or fails the restore.
	p.pos = off + n
	return io.LimitReader(p.dec, int64(n)), nil
}

func (p *parentImageReader) close() {
	if p.dec != nil {
		p.dec.Close()
	}
	p.f.Close()
}

// taskWriter gathers pages for one task into buf and writes them with
// process_vm_writev, one call per full buffer.
type taskWriter struct {
	pid      int
	buf      []byte
	fill     int
	local    []unix.Iovec
	remote   []unix.RemoteIovec
	pieces   [][]byte // what local points to
	where    string
	progress *progress
	mem      *os.File // /proc/PID/mem, opened when process_vm_writev is refused
}

// copy reads size bytes from r (name, for messages) into the task at addr.
func (w *taskWriter) copy(r io.Reader, addr, size uint64, name string) error {
	const maxIov = 1024 // IOV_MAX
	for size > 0 {
		k := min(size, uint64(len(w.buf)-w.fill))
		dst := w.buf[w.fill : w.fill+int(k)]
		if n, err := io.ReadFull(r, dst); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("%s: %s ends %d bytes short of the pages at %#x: %w", w.where, name, size-uint64(n), addr, images.ErrCorrupt)
			}
			return fmt.Errorf("%s: read %s for the pages at %#x: %w", w.where, name, addr, err)
		}
		w.local = append(w.local, unix.Iovec{Base: &dst[0], Len: k})
		w.pieces = append(w.pieces, dst)
		w.remote = append(w.remote, unix.RemoteIovec{Base: uintptr(addr), Len: int(k)})
		w.fill += int(k)
		addr, size = addr+k, size-k
		if w.fill == len(w.buf) || len(w.remote) == maxIov {
			if err := w.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// flush writes the gathered pages into the task.
func (w *taskWriter) flush() error {
	if w.fill == 0 {
		return nil
	}
	n, err := unix.ProcessVMWritev(w.pid, w.local, w.remote, 0)
	if err == unix.EFAULT || (err == nil && n != w.fill) {
		// A mapping process_vm_writev may not write (it honours the
		// protection, as a write by the task would): /proc/PID/mem
		// writes as a debugger does.
		err = w.writeMem()
	} else if err != nil {
		err = fmt.Errorf("%s: write pages at %#x: %w", w.where, w.remote[0].Base, err)
	}
	if err != nil {
		return err
	}
	w.progress.add(uint64(w.fill))
	w.fill, w.local, w.remote, w.pieces = 0, w.local[:0], w.remote[:0], w.pieces[:0]
	return nil
}

func (w *taskWriter) writeMem() error {
	if w.mem == nil {
		f, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", w.pid), os.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("%s: %w", w.where, err)
		}
		w.mem = f
	}
	for i, b := range w.pieces {
		if _, err := w.mem.WriteAt(b, int64(w.remote[i].Base)); err != nil {
			return fmt.Errorf("%s: write pages at %#x: %w", w.where, w.remote[i].Base, err)
		}
	}
	return nil
}

func (w *taskWriter) close() {
	if w.mem != nil {
		w.mem.Close()
	}
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
