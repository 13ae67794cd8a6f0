package criu

import (
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/images"
)

// The page write path. Pages go from the task into a few small buffers
// of ctcr's, allocated once and populated in the kernel, and from there
// into the pages image with pwrite: no page of the image is ever mapped
// into ctcr, so copying takes no page fault (a user fault costs 15-20 µs
// on slow VMs: one per 4 KiB of a mapped image made the dump run at
// 0.2 GB/s where write(2) into the same tmpfs runs at 2.5 GB/s), and
// ctcr's memory stays a few MiB whatever the task's size.
//
// The caller's goroutine fills a buffer (process_vm_readv, or a pread of
// /proc/PID/mem) and adds it to the image's CRC32C while the data is
// still in the cache; a writer goroutine writes the buffer before it
// comes back, so that reading the task and writing the image run on
// both cores at once.

const (
	// pageBufSize is one buffer: big enough that a syscall moves a lot,
	// small enough to stay in the L2 cache between the copy in, the
	// checksum and the copy out.
	pageBufSize = 1 << 20
	// pageBufCount buffers are in flight at most.
	pageBufCount = 4
)

// pageBufPool holds the page buffers, made on first use and kept for
// the life of the process: a tree of 1,000 tasks reuses them.
var pageBufPool = struct {
	sync.Mutex
	bufs []*pageBuf // guarded by the mutex
	made int        // guarded by the mutex
}{}

type pageBuf struct {
	b []byte // pageBufSize bytes, mapped and populated
}

// getPageBuf returns a free buffer, making one if fewer than
// pageBufCount exist, or nil if all are in use.
func getPageBuf() (*pageBuf, error) {
	pageBufPool.Lock()
	defer pageBufPool.Unlock()
	if n := len(pageBufPool.bufs); n > 0 {
		b := pageBufPool.bufs[n-1]
		pageBufPool.bufs = pageBufPool.bufs[:n-1]
		return b, nil
	}
	if pageBufPool.made >= pageBufCount {
		return nil, nil
	}
	// Populated by the kernel: no fault on it later, and its pages are
	// ctcr's for good (the Go heap could give them back and fault again).
	b, err := unix.Mmap(-1, 0, pageBufSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("page buffer: %w", err)
	}
	pageBufPool.made++
	return &pageBuf{b: b}, nil
}

func putPageBuf(b *pageBuf) {
	pageBufPool.Lock()
	pageBufPool.bufs = append(pageBufPool.bufs, b)
	pageBufPool.Unlock()
}

// pageSink writes a raw pages image sequentially from page buffers and
// computes its CRC32C on the way. Use: newPageSink, then per chunk
// buffer + fill + submit; close at the end (or abort).
type pageSink struct {
	f    *os.File
	dir  string // the checkpoint directory, for messages; immutable
	name string // the image's file name; immutable
	off  int64  // where the next submitted buffer goes; the caller's
	crc  uint32 // of everything submitted so far; the caller's

	work  chan pageWrite
	free  chan *pageBuf // buffers the writer is done with
	owned int           // buffers taken from the pool; the caller's
	wg    sync.WaitGroup

	mu  sync.Mutex
	err error // the writer's first error; guarded by mu

	// A compressed image (name ends in .zst, pages_zstd.go): the
	// frames' end in the file and the CRC32C of the file so far, the
	// writer's until finish.
	zstd bool // immutable
	zoff int64
	zcrc uint32

	// out, if set, takes the image instead of f (pages_stream.go): the
	// writes go to it in order. Immutable.
	out PageStreamFile
}

type pageWrite struct {
	buf *pageBuf
	n   int
	off int64
	// back, if set, gets the buffer once written (copyRunsParallel's
	// reader that owns it); else it goes to free.
	back chan *pageBuf
}

