package main

// Streaming a checkpoint (-D -): `ctcr dump -t PID -D -` writes the
// whole checkpoint to stdout as one tar archive and `ctcr restore -D -`
// reads one from stdin, so that
//
//	ctcr dump -t PID -D - | ssh host ctcr restore -D -
//
// moves a process tree (and `ctcr checkpoint CTID -D -` / `ctcr restore
// CTID -D -` a container). The pages go out as the dump copies them,
// each image in parts (archiveWriter; docs/streaming.md draws the
// archive): none is staged on disk. The other images are written as
// usual into a private directory (0700, under $TMPDIR or /run/ctcr) and
// sent from there once complete, the manifest last; the tasks stay
// stopped until the last byte is written, so a broken pipe (or a reader
// that takes nothing for streamStall) leaves them running as a failed
// dump does. The restore side unpacks into a private directory of its
// own, accepting only plain names (no absolute path, no "..", no link,
// no device: regular files and directories), joining the parts of a
// file, within size limits, and verifies the manifest before anything
// is created. Both remove their directory when done.

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"github.com/ctcr/ctcr/internal/atomicfile"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu"
	"github.com/ctcr/ctcr/criu/images"
)

// streamDir is the -D value that means stdout (dump) or stdin (restore).
const streamDir = "-"

const (
	// maxStreamFiles bounds the entries of an archive: a checkpoint of
	// 10,000 tasks has some 60,000 files.
	maxStreamFiles = 200_000
	// maxStreamName bounds an entry's name.
	maxStreamName = 1024
	// maxStreamDepth bounds the directories in a name (a container
	// bundle has images/, a pre-copy pre-copy/).
	maxStreamDepth = 4
)

// isTerminal reports whether f is a terminal: a checkpoint is binary,
// and a terminal is never where one is meant to go or come from.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// stagingLock is the file in a staging directory whose flock its ctcr
// holds for as long as it runs. The kernel drops the lock however ctcr
// ends, SIGKILL included, so a staging directory whose lock can be taken
// is a dead run's: the next streamed dump or restore removes it
// (sweepStaging). A directory cannot be unlinked while files are written
// into it by name, which the dump does, so this is how staging does not
// outlive a killed ctcr.
const stagingLock = "staging.lock"

// streamStaging makes the private directory a streamed checkpoint is
// written to or unpacked into (under the returned directory, in
// "checkpoint"), and returns it and its remover. It first removes the
// staging directories that killed runs left.
func streamStaging(what string) (string, func(), error) {
	base := os.Getenv("TMPDIR")
	if base == "" {
		base = "/run/ctcr"
		if err := atomicfile.PrivateDir(base); err != nil {
			return "", nil, fmt.Errorf("%s: %w", base, err)
		}
	}
	sweepStaging(base)
	dir, err := os.MkdirTemp(base, "ctcr-"+what+"-")
	if err != nil {
		return "", nil, fmt.Errorf("directory for the streamed checkpoint: %w", err)
	}
	// MkdirTemp makes it 0700: only root reads the images meanwhile.
	lockFd, err := lockStaging(dir)
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("staging directory %s: %w", dir, err)
	}
	return dir, func() { os.RemoveAll(dir); unix.Close(lockFd) }, nil
}

// lockStaging takes the owner lock of staging directory dir. The lock
// file is locked under a temporary name and only then renamed into
// place, so that a sweeper never finds a lock file not yet locked.
func lockStaging(dir string) (int, error) {
	tmp := filepath.Join(dir, ".staging.lock.new")
	fd, err := unix.Open(tmp, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: tmp, Err: err}
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		return -1, &os.PathError{Op: "flock", Path: tmp, Err: err}
	}
	if err := unix.Rename(tmp, filepath.Join(dir, stagingLock)); err != nil {
		unix.Close(fd)
		return -1, &os.PathError{Op: "rename", Path: tmp, Err: err}
	}
	return fd, nil
}

