package criu

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/memfd"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
)

// memfds are files made by memfd_create. As in CRIU (criu/memfd.c,
// criu/shmem.c), each open file description has its entry in files.img
// (flags, position, inode id); each memfd inode has one entry in
// memfd.img (name, owner, size, seals), and its content is a shared
// memory object: pagemap-shmem-SHMID.img lists the pages that hold data
// (holes are not saved) and pages-N.img holds them.
//
// A mapping of a memfd (classifyVMA) has a memfd file entry of its own
// (VMA_AREA_MEMFD, shmid = that entry's id) on the same inode entry, so
// the content is saved once however many fds and mappings reach it.
//
// memfd.img of this version has no field for the inode's mode, which a
// task may have changed with fchmod (memfd_create makes it 0777): it is
// kept beside the images, by inode id,
//
//	memfd.json: {"INODE ID": {"mode": MODE}}
//
// Restore creates the inode once with memfd_create, fills it, seals it,
// and opens every file description of it again through /proc/self/fd,
// with its own flags and position; mappings map it from such a file, so
// a MAP_SHARED mapping stays shared with the task's fds of the memfd.
// The first read-write fd is the one exception: it gets the description
// memfd_create made. The kernel counts a file's writers at open
// (i_writecount) and refuses to execute a file that has any (ETXTBSY),
// but memfd_create's own description is not counted: a task may execute
// its memfd through the fd memfd_create gave it, and a reopened
// read-write fd in its place would make that fail.
var memfds = fileKind{
	name:   "memfd",
	fdType: fdinfo.FdTypes_MEMFD,
	dump:   dumpMemfd,
	open:   openMemfdFd,
	fixup:  restoreFileLocks,
	finish: writeMemfdModes,
}

const memfdFile = "memfd.json"

// memfdInodeExtra is what memfd.json keeps of one memfd inode.
type memfdInodeExtra struct {
	Mode uint32 `json:"mode"` // permission bits, 07777
}

// maxMemfdSize caps the content of one memfd kept in the images: it is
// held in memory while the dump runs.
const maxMemfdSize = 1 << 30

// memfdPagesBase numbers the pages images of memfds above those of the
// tasks (1..number of tasks).
const memfdPagesBase = 1 << 20

// pagemapShmem is CRIU's SHMEM_PAGEMAP image: a pagemap (same magic) of
// one shared memory object, whose vaddr are offsets in the object.
func pagemapShmem(shmid uint64) images.Kind {
	return images.Kind{Name: fmt.Sprintf("PAGEMAP shmem %d", shmid), File: fmt.Sprintf("pagemap-shmem-%d.img", shmid), Magic: images.Pagemap.Magic, Prefix: images.PrefixCommon}
}

func pagesImage(id uint32) images.Kind {
	return images.Kind{Name: fmt.Sprintf("PAGES %d", id), File: fmt.Sprintf("pages-%d.img", id), Prefix: images.PrefixRaw}
}

// memfdDumpState is what a dump knows of memfd inodes: inode id by
// (dev, ino).
type memfdDumpState struct {
	ids   map[[2]uint64]uint32
	extra map[string]memfdInodeExtra
}

func isMemfd(d *fdDump) bool {
	return strings.HasPrefix(d.link, "/memfd:") && strings.HasSuffix(d.link, " (deleted)") &&
		d.st.Mode&unix.S_IFMT == unix.S_IFREG && d.st.Nlink == 0
}

func memfdState(t *fileTable) *memfdDumpState {
	return t.kindState("memfd", func() any { return &memfdDumpState{ids: map[[2]uint64]uint32{}, extra: map[string]memfdInodeExtra{}} }).(*memfdDumpState)
}

// inodeID returns the memfd.img id of the memfd src reaches, dumping the
// inode the first time: an fd and a mapping of one memfd share it.
func (st *memfdDumpState) inodeID(t *fileTable, src procFile, name string) (uint32, error) {
	key := [2]uint64{src.st.Dev, src.st.Ino}
	if id, ok := st.ids[key]; ok {
		return id, nil
	}
	id := uint32(len(st.ids) + 1)
	if err := dumpMemfdInode(t, src, name, id); err != nil {
		return 0, err
	}
	st.ids[key] = id
	st.extra[strconv.Itoa(int(id))] = memfdInodeExtra{Mode: src.st.Mode & 0o7777}
	return id, nil
}

