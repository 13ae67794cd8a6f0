package images

// The manifest: ctcr's own file, not CRIU's, written into a checkpoint
// directory after every other file of it and read before any of them.
// It lists each file with its size and CRC32C (Castagnoli, which Go
// computes with the CPU's crc32 instruction), so that a reader finds a
// missing, truncated or damaged image before it acts on it. CRIU ignores
// the file; crit never sees it (it is JSON, not an image).
//
//	DIR/manifest.json
//	{
//	  "format": "ctcr-manifest",
//	  "version": 1,
//	  "checksum": "crc32c",
//	  "files": [
//	    {"name": "core-1.img",   "size": 1391,    "crc32c": "5e0d3c8a"},
//	    {"name": "pages-1.img",  "size": 1048576, "crc32c": "0b6fa1e2"},
//	    ...
//	    {"name": "pre-copy/manifest.json", "size": 612, "crc32c": "..."},
//	    {"name": "parent", "link": "../pre-dump-1"}
//	  ]
//	}
//
// Entries are sorted by name. A regular file is listed by name, size and
// checksum. A subdirectory (the pre-copy's parent image, a container
// bundle's images/) has a manifest of its own, and the parent lists only
// that manifest: its checksum covers the subdirectory's list, and
// verifying the parent verifies the subdirectory. A symbolic link (the
// link to a pre-dump's images) is listed with its target; the directory
// it leads to is verified by its own manifest, so a chain of pre-dumps is
// verified link by link.
//
// The checksums of the big files are computed while they are written,
// from the buffer just filled (RecordSum); WriteManifest reads only the
// files nobody recorded.

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// ManifestFile is the name of the manifest in a checkpoint directory.
const ManifestFile = "manifest.json"

// runtimeFiles are files a container runtime adds to the image
// directory after CRIU (ctcr) wrote it, which ctcr never reads: runc's
// record of the container's stdio (libcontainer/criu_linux.go).
var runtimeFiles = map[string]bool{"descriptors.json": true}

// rewrittenFiles are files ctcr writes again after the checkpoint was
// committed, which restore never needs: a container bundle's stats.json,
// first written with the bundle before the tasks are ended, then with
// the final figures. Listing them would leave a restorable checkpoint
// refused as damaged if ctcr died between the new file and the new
// manifest; they are left out of the manifest and never checked.
var rewrittenFiles = map[string]bool{"stats.json": true}

const (
	manifestFormat  = "ctcr-manifest"
	manifestVersion = 1
	// maxManifestSize bounds what VerifyManifest reads: a manifest of
	// 100,000 files is some 7 MB.
	maxManifestSize = 64 << 20
	// maxManifestDepth bounds subdirectories and links followed (and a
	// loop of links).
	maxManifestDepth = 64
)

// ErrNoManifest is wrapped by VerifyManifest's error for a directory
// without a manifest: a CRIU checkpoint or one of an older ctcr. Callers
// go on with a warning.
var ErrNoManifest = errors.New("no manifest")

// Castagnoli is the CRC32C table; crc32 uses the CPU's instruction for it.
var Castagnoli = crc32.MakeTable(crc32.Castagnoli)

type manifest struct {
	Format   string          `json:"format"`
	Version  int             `json:"version"`
	Checksum string          `json:"checksum"`
	Files    []manifestEntry `json:"files"`
}

type manifestEntry struct {
	Name   string `json:"name"`
	Size   int64  `json:"size,omitempty"`
	CRC32C string `json:"crc32c,omitempty"` // 8 hex digits
	Link   string `json:"link,omitempty"`   // a symbolic link's target
}

// fileKey names a file whatever it is renamed to.
type fileKey struct{ dev, ino uint64 }

// fileSum is a checksum recorded for a file as it was at a size and a
// change time; any later write changes the change time.
type fileSum struct {
	size  int64
	ctime unix.Timespec
	mtime unix.Timespec
	crc   uint32
}

var sums = struct {
	sync.Mutex
	m map[fileKey]fileSum // guarded by the mutex
}{m: map[fileKey]fileSum{}}