// sweepStaging removes the staging directories under base (ctcr-*-*)
// whose owner lock no process holds. A directory without the lock file
// (being created, or not ctcr's) or not owned by this user is left alone.
func sweepStaging(base string) {
	dirs, _ := filepath.Glob(filepath.Join(base, "ctcr-*-*"))
	for _, dir := range dirs {
		var st unix.Stat_t
		if unix.Lstat(dir, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != os.Geteuid() {
			continue
		}
		fd, err := unix.Open(filepath.Join(dir, stagingLock), unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) == nil {
			// Ours now: no live ctcr can be using it.
			os.RemoveAll(dir)
		}
		unix.Close(fd)
	}
}

// archiveWriter writes one checkpoint to stdout as a tar archive while
// it is being made. Pages images come first, as the dump copies them
// (criu.PageStreamer): each goes out in parts, entries named
// NAME.partNNNNNNNN in order, of 1 MiB or so, since tar wants an entry's
// size before its data and a compressed image's size is known only at
// its end; no page is staged on disk. Then, once the checkpoint is
// complete (finish), the other files from the staging directory, its
// manifest last: the manifest lists the pages images whole, with the
// size and CRC32C the sink computed while sending them.
//
// Preconditions: BeginPages .. End/Abort of one image hold mu; finish
// runs when no image is being sent.
type archiveWriter struct {
	root string // the checkpoint directory archive names are relative to; immutable

	mu   sync.Mutex
	bw   *bufio.Writer
	tw   *tar.Writer
	dirs map[string]bool // directories already in the archive
	err  error           // the first write error: the archive is broken
	at   time.Time       // the entries' time; immutable
}

// streamStall is how long a streamed dump waits for its reader to take
// more of the archive, with the tree stopped, before it fails (and the
// tree runs on), and how long restore -D - waits for more of it from its
// writer. CTCR_STREAM_STALL (a Go duration) changes it, for tests.
func streamStall() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("CTCR_STREAM_STALL")); err == nil && d > 0 {
		return d
	}
	return 5 * time.Minute
}

// stallFile reads or writes a file with a deadline on each call, so
// that a peer that stops without going away cannot hold ctcr for ever:
// a streamed dump's reader that takes nothing more (the tree is
// stopped), or restore -D -'s writer that sends nothing more (nothing
// is restored before the whole checkpoint has arrived, so nothing is
// left behind). Each call on a pipe or socket is made non-blocking by
// itself (preadv2/pwritev2 with RWF_NOWAIT, which pipes and sockets
// honour), and waits in poll(2) for at most the time left. The file
// description's own flags are never changed: it is shared with
// whoever gave ctcr its stdin or stdout, and a ctcr killed mid-stream
// must not leave it non-blocking for them. A regular file, which never
// blocks for long, is used as it is.
type stallFile struct {
	fd     int // a duplicate of the file's, ctcr's own
	stall  time.Duration
	nowait bool // false once the file refused RWF_NOWAIT: blocking calls, no deadline
}

// withStall returns f, or a stallFile on a duplicate of it, and its
// closer.
func withStall(f *os.File) (io.ReadWriter, func()) {
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil || st.Mode&unix.S_IFMT == unix.S_IFREG {
		return f, func() {}
	}
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return f, func() {}
	}
	return &stallFile{fd: fd, stall: streamStall(), nowait: true}, func() { unix.Close(fd) }
}

func (s *stallFile) Write(b []byte) (int, error) {
	done := 0
	deadline := time.Now().Add(s.stall)
	for done < len(b) {
		n, err := s.call(unix.Pwritev2, b[done:])
		if err == nil {
			done += n
			deadline = time.Now().Add(s.stall)
			continue
		}
		if ok, err := s.retry(err, unix.POLLOUT, deadline, "the reader took nothing"); !ok {
			return done, err
		}
	}
	return done, nil
}