func dumpMemfd(d *fdDump) (*fdinfo.FileEntry, error) {
	if !isMemfd(d) {
		return nil, nil
	}
	inodeID, err := memfdState(d.files).inodeID(d.files, d.procFile(), memfdName(d.link))
	if err != nil {
		return nil, err
	}
	id := d.files.nextID()
	return &fdinfo.FileEntry{Id: proto.Uint32(id), Memfd: &memfd.MemfdFileEntry{
		Id: proto.Uint32(id), Flags: proto.Uint32(d.flags), Pos: proto.Uint64(uint64(d.info.Pos)), Fown: zeroFown(), InodeId: proto.Uint32(inodeID),
	}}, nil
}

// writeMemfdModes puts memfd.json beside memfd.img.
func writeMemfdModes(t *fileTable) error {
	st, ok := t.kinds["memfd"].(*memfdDumpState)
	if !ok || len(st.extra) == 0 {
		return nil
	}
	b, err := json.Marshal(st.extra)
	if err != nil {
		return err
	}
	t.sidecars = append(t.sidecars, sidecar{name: memfdFile, data: b})
	return nil
}

// memfdMode returns the mode memfd.json keeps for inode id, or false for
// images without it.
func (r *fileRestore) memfdMode(id uint32) (uint32, bool, error) {
	all, ok := r.state["memfd.json"].(map[string]memfdInodeExtra)
	if !ok {
		all = map[string]memfdInodeExtra{}
		b, err := os.ReadFile(r.cp.dir.Path(memfdFile))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, false, err
		}
		if err == nil {
			if err := json.Unmarshal(b, &all); err != nil {
				return 0, false, corruptf(memfdFile, "%v", err)
			}
		}
		r.state["memfd.json"] = all
	}
	x, ok := all[strconv.Itoa(int(id))]
	if ok && x.Mode&^0o7777 != 0 {
		return 0, false, corruptf(memfdFile, "inode %d: mode %#o", id, x.Mode)
	}
	return x.Mode, ok, nil
}

// memfdName is the name memfd_create was given, from the link
// "/memfd:NAME (deleted)" (or a maps path without the suffix).
func memfdName(link string) string {
	return strings.TrimSuffix(strings.TrimPrefix(link, "/memfd:"), " (deleted)")
}

// dumpMappedMemfd records the memfd that mapping src (of path, as maps
// shows it) maps: its inode once, shared with the fds of that memfd, and
// a memfd file entry to map it from at restore, opened read-write for a
// shared mapping whose file was open for writing (so that mprotect may
// make it writable, as it could before: writable says so) and read-only
// for any other. It returns the entry's id.
func dumpMappedMemfd(t *fileTable, src procFile, path string, writable bool) (uint32, error) {
	inodeID, err := memfdState(t).inodeID(t, src, memfdName(path))
	if err != nil {
		return 0, err
	}
	flags := uint32(unix.O_RDONLY)
	if writable {
		flags = unix.O_RDWR
	}
	key := fmt.Sprintf("\x00memfd\x00%d\x00%d", inodeID, flags)
	if id, ok := t.byKey[key]; ok {
		return id, nil
	}
	id := t.nextID()
	t.entries = append(t.entries, &fdinfo.FileEntry{Type: fdinfo.FdTypes_MEMFD.Enum(), Id: proto.Uint32(id), Memfd: &memfd.MemfdFileEntry{
		Id: proto.Uint32(id), Flags: proto.Uint32(flags), Pos: proto.Uint64(0), Fown: zeroFown(), InodeId: proto.Uint32(inodeID),
	}})
	t.byKey[key] = id
	return id, nil
}