// newPageSink creates the pages image at path, which must not exist
// (images.CreateFile). A path
// ending in .zst gets the pages compressed with zstd (pages_zstd.go).
func newPageSink(path string) (*pageSink, error) {
	s := &pageSink{dir: filepath.Dir(path), name: filepath.Base(path), work: make(chan pageWrite, pageBufCount), free: make(chan *pageBuf, pageBufCount)}
	s.zstd = strings.HasSuffix(path, zstdSuffix)
	var enc *zstd.Encoder
	if s.zstd {
		var err error
		if enc, err = zstdEnc(); err != nil {
			return nil, fmt.Errorf("zstd encoder: %w", err)
		}
	}
	if ps := pageStreamFor(path); ps != nil {
		out, err := ps.BeginPages(path)
		if err != nil {
			return nil, images.WriteError(s.dir, s.name, err)
		}
		s.out = out
	} else {
		f, err := images.CreateFile(path, os.O_WRONLY)
		if err != nil {
			return nil, images.WriteError(s.dir, s.name, err)
		}
		s.f = f
	}
	s.wg.Add(1)
	if s.zstd {
		go s.zstdWriter(enc)
	} else {
		go s.writer()
	}
	return s, nil
}

func (s *pageSink) writer() {
	defer s.wg.Done()
	for w := range s.work {
		if s.failed() == nil {
			if err := s.put(w.buf.b[:w.n], w.off); err != nil {
				s.mu.Lock()
				s.err = images.WriteError(s.dir, s.name, err)
				s.mu.Unlock()
			}
		}
		if w.back != nil {
			w.back <- w.buf
		} else {
			s.free <- w.buf
		}
	}
}