func (s *stallFile) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	deadline := time.Now().Add(s.stall)
	for {
		n, err := s.call(unix.Preadv2, b)
		if err == nil {
			if n == 0 {
				return 0, io.EOF
			}
			return n, nil
		}
		if ok, err := s.retry(err, unix.POLLIN, deadline, "the writer sent nothing"); !ok {
			return 0, err
		}
	}
}

// call runs rw (preadv2 or pwritev2) on b at the file's position,
// non-blocking unless the file refused it.
func (s *stallFile) call(rw func(int, [][]byte, int64, int) (int, error), b []byte) (int, error) {
	flags := 0
	if s.nowait {
		flags = unix.RWF_NOWAIT
	}
	return rw(s.fd, [][]byte{b}, -1, flags)
}

// retry tells whether a call that failed with err may be made again:
// after EINTR at once; after EAGAIN once poll says the file is ready
// for events (or has hung up, which the next call reports), unless the
// deadline passes first (then what says what the stall meant); with
// EOPNOTSUPP (a file with no non-blocking calls) as a blocking call.
func (s *stallFile) retry(err error, events int16, deadline time.Time, what string) (bool, error) {
	switch err {
	case unix.EINTR:
		return true, nil
	case unix.EOPNOTSUPP:
		if !s.nowait {
			return false, err
		}
		// No deadline for such a file: its calls block, as they
		// would have without one.
		s.nowait = false
		return true, nil
	case unix.EAGAIN:
	default:
		return false, err
	}
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false, fmt.Errorf("%s for %v: %w", what, s.stall, os.ErrDeadlineExceeded)
		}
		pfd := []unix.PollFd{{Fd: int32(s.fd), Events: events}}
		n, err := unix.Poll(pfd, int(min(left, time.Minute).Milliseconds())+1)
		if err == unix.EINTR || (err == nil && n == 0) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("poll: %w", err)
		}
		return true, nil
	}
}

func newArchiveWriter(w io.Writer, root string) *archiveWriter {
	bw := bufio.NewWriterSize(w, 1<<20)
	return &archiveWriter{root: root, bw: bw, tw: tar.NewWriter(bw), dirs: map[string]bool{".": true}, at: time.Now()}
}

// partSuffix names the parts of a streamed file: NAME.part00000000, ...
const partSuffix = ".part"

// partMin is the least a part carries but the last: the small frames
// of a well-compressed image are gathered, so that headers stay a
// small share of the archive.
const partMin = 1 << 20

// archiveName returns the name in the archive of the file at path,
// which is below the checkpoint directory, perhaps inside a staging
// directory of the dump's (images.PartialPrefix) that the committed
// checkpoint does not have.
func (a *archiveWriter) archiveName(path string) (string, error) {
	rel, err := filepath.Rel(a.root, path)
	if err != nil || !filepath.IsLocal(rel) {
		return "", fmt.Errorf("%s is outside the streamed checkpoint %s", path, a.root)
	}
	var keep []string
	for _, c := range strings.Split(filepath.ToSlash(rel), "/") {
		if !strings.HasPrefix(c, images.PartialPrefix) {
			keep = append(keep, c)
		}
	}
	return strings.Join(keep, "/"), nil
}

// dirLocked adds directory d and those above it that are not in the
// archive yet: a reader accepts a file only in a directory it made.
//
// Preconditions: a.mu held.
func (a *archiveWriter) dirLocked(d string) error {
	if a.dirs[d] {
		return nil
	}
	if err := a.dirLocked(filepath.Dir(d)); err != nil {
		return err
	}
	a.dirs[d] = true
	return a.headerLocked(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o700})
}

// Preconditions: a.mu held.
func (a *archiveWriter) headerLocked(h *tar.Header) error {
	if a.err != nil {
		return a.err
	}
	h.ModTime = a.at
	if err := a.tw.WriteHeader(h); err != nil {
		a.err = stdoutError(err)
	}
	return a.err
}