// RecordSum records crc as the CRC32C of the whole of f, which the caller
// has just written, so that WriteManifest need not read it again. It
// holds for the file as it is now: a later write, rename aside, makes
// WriteManifest read the file. A writer that rewrites a file in place
// within one clock tick must call ForgetSum first.
func RecordSum(f *os.File, crc uint32) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("%s: %w", f.Name(), err)
	}
	sums.Lock()
	sums.m[fileKey{st.Dev, st.Ino}] = fileSum{size: st.Size, ctime: st.Ctim, mtime: st.Mtim, crc: crc}
	sums.Unlock()
	return nil
}

// RecordFileSum reads the file at path and records its checksum, for a
// file written in place whose checksum is best taken before the moment
// WriteManifest runs.
func RecordFileSum(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	_, crc, err := checksumReader(f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	sums.Lock()
	sums.m[fileKey{st.Dev, st.Ino}] = fileSum{size: st.Size, ctime: st.Ctim, mtime: st.Mtim, crc: crc}
	sums.Unlock()
	return nil
}

// streamed holds the files of checkpoints being streamed (dump -D -)
// that went out whole without ever being on disk: a pages image sent
// while it was copied. WriteManifest lists them as if they were there,
// keyed by their directory's path.
var streamed = struct {
	sync.Mutex
	m map[string][]manifestEntry // guarded by the mutex
}{m: map[string][]manifestEntry{}}

// RecordStreamed records that the file at path, which is not on disk,
// was sent whole with size bytes of CRC32C crc: the manifest of its
// directory lists it.
func RecordStreamed(path string, size int64, crc uint32) {
	dir, name := filepath.Dir(path), filepath.Base(path)
	streamed.Lock()
	streamed.m[dir] = append(streamed.m[dir], manifestEntry{Name: name, Size: size, CRC32C: fmt.Sprintf("%08x", crc)})
	streamed.Unlock()
}

// ForgetStreamed drops what RecordStreamed recorded for directories
// under root (root included), once the stream is over.
func ForgetStreamed(root string) {
	streamed.Lock()
	defer streamed.Unlock()
	for d := range streamed.m {
		if d == root || strings.HasPrefix(d, root+"/") {
			delete(streamed.m, d)
		}
	}
}

func streamedIn(dir string) []manifestEntry {
	streamed.Lock()
	defer streamed.Unlock()
	return append([]manifestEntry(nil), streamed.m[filepath.Clean(dir)]...)
}

// ForgetSum drops the checksum recorded for f, before f is written in
// place.
func ForgetSum(f *os.File) {
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil {
		return
	}
	sums.Lock()
	delete(sums.m, fileKey{st.Dev, st.Ino})
	sums.Unlock()
}

func recordedSum(st *unix.Stat_t) (uint32, bool) {
	sums.Lock()
	defer sums.Unlock()
	s, ok := sums.m[fileKey{st.Dev, st.Ino}]
	if !ok || s.size != st.Size || s.ctime != st.Ctim || s.mtime != st.Mtim {
		return 0, false
	}
	return s.crc, true
}

// sumBufSize is what checksumFile reads at a time.
const sumBufSize = 1 << 20

var sumBufs = sync.Pool{New: func() any { b := make([]byte, sumBufSize); return &b }}

// checksumFile returns the size and CRC32C of the regular file at path,
// read through a small buffer (a pages image may be gigabytes), without
// following a link.
func checksumFile(path string) (int64, uint32, error) {
	// Opened raw and wrapped with os.NewFile (one fcntl): os.OpenFile
	// adds an fstat, four fcntl and an epoll_ctl per image, of which a
	// restore verifies some 7 per task.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	for err == unix.EINTR {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return 0, 0, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	return checksumReader(f)
}

func checksumReader(f io.Reader) (int64, uint32, error) {
	bp := sumBufs.Get().(*[]byte)
	defer sumBufs.Put(bp)
	buf := *bp
	var size int64
	var crc uint32
	for {
		n, err := f.Read(buf)
		crc = crc32.Update(crc, Castagnoli, buf[:n])
		size += int64(n)
		if err == io.EOF {
			return size, crc, nil
		}
		if err != nil {
			return size, crc, err
		}
	}
}

// WriteManifest writes dir/manifest.json listing every file of dir, and
// first a manifest into each subdirectory that has none. Checksums
// recorded with RecordSum are used as they are; other files are read.
// Files whose names start with a dot (staging directories, temporary
// files) are left out. The manifest is written under a temporary name
// and renamed, so it is either whole or absent; it is not fsynced here
// (Staging.Commit syncs what it publishes).
func WriteManifest(dir string) error {
	return writeManifest(dir, 0)
}

func writeManifest(dir string, depth int) error {
	if depth > maxManifestDepth {
		return fmt.Errorf("%s: subdirectories nested more than %d deep", dir, maxManifestDepth)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("manifest of %s: %w", dir, err)
	}
	m := manifest{Format: manifestFormat, Version: manifestVersion, Checksum: "crc32c", Files: []manifestEntry{}}
	for _, e := range ents {
		name := e.Name()
		if name == ManifestFile || strings.HasPrefix(name, ".") || rewrittenFiles[name] {
			continue
		}
		path := filepath.Join(dir, name)
		switch t := e.Type(); {
		case t&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return fmt.Errorf("manifest of %s: %w", dir, err)
			}
			m.Files = append(m.Files, manifestEntry{Name: name, Link: target})
			continue
		case t.IsDir():
			if _, err := os.Lstat(filepath.Join(path, ManifestFile)); errors.Is(err, fs.ErrNotExist) {
				if err := writeManifest(path, depth+1); err != nil {
					return err
				}
			}
			name = filepath.Join(name, ManifestFile)
			path = filepath.Join(dir, name)
		case !t.IsRegular():
			return fmt.Errorf("manifest of %s: %s is neither a file, a directory nor a link", dir, name)
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return fmt.Errorf("manifest of %s: %w", dir, err)
		}
		crc, ok := recordedSum(&st)
		size := st.Size
		if !ok {
			if size, crc, err = checksumFile(path); err != nil {
				return fmt.Errorf("manifest of %s: %w", dir, err)
			}
		}
		m.Files = append(m.Files, manifestEntry{Name: name, Size: size, CRC32C: fmt.Sprintf("%08x", crc)})
	}
	m.Files = append(m.Files, streamedIn(dir)...)
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Name < m.Files[j].Name })
	return writeManifestFile(dir, &m)
}