// dumpMemfdInode saves the name, seals and content of the memfd src.
func dumpMemfdInode(t *fileTable, src procFile, name string, inodeID uint32) error {
	size := src.st.Size
	if size > maxMemfdSize {
		return src.unsupported(fmt.Sprintf("memfd %q is %d bytes, over the limit of %d", name, size, maxMemfdSize))
	}
	f, err := src.openForRead()
	if err != nil {
		return err
	}
	defer f.Close()
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		return fmt.Errorf("%s: memfd %q: F_GET_SEALS: %w", src.where, name, err)
	}
	// A memfd_create(MFD_HUGETLB) file lives on the kernel's hugetlbfs,
	// whose block size is its huge page size.
	var hugetlb *uint32
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &sfs); err != nil {
		return fmt.Errorf("%s: memfd %q: statfs: %w", src.where, name, err)
	}
	if sfs.Type == unix.HUGETLBFS_MAGIC {
		huge, err := hugeFlags(src.st, src.where)
		if err != nil {
			return err
		}
		// MFD_HUGE_* and MAP_HUGE_* are the same bits.
		hugetlb = proto.Uint32(unix.MFD_HUGETLB | huge&^unix.MAP_HUGETLB)
	}
	shmid := src.st.Ino
	pagesID := uint32(memfdPagesBase + inodeID)
	runs, err := dataRuns(f, size, pageSize)
	if err != nil {
		return fmt.Errorf("%s: memfd %q: %w", src.where, name, err)
	}
	t.addImage(pagemapShmem(shmid), &pagemap.PagemapHead{PagesId: proto.Uint32(pagesID)}, nil)
	for _, r := range runs {
		// Pages are whole: the tail of the last one reads as zeros.
		buf := make([]byte, r.len)
		n, err := f.ReadAt(buf, r.off)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("%s: memfd %q: read at %d: %w", src.where, name, r.off, err)
		}
		clear(buf[n:])
		t.addImage(pagemapShmem(shmid), &pagemap.PagemapEntry{
			Vaddr: proto.Uint64(uint64(r.off)), NrPages: proto.Uint32(uint32(r.len / pageSize)), Flags: proto.Uint32(pePresent),
		}, nil)
		t.addImage(pagesImage(pagesID), nil, buf)
	}
	t.addImage(images.Memfd, &memfd.MemfdInodeEntry{
		Name: proto.String(name), Uid: proto.Uint32(src.st.Uid), Gid: proto.Uint32(src.st.Gid), Size: proto.Uint64(uint64(size)),
		Shmid: proto.Uint32(uint32(shmid)), Seals: proto.Uint32(uint32(seals)), InodeId: proto.Uint64(uint64(inodeID)),
		HugetlbFlag: hugetlb,
	}, nil)
	return nil
}

// procFile is a file a task has open or mapped, reached through /proc:
// /proc/PID/fd/N or /proc/PID/map_files/START-END. Memfds and unlinked
// files are read through it, whichever way the task holds them.
type procFile struct {
	where string // "task P fd N" or "task P mapping A-B", for errors
	path  string
	st    *unix.Stat_t
}

func (d *fdDump) procFile() procFile {
	return procFile{where: d.where, path: fmt.Sprintf("/proc/%d/fd/%d", d.pid, d.fd), st: &d.st}
}

func (p procFile) unsupported(what string) error {
	return fmt.Errorf("%s: %s: %w", p.where, what, ErrUnsupported)
}

// openForRead opens the file again, read-only, as a new open file
// description: seeking it (SEEK_DATA) leaves the task's offset alone,
// which a duplicate of the task's fd would not.
func (p procFile) openForRead() (*os.File, error) {
	f, err := os.OpenFile(p.path, os.O_RDONLY|unix.O_CLOEXEC|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		f, err = os.OpenFile(p.path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: reopen %s to read it: %w", p.where, p.path, err)
	}
	return f, nil
}

// dataRun is a stretch of a file that holds data.
type dataRun struct{ off, len int64 }

// dataRuns lists the parts of f (size bytes) that are not holes, in
// units of align (the last run may end past size, up to the next unit).
// Runs are at most 64 MiB, under the image entry size limit.
func dataRuns(f *os.File, size, align int64) ([]dataRun, error) {
	var runs []dataRun
	const maxRun = 64 << 20
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("SEEK_DATA at %d: %w", off, err)
		}
		hole, err := unix.Seek(int(f.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("SEEK_HOLE at %d: %w", data, err)
		}
		start := data &^ (align - 1)
		end := min((hole+align-1)&^(align-1), (size+align-1)&^(align-1))
		if n := len(runs); n > 0 && runs[n-1].off+runs[n-1].len >= start {
			start = runs[n-1].off + runs[n-1].len
		}
		for s := start; s < end; s += maxRun {
			runs = append(runs, dataRun{s, min(maxRun, end-s)})
		}
		off = max(hole, end)
	}
	return runs, nil
}

// memfdRestoreState holds the memfd inodes restore made, by inode id.
type memfdRestoreState struct {
	inodes map[uint32]*os.File
	// created: inodes whose memfd_create description a task's fd got.
	created map[uint32]bool
}