// Preconditions: a.mu held.
func (a *archiveWriter) writeLocked(b []byte) error {
	if a.err != nil {
		return a.err
	}
	if _, err := a.tw.Write(b); err != nil {
		a.err = stdoutError(err)
	}
	return a.err
}

// stdoutError names stdout in err, which names /dev/stdout or nothing.
func stdoutError(err error) error {
	if pe, ok := err.(*fs.PathError); ok {
		err = pe.Err
	}
	return fmt.Errorf("stdout: %w", err)
}

// BeginPages implements criu.PageStreamer.
func (a *archiveWriter) BeginPages(path string) (criu.PageStreamFile, error) {
	name, err := a.archiveName(path)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	if err := a.dirLocked(filepath.Dir(name)); err != nil {
		a.mu.Unlock()
		return nil, err
	}
	return &streamedFile{a: a, name: name}, nil
}

// streamedFile is a pages image going out in parts; it holds a.mu.
type streamedFile struct {
	a     *archiveWriter
	name  string
	parts int
	held  []byte // small pieces gathered into one part
	done  bool
}

func (f *streamedFile) part(b []byte) error {
	a := f.a
	if err := a.headerLocked(&tar.Header{Name: fmt.Sprintf("%s%s%08d", f.name, partSuffix, f.parts), Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(b))}); err != nil {
		return err
	}
	f.parts++
	return a.writeLocked(b)
}

// Write implements criu.PageStreamFile.
func (f *streamedFile) Write(b []byte) error {
	if len(f.held) > 0 && len(f.held)+len(b) > partMin {
		if err := f.part(f.held); err != nil {
			return err
		}
		f.held = f.held[:0]
	}
	if len(f.held) == 0 && len(b) >= partMin {
		return f.part(b) // a raw image's 1 MiB buffers go out as they are
	}
	if f.held == nil {
		f.held = make([]byte, 0, partMin)
	}
	f.held = append(f.held, b...)
	return f.a.err
}

// End implements criu.PageStreamFile. An image with no pages is sent
// as an empty file of its own name.
func (f *streamedFile) End(size int64, crc uint32) error {
	defer f.unlock()
	if len(f.held) > 0 {
		if err := f.part(f.held); err != nil {
			return err
		}
	}
	if f.parts == 0 {
		return f.a.headerLocked(&tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: 0o600})
	}
	return f.a.err
}

// Abort implements criu.PageStreamFile: the archive is broken from here
// on (the dump fails, and the restore finds no end and no manifest).
func (f *streamedFile) Abort() {
	if f.a.err == nil {
		f.a.err = errors.New("stdout: the archive was abandoned")
	}
	f.unlock()
}

func (f *streamedFile) unlock() {
	if !f.done {
		f.done = true
		f.held = nil
		f.a.mu.Unlock()
	}
}

// finish sends the files of the complete checkpoint in dir (the root)
// that are not in the archive yet, the manifest last, and ends the
// archive. A link or another kind of file fails it (a checkpoint that
// links to a pre-dump is not self-contained).
func (a *archiveWriter) finish() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return a.err
	}
	dir := a.root
	var names []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != dir {
			names = append(names, path)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	// Sorted, but the checkpoint's own manifest goes last: a reader
	// has every file before the list of them.
	manifest := filepath.Join(dir, images.ManifestFile)
	sort.Slice(names, func(i, j int) bool {
		if (names[i] == manifest) != (names[j] == manifest) {
			return names[j] == manifest
		}
		return names[i] < names[j]
	})
	for _, path := range names {
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		fi, err := os.Lstat(path)
		if err != nil {
			return fmt.Errorf("checkpoint %s: %w", dir, err)
		}
		switch {
		case fi.IsDir():
			if err := a.dirLocked(rel); err != nil {
				return err
			}
		case fi.Mode().IsRegular():
			if err := a.headerLocked(&tar.Header{Name: rel, Typeflag: tar.TypeReg, Size: fi.Size(), Mode: 0o600}); err != nil {
				return err
			}
			if err := copyFileTo(a.tw, path, fi.Size()); err != nil {
				return err
			}
		default:
			return fmt.Errorf("checkpoint %s: %s is a %v, which a streamed checkpoint cannot carry (a link to a pre-dump: stream a dump without --prev-images-dir)", dir, rel, fi.Mode().Type())
		}
	}
	if err := a.tw.Close(); err != nil {
		return fmt.Errorf("stdout: %w", err)
	}
	if err := a.bw.Flush(); err != nil {
		return fmt.Errorf("stdout: %w", err)
	}
	return nil
}