// writeManifestFile writes m as dir/manifest.json, under a temporary
// name first.
func writeManifestFile(dir string, m *manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".manifest-*")
	if err != nil {
		return WriteError(dir, ManifestFile, err)
	}
	_, err = tmp.Write(append(b, '\n'))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(dir, ManifestFile))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return WriteError(dir, ManifestFile, err)
	}
	return nil
}

// UpdateManifest adds the files names of dir, written after the
// checkpoint was committed (a stats file whose timings include the
// commit), to dir/manifest.json, or updates their entries; the others
// stay as they are, unread. The manifest is replaced atomically.
func UpdateManifest(dir string, names ...string) error {
	mpath := filepath.Join(dir, ManifestFile)
	b, err := os.ReadFile(mpath)
	if err != nil {
		return fmt.Errorf("update manifest: %w", err)
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return &ManifestError{Path: mpath, What: fmt.Sprintf("damaged: %v", err)}
	}
	for _, n := range names {
		if checkEntryName(n) != nil || strings.Contains(n, "/") {
			return fmt.Errorf("update manifest of %s: bad file name %q", dir, n)
		}
		size, crc, err := checksumFile(filepath.Join(dir, n))
		if err != nil {
			return fmt.Errorf("update manifest of %s: %w", dir, err)
		}
		e := manifestEntry{Name: n, Size: size, CRC32C: fmt.Sprintf("%08x", crc)}
		found := false
		for i := range m.Files {
			if m.Files[i].Name == n {
				m.Files[i], found = e, true
			}
		}
		if !found {
			m.Files = append(m.Files, e)
		}
	}
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Name < m.Files[j].Name })
	return writeManifestFile(dir, &m)
}