// openMemfdFd opens the memfd file description of fd entry e: the
// description memfd_create made for the first read-write one of its
// inode, a new one for the others (see memfds).
func openMemfdFd(r *fileRestore, e *fdinfo.FileEntry) (*os.File, error) {
	f, err := openMemfd(r, e)
	if err != nil || int(e.GetMemfd().GetFlags())&unix.O_ACCMODE != unix.O_RDWR {
		return f, err
	}
	st := r.state["memfd"].(*memfdRestoreState)
	id := e.GetMemfd().GetInodeId()
	if st.created[id] {
		return f, nil
	}
	defer f.Close()
	inode := st.inodes[id]
	fd, err := unix.FcntlInt(inode.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("memfd id %d: dup: %w", e.GetId(), err)
	}
	orig := os.NewFile(uintptr(fd), inode.Name())
	// The status flags and position are the description's: take the
	// reopened one's, which are the image's.
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err == nil {
		_, err = unix.FcntlInt(orig.Fd(), unix.F_SETFL, fl)
	}
	if err == nil {
		_, err = orig.Seek(int64(e.GetMemfd().GetPos()), io.SeekStart)
	}
	if err != nil {
		orig.Close()
		return nil, fmt.Errorf("memfd id %d: flags and position of memfd_create's file: %w", e.GetId(), err)
	}
	st.created[id] = true
	return orig, nil
}

// openMemfd opens a new file description of the memfd of entry e, with
// the entry's flags and position, making the inode on first use.
func openMemfd(r *fileRestore, e *fdinfo.FileEntry) (*os.File, error) {
	m := e.GetMemfd()
	if m == nil {
		return nil, corruptf("files.img", "memfd id %d without its entry", e.GetId())
	}
	st, _ := r.state["memfd"].(*memfdRestoreState)
	if st == nil {
		st = &memfdRestoreState{inodes: map[uint32]*os.File{}, created: map[uint32]bool{}}
		r.state["memfd"] = st
	}
	inode, ok := st.inodes[m.GetInodeId()]
	if !ok {
		var err error
		if inode, err = createMemfd(r, m.GetInodeId()); err != nil {
			return nil, fmt.Errorf("memfd id %d: %w", e.GetId(), err)
		}
		st.inodes[m.GetInodeId()] = inode
		// The inode stays open in ctcr until restore ends: every file
		// description of it is opened from it.
		r.files[^uint32(0)-m.GetInodeId()] = inode
	}
	flags := int(m.GetFlags()) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC | unix.O_NOCTTY)
	f, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", inode.Fd()), flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("memfd id %d: reopen with flags %#o: %w", e.GetId(), flags, err)
	}
	if _, err := f.Seek(int64(m.GetPos()), io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("memfd id %d: seek to %d: %w", e.GetId(), m.GetPos(), err)
	}
	return f, nil
}