// waitTaken returns once the reader of f, a pipe or a socket, has taken
// every byte written to it, and fails if the reader goes away first or
// takes nothing for stall. A write to a pipe returns once the bytes are
// in the pipe's buffer (64 KiB or more), not once they are read: a
// reader that dies with the archive's end still in the buffer never got
// it, and the tree must not be killed for a checkpoint nobody has. A
// regular file has what was written as soon as write returns.
func waitTaken(f *os.File, stall time.Duration) error {
	fd := int(f.Fd())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	// FIONREAD (TIOCINQ in x/sys, the same number: asm-generic/ioctls.h)
	// on either end of a pipe counts the bytes in its buffer;
	// SIOCOUTQ counts those a socket has not delivered (unix) or had
	// acknowledged (TCP).
	var req uint
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO:
		req = unix.TIOCINQ
	case unix.S_IFSOCK:
		req = unix.SIOCOUTQ
	default:
		return nil
	}
	last, lastAt := -1, time.Now()
	for {
		n, err := unix.IoctlGetInt(fd, req)
		if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
			return nil // a kind of socket that does not count: as a file
		}
		if err != nil {
			return fmt.Errorf("bytes the reader has not taken: %w", err)
		}
		if n == 0 {
			return nil
		}
		// POLLERR on a pipe's write end: no reader is left. A socket
		// whose peer closed reports POLLHUP or POLLERR.
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		if _, err := unix.Poll(pfd, 0); err == nil && pfd[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0 {
			return fmt.Errorf("the reader went away with %d bytes of the archive not taken: %w", n, unix.EPIPE)
		}
		if n != last {
			last, lastAt = n, time.Now()
		} else if time.Since(lastAt) > stall {
			return fmt.Errorf("the reader took nothing for %v with %d bytes of the archive not taken: %w", stall, n, os.ErrDeadlineExceeded)
		}
		time.Sleep(time.Millisecond)
	}
}

func copyFileTo(w io.Writer, path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(w, io.LimitReader(f, size))
	if err == nil && n != size {
		err = fmt.Errorf("%s: %d bytes, expected %d: changed while streamed", path, n, size)
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", filepath.Base(path), err)
	}
	return nil
}

// errBadArchive is wrapped by every refusal of readArchive.
var errBadArchive = errors.New("not a checkpoint archive ctcr accepts")

