package main

// Streaming a checkpoint (-D -): `ctcr dump -t PID -D -` writes the
// whole checkpoint to stdout as one tar archive and `ctcr restore -D -`
// reads one from stdin, so that
//
//	ctcr dump -t PID -D - | ssh host ctcr restore -D -
//
// moves a process tree. The dump is written as usual into a private
// directory (0700, under $TMPDIR or /run/ctcr), complete with its
// manifest, and sent from there; the tasks stay stopped until the last
// byte is written, so a broken pipe leaves them running as a failed dump
// does. The restore side unpacks into a private directory of its own,
// accepting only plain names (no absolute path, no "..", no link, no
// device: regular files and directories), within size limits, and
// verifies the manifest before anything is created. Both remove their
// directory when done.

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"github.com/ctcr/ctcr/internal/atomicfile"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

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

// streamStaging makes the private directory a streamed checkpoint is
// written to or unpacked into, and returns it and its remover.
func streamStaging(what string) (string, func(), error) {
	base := os.Getenv("TMPDIR")
	if base == "" {
		base = "/run/ctcr"
		if err := atomicfile.PrivateDir(base); err != nil {
			return "", nil, fmt.Errorf("%s: %w", base, err)
		}
	}
	dir, err := os.MkdirTemp(base, "ctcr-"+what+"-")
	if err != nil {
		return "", nil, fmt.Errorf("directory for the streamed checkpoint: %w", err)
	}
	// MkdirTemp makes it 0700: only root reads the images meanwhile.
	return dir, func() { os.RemoveAll(dir) }, nil
}

// writeArchive writes the checkpoint directory dir to w as a tar
// archive: its directories and regular files, names relative to dir,
// in a fixed order. A link or another kind of file fails it (a
// checkpoint that links to a pre-dump is not self-contained).
func writeArchive(w io.Writer, dir string) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	tw := tar.NewWriter(bw)
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
	sort.Strings(names)
	for _, path := range names {
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return fmt.Errorf("checkpoint %s: %w", dir, err)
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: fi.ModTime(), Format: tar.FormatPAX}
		switch {
		case fi.IsDir():
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, h.Name+"/", 0o700
		case fi.Mode().IsRegular():
			h.Typeflag, h.Size, h.Mode = tar.TypeReg, fi.Size(), 0o600
		default:
			return fmt.Errorf("checkpoint %s: %s is a %v, which a streamed checkpoint cannot carry (a link to a pre-dump: stream a dump without --prev-images-dir)", dir, rel, fi.Mode().Type())
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("stdout: %w", err)
		}
		if h.Typeflag == tar.TypeReg {
			if err := copyFileTo(tw, path, h.Size); err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("stdout: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("stdout: %w", err)
	}
	return nil
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
// entry that would not fit in the file system or the limits above.
func readArchive(r io.Reader, dir string) error {
	br := bufio.NewReaderSize(r, 1<<20)
	tr := tar.NewReader(br)
	dirs := map[string]bool{".": true}
	files := 0
	bad := func(name, why string) error {
		return fmt.Errorf("stdin: entry %q: %s: %w", name, why, errBadArchive)
	}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("stdin: the archive ends early (truncated): %w", errBadArchive)
			}
			return fmt.Errorf("stdin: %v: %w", err, errBadArchive)
		}
		if files++; files > maxStreamFiles {
			return fmt.Errorf("stdin: more than %d entries: %w", maxStreamFiles, errBadArchive)
		}
		name := strings.TrimSuffix(h.Name, "/")
		if len(name) > maxStreamName || !filepath.IsLocal(name) || name != filepath.Clean(name) || strings.ContainsRune(name, 0) || strings.Count(name, "/") >= maxStreamDepth {
			return bad(h.Name, "not a plain relative name")
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
			if err := writeEntry(tr, path, h.Size); err != nil {
				return fmt.Errorf("stdin: entry %q: %w", h.Name, err)
			}
		default:
			return bad(h.Name, fmt.Sprintf("type %q: only regular files and directories are accepted", h.Typeflag))
		}
	}
	if files == 0 {
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
	n, err := io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
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
	dir, cleanup, err := streamStaging("restore")
	if err != nil {
		return "", nil, err
	}
	if err := readArchive(stdin, dir); err != nil {
		cleanup()
		return "", nil, err
	}
	if _, err := images.VerifyManifest(dir); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("checkpoint from stdin: %w", err)
	}
	return dir, cleanup, nil
}