func pwriteAll(f *os.File, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(int(f.Fd()), b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return unix.ENOSPC // a regular file that takes no byte is full
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// put writes b at offset off of the image: the writes come in order, so
// a streamed image just takes the next piece.
func (s *pageSink) put(b []byte, off int64) error {
	if s.out != nil {
		return s.out.Write(b)
	}
	return pwriteAll(s.f, b, off)
}

// failed returns the writer's error, if any: the caller stops at once.
func (s *pageSink) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// buffer returns an empty buffer to fill: a new one while fewer than
// pageBufCount are in flight, else the next one the writer is done with.
func (s *pageSink) buffer() (*pageBuf, error) {
	if err := s.failed(); err != nil {
		return nil, err
	}
	select {
	case b := <-s.free:
		return b, nil
	default:
	}
	if s.owned < pageBufCount {
		b, err := getPageBuf()
		if err != nil {
			return nil, err
		}
		if b != nil {
			s.owned++
			return b, nil
		}
	}
	if s.owned == 0 {
		// Every buffer is another sink's: this one cannot go on. Sinks
		// are used one at a time, so this is a bug.
		return nil, errors.New("page buffers all in use")
	}
	b := <-s.free
	if err := s.failed(); err != nil {
		s.free <- b
		return nil, err
	}
	return b, nil
}

// submit checksums the first n bytes of b and hands them to the writer
// at the next offset; b is not the caller's any more.
func (s *pageSink) submit(b *pageBuf, n int) {
	if !s.zstd {
		// A compressed image's checksum is of its frames: the writer's.
		s.crc = crc32.Update(s.crc, images.Castagnoli, b.b[:n])
	}
	s.work <- pageWrite{buf: b, n: n, off: s.off}
	s.off += int64(n)
}

// release gives back an unused buffer.
func (s *pageSink) release(b *pageBuf) { s.free <- b }

// finish waits for the writer and returns the buffers to the pool.
func (s *pageSink) finish() {
	if s.work == nil {
		return
	}
	close(s.work)
	s.wg.Wait()
	s.work = nil
	// The writer is done: every buffer not lost by the caller is free.
	for s.owned > 0 {
		select {
		case b := <-s.free:
			putPageBuf(b)
			s.owned--
		default:
			// A buffer the caller kept (a bug): let the pool make
			// another rather than wait for it.
			pageBufPool.Lock()
			pageBufPool.made -= s.owned
			pageBufPool.Unlock()
			s.owned = 0
		}
	}
}

// close waits for every write, records the checksum of the image and
// closes it.
func (s *pageSink) close() error {
	s.finish()
	err := s.failed()
	if s.zstd {
		s.off, s.crc = s.zoff, s.zcrc
	}
	if s.out != nil {
		if err != nil {
			s.out.Abort()
			return err
		}
		if err := s.out.End(s.off, s.crc); err != nil {
			return images.WriteError(s.dir, s.name, err)
		}
		images.RecordStreamed(filepath.Join(s.dir, s.name), s.off, s.crc)
		return nil
	}
	if err == nil {
		// The file ends where the last page was written.
		if err = s.f.Truncate(s.off); err != nil {
			err = images.WriteError(s.dir, s.name, err)
		}
	}
	if err == nil {
		err = images.RecordSum(s.f, s.crc)
	}
	if cerr := s.f.Close(); err == nil && cerr != nil {
		err = images.WriteError(s.dir, s.name, cerr)
	}
	return err
}

// abort stops the sink after an error of the caller's.
func (s *pageSink) abort() {
	s.finish()
	if s.out != nil {
		s.out.Abort()
		return
	}
	s.f.Close()
}

// pageSource says where copyRunsFrom reads the pages of runs.
type pageSource struct {
	// pid is the task whose memory holds them: the dumped task itself,
	// stopped, or its copy-on-write snapshot child (snapshot.go).
	pid int
	// allMem reads every run through /proc/PID/mem. A snapshot child
	// shares each page with the task, and process_vm_readv pins pages:
	// pinning a shared anonymous page makes the kernel give the child
	// its own copy first (an allocation and a copy per page, and memory
	// the size of the task), where /proc/PID/mem reads the shared page.
	allMem bool
	// saved, if set, holds the pages of the runs flagged noFork, one
	// after the other in run order: copied while the task was stopped,
	// since the snapshot child does not have them as they were.
	saved *os.File
	// who names the task in messages ("task 12", "snapshot 15 of task 12").
	who string
}

func (src pageSource) name() string {
	if src.who != "" {
		return src.who
	}
	return fmt.Sprintf("task %d", src.pid)
}

// copyRunsFrom copies every run, in order, from src into the sink,
// counting it in pr. Runs flagged unread (or all, with src.allMem) go
// through /proc/PID/mem, the others through process_vm_readv, gathered
// up to a buffer per call; noFork runs come from src.saved if set.
func copyRunsFrom(src pageSource, runs []pageRun, s *pageSink, pr *progress) error {
	// A streamed image (dump -D -) goes out in order: one reader.
	if n, viaWriter := pageCopiers(); n > 1 && !s.zstd && s.out == nil {
		return copyRunsParallel(src, runs, s, pr, n, viaWriter)
	}
	pid := src.pid
	const maxIov = 1024 // IOV_MAX
	local := make([]unix.Iovec, 0, maxIov)
	remote := make([]unix.RemoteIovec, 0, maxIov)
	var mem *os.File
	defer func() {
		if mem != nil {
			mem.Close()
		}
	}()
	var savedOff int64
	var buf *pageBuf
	fill := 0 // bytes of buf filled or to be filled by the gathered iovecs
	want := 0 // bytes the gathered iovecs read
	flush := func() error {
		if buf == nil {
			return nil
		}
		if len(remote) > 0 {
			n, err := unix.ProcessVMReadv(pid, local, remote, 0)
			if err != nil || n != want {
				if err == nil {
					err = fmt.Errorf("%d of %d bytes read: part of it was unmapped", n, want)
				}
				return fmt.Errorf("%s: read memory at %#x: %w", src.name(), remote[0].Base, err)
			}
		}
		s.submit(buf, fill)
		pr.add(uint64(fill))
		buf, fill, want = nil, 0, 0
		local, remote = local[:0], remote[:0]
		return nil
	}
	defer func() {
		if buf != nil {
			s.release(buf)
		}
	}()
	for _, r := range runs {
		addr, left := r.addr, r.npages*pageSize
		for left > 0 {
			if buf == nil {
				var err error
				if buf, err = s.buffer(); err != nil {
					return err
				}
			}
			k := min(left, uint64(len(buf.b)-fill))
			dst := buf.b[fill : fill+int(k)]
			switch {
			case r.noFork && src.saved != nil:
				if _, err := src.saved.ReadAt(dst, savedOff); err != nil {
					return fmt.Errorf("%s: pages at %#x saved while it was stopped: %w", src.name(), addr, err)
				}
				savedOff += int64(k)
			case r.unread || src.allMem:
				// process_vm_readv honours the task's protection;
				// /proc/PID/mem reads a PROT_NONE page as the
				// kernel's ptrace access does.
				if mem == nil {
					var err error
					if mem, err = os.Open(fmt.Sprintf("/proc/%d/mem", pid)); err != nil {
						return fmt.Errorf("%s: %w", src.name(), err)
					}
				}
				if _, err := mem.ReadAt(dst, int64(addr)); err != nil {
					return fmt.Errorf("%s: read memory at %#x through /proc/%d/mem: %w", src.name(), addr, pid, err)
				}
			default:
				local = append(local, unix.Iovec{Base: (*byte)(unsafe.Pointer(&dst[0])), Len: k})
				remote = append(remote, unix.RemoteIovec{Base: uintptr(addr), Len: int(k)})
				want += int(k)
			}
			fill += int(k)
			addr, left = addr+k, left-k
			if fill == len(buf.b) || len(remote) == maxIov {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	return flush()
}

// diskError reports an error of the file system the images go to (full,
// over quota, failing): no point going on, whatever the task does.
func diskError(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) || errors.Is(err, unix.EIO) || errors.Is(err, unix.EROFS) || errors.Is(err, unix.EFBIG)
}

// pageCopiers returns how many goroutines read the pages of a raw pages
// image at once, one per core, and whether they hand their chunks to
// the sink's one writer. Bench knobs, not user options (BenchmarkPageCopy,
// bench -compare): CTCR_PAGE_COPIERS=N sets the number, 1 being the
// single-reader pipeline; CTCR_PAGE_WRITER=self makes each reader write
// its own chunks.
func pageCopiers() (int, bool) {
	n := runtime.GOMAXPROCS(0)
	if v, err := strconv.Atoi(os.Getenv("CTCR_PAGE_COPIERS")); err == nil && v > 0 {
		n = v
	}
	return min(n, pageBufCount), os.Getenv("CTCR_PAGE_WRITER") != "self"
}

// pageChunk is a buffer's worth of the pages image: where it goes in
// the file and where its pages start in the run list.
type pageChunk struct {
	off      int64  // in the image
	run      int    // index of the run of its first page
	skip     uint64 // bytes of that run before it
	savedOff int64  // in src.saved, of its first noFork byte
	n        int    // bytes
}

// planChunks cuts the pages of runs, in order, into chunks of at most
// size bytes, the first at offset off of the image.
func planChunks(src pageSource, runs []pageRun, size int, off int64) []pageChunk {
	var chunks []pageChunk
	var savedOff int64
	for i, r := range runs {
		for skip, left := uint64(0), r.npages*pageSize; left > 0; {
			if n := len(chunks); n == 0 || chunks[n-1].n == size {
				chunks = append(chunks, pageChunk{off: off, run: i, skip: skip, savedOff: savedOff})
			}
			c := &chunks[len(chunks)-1]
			k := min(left, uint64(size-c.n))
			c.n += int(k)
			off += int64(k)
			if r.noFork && src.saved != nil {
				savedOff += int64(k)
			}
			skip, left = skip+k, left-k
		}
	}
	return chunks
}

// copyRunsParallel is copyRunsFrom with n readers: a reader takes the
// next chunk of the image, reads its pages from src into one of its
// buffers and checksums it while it is in the core's cache. With
// viaWriter it hands the buffer to the sink's writer goroutine, which
// writes the chunks at their offsets as they come; without, it writes
// the chunk itself. Reading the task and writing the image run on
// every core at once, and the image's CRC32C is combined from the
// chunks'.
func copyRunsParallel(src pageSource, runs []pageRun, s *pageSink, pr *progress, n int, viaWriter bool) error {
	// After anything already submitted to the sink.
	chunks := planChunks(src, runs, pageBufSize, s.off)
	if len(chunks) == 0 {
		return nil
	}
	n = min(n, len(chunks))
	perReader := 1
	if viaWriter {
		perReader = max(1, pageBufCount/n)
	}
	// Each reader's buffers come back to it on its own channel.
	owned := make([]chan *pageBuf, n)
	for i := range owned {
		owned[i] = make(chan *pageBuf, perReader)
		for range perReader {
			b, err := s.buffer()
			if err != nil {
				for _, c := range owned[:i+1] {
					for len(c) > 0 {
						s.release(<-c)
					}
				}
				return err
			}
			owned[i] <- b
		}
	}
	crcs := make([]uint32, len(chunks))
	var (
		next    atomic.Int64
		stop    atomic.Bool
		mu      sync.Mutex // guards readErr, readAt and pr
		readErr error
		readAt  = len(chunks) // the chunk readErr is of
		wg      sync.WaitGroup
	)
	for _, free := range owned {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := chunkReader{src: src, runs: runs}
			defer r.close()
			for !stop.Load() && s.failed() == nil {
				i := int(next.Add(1)) - 1
				if i >= len(chunks) {
					return
				}
				c := chunks[i]
				b := <-free
				dst := b.b[:c.n]
				if err := r.fill(dst, c); err != nil {
					free <- b
					mu.Lock()
					if i < readAt {
						readErr, readAt = err, i
					}
					mu.Unlock()
					stop.Store(true)
					return
				}
				crcs[i] = crc32.Update(0, images.Castagnoli, dst)
				mu.Lock()
				pr.add(uint64(c.n))
				mu.Unlock()
				if viaWriter {
					s.work <- pageWrite{buf: b, n: c.n, off: c.off, back: free}
					continue
				}
				err := pwriteAll(s.f, dst, c.off)
				free <- b
				if err != nil {
					s.setErr(images.WriteError(s.dir, s.name, err))
					stop.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	// Every buffer handed to the writer comes back to its reader's
	// channel once written: waiting for them all waits for the writes.
	for _, c := range owned {
		for range perReader {
			s.release(<-c)
		}
	}
	if err := s.failed(); err != nil {
		return err
	}
	if readErr != nil {
		return readErr
	}
	for i, c := range chunks {
		s.crc = images.CombineCRC32C(s.crc, crcs[i], uint64(c.n))
	}
	last := chunks[len(chunks)-1]
	s.off = last.off + int64(last.n)
	return nil
}

// setErr records the first write error of the sink.
func (s *pageSink) setErr(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
}

// chunkReader fills chunks from one copier's goroutine.
type chunkReader struct {
	src    pageSource
	runs   []pageRun
	mem    *os.File // src's /proc/PID/mem, opened on first use
	local  []unix.Iovec
	remote []unix.RemoteIovec
	want   int
}

func (r *chunkReader) close() {
	if r.mem != nil {
		r.mem.Close()
	}
}

// fill reads the pages of chunk c into dst (c.n bytes): process_vm_readv
// gathered up to IOV_MAX pieces a call, /proc/PID/mem for runs flagged
// unread (or all, with src.allMem), src.saved for noFork runs if set.
func (r *chunkReader) fill(dst []byte, c pageChunk) error {
	const maxIov = 1024 // IOV_MAX
	src := r.src
	savedOff := c.savedOff
	run, skip := c.run, c.skip
	for len(dst) > 0 {
		pr := r.runs[run]
		addr := pr.addr + skip
		k := min(uint64(len(dst)), pr.npages*pageSize-skip)
		piece := dst[:k]
		switch {
		case pr.noFork && src.saved != nil:
			if _, err := src.saved.ReadAt(piece, savedOff); err != nil {
				return fmt.Errorf("%s: pages at %#x saved while it was stopped: %w", src.name(), addr, err)
			}
			savedOff += int64(k)
		case pr.unread || src.allMem:
			// process_vm_readv honours the task's protection;
			// /proc/PID/mem reads a PROT_NONE page as the kernel's
			// ptrace access does.
			if r.mem == nil {
				var err error
				if r.mem, err = os.Open(fmt.Sprintf("/proc/%d/mem", src.pid)); err != nil {
					return fmt.Errorf("%s: %w", src.name(), err)
				}
			}
			if _, err := r.mem.ReadAt(piece, int64(addr)); err != nil {
				return fmt.Errorf("%s: read memory at %#x through /proc/%d/mem: %w", src.name(), addr, src.pid, err)
			}
		default:
			r.local = append(r.local, unix.Iovec{Base: &piece[0], Len: k})
			r.remote = append(r.remote, unix.RemoteIovec{Base: uintptr(addr), Len: int(k)})
			r.want += int(k)
			if len(r.remote) == maxIov {
				if err := r.readv(); err != nil {
					return err
				}
			}
		}
		dst = dst[k:]
		if skip += k; skip == pr.npages*pageSize {
			run, skip = run+1, 0
		}
	}
	return r.readv()
}

// readv reads the gathered pieces with one process_vm_readv.
func (r *chunkReader) readv() error {
	if len(r.remote) == 0 {
		return nil
	}
	n, err := unix.ProcessVMReadv(r.src.pid, r.local, r.remote, 0)
	if err != nil || n != r.want {
		if err == nil {
			err = fmt.Errorf("%d of %d bytes read: part of it was unmapped", n, r.want)
		}
		return fmt.Errorf("%s: read memory at %#x: %w", r.src.name(), r.remote[0].Base, err)
	}
	r.local, r.remote, r.want = r.local[:0], r.remote[:0], 0
	return nil
}