// readArchive unpacks the tar archive r into dir, which must be empty
// and private. It accepts only regular files and directories with plain
// relative names, creates every file O_EXCL|O_NOFOLLOW (nothing in dir
// is a link, so nothing is written through one), and stops at the first
// entry that would not fit in the file system or the limits above. The
// parts of a streamed file (NAME.part00000000, NAME.part00000001, ...,
// one after the other) are joined into NAME.
func readArchive(r io.Reader, dir string) error {
	br := bufio.NewReaderSize(r, 1<<20)
	tr := tar.NewReader(br)
	dirs := map[string]bool{".": true}
	files, parts := 0, 0
	bad := func(name, why string) error {
		return fmt.Errorf("stdin: entry %q: %s: %w", name, why, errBadArchive)
	}
	// The file the parts go to, open while its parts come.
	var joined *os.File
	var joinedName string
	nextPart := 0
	endJoined := func() error {
		if joined == nil {
			return nil
		}
		err := joined.Close()
		joined = nil
		if err != nil {
			return fmt.Errorf("stdin: entry %q: %w", joinedName, err)
		}
		return nil
	}
	defer func() {
		if joined != nil {
			joined.Close()
		}
	}()
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("stdin: the archive ends early (truncated): %w", errBadArchive)
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("stdin: %w", err) // a stalled writer, not a bad archive
			}
			return fmt.Errorf("stdin: %v: %w", err, errBadArchive)
		}
		name := strings.TrimSuffix(h.Name, "/")
		if len(name) > maxStreamName || !filepath.IsLocal(name) || name != filepath.Clean(name) || strings.ContainsRune(name, 0) || strings.Count(name, "/") >= maxStreamDepth {
			return bad(h.Name, "not a plain relative name")
		}
		base, part, isPart := partOf(name)
		if isPart && h.Typeflag == tar.TypeReg {
			if parts++; parts > maxStreamParts {
				return fmt.Errorf("stdin: more than %d parts of streamed files: %w", maxStreamParts, errBadArchive)
			}
		} else if files++; files > maxStreamFiles {
			return fmt.Errorf("stdin: more than %d entries: %w", maxStreamFiles, errBadArchive)
		}
		if joined != nil && (!isPart || base != joinedName || part != nextPart) {
			if isPart && base == joinedName {
				return bad(h.Name, fmt.Sprintf("part %d of %q where part %d was due", part, base, nextPart))
			}
			if err := endJoined(); err != nil {
				return err
			}
		}
		parent := filepath.Dir(name)
		if !dirs[parent] {
			return bad(h.Name, "its directory is not an earlier entry")
		}
		path := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(path, 0o700); err != nil {
				return bad(h.Name, err.Error())
			}
			dirs[name] = true
		case tar.TypeReg:
			if h.Size < 0 {
				return bad(h.Name, "negative size")
			}
			var st unix.Statfs_t
			if err := unix.Statfs(dir, &st); err == nil && uint64(h.Size) > st.Bavail*uint64(st.Bsize) {
				return fmt.Errorf("stdin: entry %q: %d bytes, more than the %d free in %s: %w", h.Name, h.Size, st.Bavail*uint64(st.Bsize), dir, unix.ENOSPC)
			}
			if !isPart {
				if err := writeEntry(tr, path, h.Size); err != nil {
					return fmt.Errorf("stdin: entry %q: %w", h.Name, err)
				}
				break
			}
			if joined == nil {
				if part != 0 {
					return bad(h.Name, fmt.Sprintf("part %d of %q before its part 0", part, base))
				}
				f, err := os.OpenFile(filepath.Join(dir, base), os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
				if err != nil {
					return bad(h.Name, err.Error())
				}
				joined, joinedName, nextPart = f, base, 0
			}
			if err := copyEntry(joined, tr, h.Size); err != nil {
				return fmt.Errorf("stdin: entry %q: %w", h.Name, err)
			}
			nextPart++
		default:
			return bad(h.Name, fmt.Sprintf("type %q: only regular files and directories are accepted", h.Typeflag))
		}
	}
	if err := endJoined(); err != nil {
		return err
	}
	if files == 0 && parts == 0 {
		return fmt.Errorf("stdin: empty archive: %w", errBadArchive)
	}
	// Read to the end of stdin: a dumper writes the archive before it
	// kills its tree and ends after, so on one host (dump -D - |
	// restore -D -) the tree's PIDs are being freed once stdin ends.
	// Only zeros (a tar writer's padding) may follow the archive. A
	// writer that keeps stdin open is waited for drainWait at most.
	done := make(chan error, 1)
	go func() { done <- drainZeros(br) }()
	select {
	case err := <-done:
		return err
	case <-time.After(drainWait):
		return nil
	}
}

// maxStreamParts bounds the parts of streamed files in an archive: 4 TiB
// of raw pages in 1 MiB parts.
const maxStreamParts = 1 << 22