// ManifestError names a file of a checkpoint that does not match its
// manifest. It wraps ErrCorrupt.
type ManifestError struct {
	Path string // the file, or the manifest itself
	What string // missing, truncated, damaged, ...
}

func (e *ManifestError) Error() string {
	return fmt.Sprintf("%s: %s (%s)", e.Path, e.What, ErrCorrupt)
}

func (e *ManifestError) Unwrap() error { return ErrCorrupt }

// VerifyManifest checks every file of dir against dir/manifest.json:
// each listed file must be there with its size and checksum, each listed
// link with its target, and no image (*.img, *.json, a link) may be there
// that the manifest does not list. Subdirectories are verified by their
// own manifests, and the directories links lead to (a pre-dump chain) by
// theirs. It returns warnings for linked directories without a manifest;
// a dir without one is an error wrapping ErrNoManifest, which a caller
// may turn into a warning. A process verifies a directory once: a second
// call for the same unchanged manifest returns at once.
func VerifyManifest(dir string) (warnings []string, err error) {
	return verifyManifest(dir, 0)
}

var verified = struct {
	sync.Mutex
	m map[string]fileSum // by directory: the manifest as it was when verified
}{m: map[string]fileSum{}}

func verifyManifest(dir string, depth int) ([]string, error) {
	if depth > maxManifestDepth {
		return nil, &ManifestError{Path: dir, What: fmt.Sprintf("more than %d nested or linked image directories (a loop of links?)", maxManifestDepth)}
	}
	mpath := filepath.Join(dir, ManifestFile)
	f, err := os.OpenFile(mpath, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w (a checkpoint of CRIU or of an older ctcr): its images cannot be checked", dir, ErrNoManifest)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", mpath, err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("%s: %w", mpath, err)
	}
	memo := fileSum{size: st.Size, ctime: st.Ctim, mtime: st.Mtim, crc: uint32(st.Ino)}
	abs, _ := filepath.Abs(dir)
	verified.Lock()
	done := verified.m[abs] == memo
	verified.Unlock()
	if done {
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(f, maxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", mpath, err)
	}
	if len(b) > maxManifestSize {
		return nil, &ManifestError{Path: mpath, What: fmt.Sprintf("over %d bytes", maxManifestSize)}
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, &ManifestError{Path: mpath, What: fmt.Sprintf("damaged: %v", err)}
	}
	if m.Format != manifestFormat || m.Version != manifestVersion || m.Checksum != "crc32c" {
		return nil, &ManifestError{Path: mpath, What: fmt.Sprintf("format %q version %d checksum %q, want %q %d %q",
			m.Format, m.Version, m.Checksum, manifestFormat, manifestVersion, "crc32c")}
	}
	listed := map[string]bool{}
	for _, e := range m.Files {
		if err := checkEntryName(e.Name); err != nil || listed[e.Name] {
			return nil, &ManifestError{Path: mpath, What: fmt.Sprintf("bad or repeated file name %q", e.Name)}
		}
		listed[e.Name] = true
	}
	if err := verifyFiles(dir, m.Files); err != nil {
		return nil, err
	}
	var warnings []string
	for _, e := range m.Files {
		if e.Link != "" {
			w, err := verifyLink(dir, e, depth)
			if err != nil {
				return nil, err
			}
			warnings = append(warnings, w...)
			continue
		}
		if sub, ok := strings.CutSuffix(e.Name, "/"+ManifestFile); ok {
			w, err := verifyManifest(filepath.Join(dir, sub), depth+1)
			if err != nil {
				return nil, err
			}
			warnings = append(warnings, w...)
		}
	}
	// An image added after the dump would be read by restore as if it
	// were the checkpoint's.
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") || n == ManifestFile || listed[n] || listed[filepath.Join(n, ManifestFile)] || runtimeFiles[n] || rewrittenFiles[n] {
			continue
		}
		if strings.HasSuffix(n, ".img") || strings.HasSuffix(n, ".img.zst") || strings.HasSuffix(n, ".json") || e.Type()&fs.ModeSymlink != 0 {
			return nil, &ManifestError{Path: filepath.Join(dir, n), What: "not in the manifest (added after the checkpoint was written)"}
		}
	}
	verified.Lock()
	verified.m[abs] = memo
	verified.Unlock()
	return warnings, nil
}