// createMemfd makes the memfd inode with id from memfd.img and its pages.
func createMemfd(r *fileRestore, id uint32) (*os.File, error) {
	x, err := r.readExtra(images.Memfd, func() proto.Message { return &memfd.MemfdInodeEntry{} }, nil)
	if err != nil {
		return nil, err
	}
	var ie *memfd.MemfdInodeEntry
	for _, m := range x.entries {
		if e := m.(*memfd.MemfdInodeEntry); e.GetInodeId() == uint64(id) {
			ie = e
		}
	}
	if ie == nil {
		return nil, corruptf(r.cp.dir.Path(images.Memfd.FileName()), "no inode %d", id)
	}
	if ie.GetSize() > maxMemfdSize {
		return nil, corruptf(r.cp.dir.Path(images.Memfd.FileName()), "inode %d of %d bytes", id, ie.GetSize())
	}
	name := ie.GetName()
	if len(name) > 249 || strings.ContainsRune(name, 0) {
		return nil, corruptf(r.cp.dir.Path(images.Memfd.FileName()), "inode %d: name %q", id, name)
	}
	huge := ie.GetHugetlbFlag()
	if huge&^(unix.MFD_HUGETLB|unix.MFD_HUGE_MASK<<unix.MFD_HUGE_SHIFT) != 0 {
		return nil, corruptf(r.cp.dir.Path(images.Memfd.FileName()), "inode %d: hugetlb flags %#x", id, huge)
	}
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|int(huge))
	if err != nil {
		return nil, fmt.Errorf("memfd_create %q (hugetlb flags %#x): %w", name, huge, err)
	}
	f := os.NewFile(uintptr(fd), "/memfd:"+name)
	fail := func(err error) (*os.File, error) {
		f.Close()
		return nil, fmt.Errorf("memfd %q: %w", name, err)
	}
	if huge != 0 {
		// hugetlbfs has no write(): the file is sized, then filled
		// through a mapping of it.
		if err := f.Truncate(int64(ie.GetSize())); err != nil {
			return fail(err)
		}
		if err := fillHugetlbMemfd(r, f, ie); err != nil {
			return fail(err)
		}
	} else {
		if err := fillMemfd(r, f, ie); err != nil {
			return fail(err)
		}
		if err := f.Truncate(int64(ie.GetSize())); err != nil {
			return fail(err)
		}
	}
	if err := unix.Fchown(fd, int(ie.GetUid()), int(ie.GetGid())); err != nil {
		return fail(fmt.Errorf("chown %d:%d: %w", ie.GetUid(), ie.GetGid(), err))
	}
	// After chown, which clears set-id bits.
	mode, ok, err := r.memfdMode(id)
	if err != nil {
		return fail(err)
	}
	if ok {
		if err := unix.Fchmod(fd, mode); err != nil {
			return fail(fmt.Errorf("chmod %#o: %w", mode, err))
		}
	}
	if seals := ie.GetSeals(); seals != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, int(seals)); err != nil {
			return fail(fmt.Errorf("seals %#x: %w", seals, err))
		}
	}
	return f, nil
}

// fillHugetlbMemfd fills the hugetlb memfd f, already at its size,
// through a shared mapping of it.
func fillHugetlbMemfd(r *fileRestore, f *os.File, ie *memfd.MemfdInodeEntry) error {
	size := int(ie.GetSize())
	if size == 0 {
		return nil
	}
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map the hugetlb memfd of %d bytes to fill it: %w", size, err)
	}
	defer unix.Munmap(m)
	return fillMemfdWith(r, ie, func(pages *os.File, off, at, n int64) error {
		if at+n > int64(size) {
			return fmt.Errorf("pages at %d (%d bytes) past the hugetlb memfd's %d bytes", at, n, size)
		}
		_, err := io.ReadFull(io.NewSectionReader(pages, off, n), m[at:at+n])
		return err
	})
}

// fillMemfd writes the pages of the memfd's shared memory object into f.
func fillMemfd(r *fileRestore, f *os.File, ie *memfd.MemfdInodeEntry) error {
	return fillMemfdWith(r, ie, func(pages *os.File, off, at, n int64) error {
		_, err := io.Copy(io.NewOffsetWriter(f, at), io.NewSectionReader(pages, off, n))
		return err
	})
}

// fillMemfdWith calls copyRun for each run of pages of the memfd's
// shared memory object: n bytes at offset off of the pages image, to
// offset at of the memfd, after checking both bounds.
func fillMemfdWith(r *fileRestore, ie *memfd.MemfdInodeEntry, copyRun func(pages *os.File, off, at, n int64) error) error {
	pmPath := r.cp.dir.Path(pagemapShmem(uint64(ie.GetShmid())).FileName())
	head, entries, err := images.ReadPagemap(pmPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil // no data at all
	}
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		return nil
	}
	pagesPath := r.cp.dir.Path(pagesImage(head.GetPagesId()).FileName())
	pages, err := os.Open(pagesPath)
	if err != nil {
		return err
	}
	defer pages.Close()
	fi, err := pages.Stat()
	if err != nil {
		return err
	}
	var off int64
	limit := (int64(ie.GetSize()) + pageSize - 1) &^ (pageSize - 1)
	for _, e := range entries {
		n := int64(e.GetNrPages()) * pageSize
		at := int64(e.GetVaddr())
		if at%pageSize != 0 || at+n > limit || off+n > fi.Size() {
			return corruptf(pmPath, "pages at %d (%d bytes) outside the memfd of %d bytes or the pages image", at, n, ie.GetSize())
		}
		if err := copyRun(pages, off, at, n); err != nil {
			return fmt.Errorf("fill from %s: %w", pagesPath, err)
		}
		off += n
	}
	return nil
}