// partOf returns the file and the index of part name
// (NAME.partNNNNNNNN), if it is one.
func partOf(name string) (string, int, bool) {
	i := strings.LastIndex(name, partSuffix)
	if i <= 0 || len(name)-i-len(partSuffix) != 8 {
		return "", 0, false
	}
	n, err := strconv.Atoi(name[i+len(partSuffix):])
	if err != nil || n < 0 || strings.ContainsAny(name[i+len(partSuffix):], "+-") {
		return "", 0, false
	}
	return name[:i], n, true
}

// drainWait bounds the wait for the end of stdin after the archive.
const drainWait = 30 * time.Second

// drainZeros reads r to its end, failing on anything but zeros.
func drainZeros(r io.Reader) error {
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		for _, c := range buf[:n] {
			if c != 0 {
				return fmt.Errorf("stdin: data after the end of the archive: %w", errBadArchive)
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("stdin: %w", err)
		}
	}
}

func writeEntry(r io.Reader, path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	err = copyEntry(f, r, size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// copyEntry appends the size bytes of an entry from r to f.
func copyEntry(f *os.File, r io.Reader, size int64) error {
	n, err := io.Copy(f, r)
	if err == nil && n != size {
		err = fmt.Errorf("%d bytes of %d", n, size)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = fmt.Errorf("the archive ends inside it (truncated): %w", errBadArchive)
	}
	return err
}

// receiveCheckpoint unpacks the checkpoint on stdin into a private
// directory and verifies it against its manifest, which it must have: a
// stream has no other proof that it arrived whole. It returns the
// directory and its remover.
func receiveCheckpoint(stdin *os.File) (string, func(), error) {
	staging, cleanup, err := streamStaging("restore")
	if err != nil {
		return "", nil, err
	}
	// Below the staging directory, beside its owner lock.
	dir := filepath.Join(staging, "checkpoint")
	if err := os.Mkdir(dir, 0o700); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("directory for the streamed checkpoint: %w", err)
	}
	in, closeIn := withStall(stdin)
	defer closeIn()
	if err := readArchive(in, dir); err != nil {
		cleanup()
		return "", nil, err
	}
	if _, err := images.VerifyManifest(dir); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("checkpoint from stdin: %w", err)
	}
	return dir, cleanup, nil
}

// streamOut sets up a dump or checkpoint (what) to stream to stdout (-D
// -): stdout must not be a terminal; the checkpoint is made in a
// private staging directory (dir); SIGPIPE is ignored, so that a broken
// pipe fails a write with EPIPE and the tree, still held, runs on (Go
// kills a program that writes to a broken pipe on fd 1 otherwise); a
// write that stalls fails after its deadline; the pages go out as they
// are copied, and afterCommit sends the rest once the checkpoint is
// complete. cleanup undoes it all.
func streamOut(what string) (dir string, afterCommit func() error, cleanup func(), err error) {
	if isTerminal(os.Stdout) {
		return "", nil, nil, usageError{fmt.Errorf("-D - writes the checkpoint, a tar archive, to stdout, which is a terminal: redirect it to a file or a pipe")}
	}
	staging, dropStaging, err := streamStaging(what)
	if err != nil {
		return "", nil, nil, err
	}
	dir = filepath.Join(staging, "checkpoint")
	signal.Ignore(unix.SIGPIPE)
	sw, closeOut := withStall(os.Stdout)
	aw := newArchiveWriter(sw, dir)
	stopPages := criu.StreamPagesUnder(dir, aw)
	afterCommit = func() error {
		if err := aw.finish(); err != nil {
			return fmt.Errorf("stream to stdout: %w", err)
		}
		if err := waitTaken(os.Stdout, streamStall()); err != nil {
			return fmt.Errorf("stream to stdout: %w", err)
		}
		return nil
	}
	return dir, afterCommit, func() { stopPages(); closeOut(); dropStaging() }, nil
}