// checkEntryName accepts a file name of dir, or NAME/manifest.json of a
// subdirectory: nothing that leaves dir.
func checkEntryName(name string) error {
	first, rest, sub := strings.Cut(name, "/")
	if first == "" || first == "." || first == ".." || strings.ContainsRune(name, 0) || (sub && rest != ManifestFile) {
		return errors.New("bad name")
	}
	return nil
}

// verifyFiles checks the regular files of entries, on every CPU (a
// checkpoint of a 1 GiB process is 1 GiB to read and checksum), and
// returns the error of the first bad one in the manifest's order, so
// that every reader names the same file.
func verifyFiles(dir string, entries []manifestEntry) error {
	errs := make([]error, len(entries))
	next := make(chan int)
	var failed sync.Once
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range max(1, min(runtime.NumCPU(), 4)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if errs[i] = verifyFile(filepath.Join(dir, entries[i].Name), entries[i]); errs[i] != nil {
					failed.Do(func() { close(stop) })
				}
			}
		}()
	}
feed:
	for i, e := range entries {
		if e.Link != "" {
			continue
		}
		select {
		case next <- i:
		case <-stop:
			// Those before i may still fail; they are all handed out.
			break feed
		}
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func verifyFile(path string, e manifestEntry) error {
	want, err := strconv.ParseUint(e.CRC32C, 16, 32)
	if err != nil || len(e.CRC32C) != 8 || e.Size < 0 {
		return &ManifestError{Path: filepath.Join(filepath.Dir(path), ManifestFile), What: fmt.Sprintf("entry %q: bad size or checksum", e.Name)}
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return &ManifestError{Path: path, What: "missing"}
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return &ManifestError{Path: path, What: "not a regular file"}
	}
	switch {
	case st.Size < e.Size:
		return &ManifestError{Path: path, What: fmt.Sprintf("truncated: %d bytes, the manifest says %d", st.Size, e.Size)}
	case st.Size > e.Size:
		return &ManifestError{Path: path, What: fmt.Sprintf("%d bytes, the manifest says %d", st.Size, e.Size)}
	}
	size, crc, err := checksumFile(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if size != e.Size {
		return &ManifestError{Path: path, What: fmt.Sprintf("changed while read: %d bytes, the manifest says %d", size, e.Size)}
	}
	if crc != uint32(want) {
		return &ManifestError{Path: path, What: fmt.Sprintf("damaged: CRC32C %08x, the manifest says %08x", crc, want)}
	}
	return nil
}

// verifyLink checks a listed link and the directory it leads to.
func verifyLink(dir string, e manifestEntry, depth int) ([]string, error) {
	path := filepath.Join(dir, e.Name)
	target, err := os.Readlink(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &ManifestError{Path: path, What: "missing"}
		}
		return nil, &ManifestError{Path: path, What: fmt.Sprintf("not the link the manifest lists: %v", err)}
	}
	if target != e.Link {
		return nil, &ManifestError{Path: path, What: fmt.Sprintf("leads to %q, the manifest says %q", target, e.Link)}
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(dir, target)
	}
	fi, err := os.Stat(target)
	if err != nil || !fi.IsDir() {
		return nil, &ManifestError{Path: path, What: fmt.Sprintf("leads to %q, which is not a directory", e.Link)}
	}
	w, err := verifyManifest(target, depth+1)
	if errors.Is(err, ErrNoManifest) {
		return []string{err.Error()}, nil
	}
	return w, err
}

// WriteError says that writing file name into the checkpoint directory
// dir failed, naming the errno: "DIR: writing NAME: no space left on
// device". It keeps err for errors.Is.
func WriteError(dir, name string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err // the path is said once, by dir and name
	}
	if strings.HasPrefix(filepath.Base(dir), PartialPrefix) {
		dir = filepath.Dir(dir) // the staging directory is ctcr's business
	}
	return fmt.Errorf("%s: writing %s: %w", dir, name, err)
}
