package criu

import (
	"errors"
	"fmt"
	"io"
	"os"
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
// Restore creates the inode once with memfd_create, fills it, seals it,
// and opens every file description of it again through /proc/self/fd,
// with its own flags and position.
var memfds = fileKind{
	name:   "memfd",
	fdType: fdinfo.FdTypes_MEMFD,
	dump:   dumpMemfd,
	open:   openMemfd,
	fixup:  restoreFileLocks,
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
	ids map[[2]uint64]uint32
}

func isMemfd(d *fdDump) bool {
	return strings.HasPrefix(d.link, "/memfd:") && strings.HasSuffix(d.link, " (deleted)") &&
		d.st.Mode&unix.S_IFMT == unix.S_IFREG && d.st.Nlink == 0
}

func dumpMemfd(d *fdDump) (*fdinfo.FileEntry, error) {
	if !isMemfd(d) {
		return nil, nil
	}
	st := d.files.kindState("memfd", func() any { return &memfdDumpState{ids: map[[2]uint64]uint32{}} }).(*memfdDumpState)
	key := [2]uint64{d.st.Dev, d.st.Ino}
	inodeID, ok := st.ids[key]
	if !ok {
		inodeID = uint32(len(st.ids) + 1)
		if err := dumpMemfdInode(d, inodeID); err != nil {
			return nil, err
		}
		st.ids[key] = inodeID
	}
	id := d.files.nextID()
	return &fdinfo.FileEntry{Id: proto.Uint32(id), Memfd: &memfd.MemfdFileEntry{
		Id: proto.Uint32(id), Flags: proto.Uint32(d.flags), Pos: proto.Uint64(uint64(d.info.Pos)), Fown: zeroFown(), InodeId: proto.Uint32(inodeID),
	}}, nil
}

// dumpMemfdInode saves the name, seals and content of the memfd behind d.
func dumpMemfdInode(d *fdDump, inodeID uint32) error {
	name := strings.TrimSuffix(strings.TrimPrefix(d.link, "/memfd:"), " (deleted)")
	size := d.st.Size
	if size > maxMemfdSize {
		return d.unsupported(fmt.Sprintf("memfd %q is %d bytes, over the limit of %d", name, size, maxMemfdSize))
	}
	f, err := d.file()
	if err != nil {
		return err
	}
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		return fmt.Errorf("%s: memfd %q: F_GET_SEALS: %w", d.where, name, err)
	}
	shmid := d.st.Ino
	pagesID := uint32(memfdPagesBase + inodeID)
	if f, err = d.reopenForRead(); err != nil {
		return err
	}
	defer f.Close()
	runs, err := dataRuns(f, size, pageSize)
	if err != nil {
		return fmt.Errorf("%s: memfd %q: %w", d.where, name, err)
	}
	d.files.addImage(pagemapShmem(shmid), &pagemap.PagemapHead{PagesId: proto.Uint32(pagesID)}, nil)
	for _, r := range runs {
		// Pages are whole: the tail of the last one reads as zeros.
		buf := make([]byte, r.len)
		n, err := f.ReadAt(buf, r.off)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("%s: memfd %q: read at %d: %w", d.where, name, r.off, err)
		}
		clear(buf[n:])
		d.files.addImage(pagemapShmem(shmid), &pagemap.PagemapEntry{
			Vaddr: proto.Uint64(uint64(r.off)), NrPages: proto.Uint32(uint32(r.len / pageSize)), Flags: proto.Uint32(pePresent),
		}, nil)
		d.files.addImage(pagesImage(pagesID), nil, buf)
	}
	d.files.addImage(images.Memfd, &memfd.MemfdInodeEntry{
		Name: proto.String(name), Uid: proto.Uint32(d.st.Uid), Gid: proto.Uint32(d.st.Gid), Size: proto.Uint64(uint64(size)),
		Shmid: proto.Uint32(uint32(shmid)), Seals: proto.Uint32(uint32(seals)), InodeId: proto.Uint64(uint64(inodeID)),
	}, nil)
	return nil
}

// reopenForRead opens the file behind d again, read-only, as a new open
// file description: seeking it (SEEK_DATA) leaves the task's offset alone,
// which the duplicate from d.file() would not.
func (d *fdDump) reopenForRead() (*os.File, error) {
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", d.pid, d.fd), os.O_RDONLY|unix.O_CLOEXEC|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		f, err = os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", d.pid, d.fd), os.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: reopen %s to read it: %w", d.where, d.link, err)
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
}

func openMemfd(r *fileRestore, e *fdinfo.FileEntry) (*os.File, error) {
	m := e.GetMemfd()
	if m == nil {
		return nil, corruptf("files.img", "memfd id %d without its entry", e.GetId())
	}
	st, _ := r.state["memfd"].(*memfdRestoreState)
	if st == nil {
		st = &memfdRestoreState{inodes: map[uint32]*os.File{}}
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
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create %q: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), "/memfd:"+name)
	fail := func(err error) (*os.File, error) {
		f.Close()
		return nil, fmt.Errorf("memfd %q: %w", name, err)
	}
	if err := fillMemfd(r, f, ie); err != nil {
		return fail(err)
	}
	if err := f.Truncate(int64(ie.GetSize())); err != nil {
		return fail(err)
	}
	if err := unix.Fchown(fd, int(ie.GetUid()), int(ie.GetGid())); err != nil {
		return fail(fmt.Errorf("chown %d:%d: %w", ie.GetUid(), ie.GetGid(), err))
	}
	if seals := ie.GetSeals(); seals != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, int(seals)); err != nil {
			return fail(fmt.Errorf("seals %#x: %w", seals, err))
		}
	}
	return f, nil
}

// fillMemfd writes the pages of the memfd's shared memory object into f.
func fillMemfd(r *fileRestore, f *os.File, ie *memfd.MemfdInodeEntry) error {
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
		if _, err := io.Copy(io.NewOffsetWriter(f, at), io.NewSectionReader(pages, off, n)); err != nil {
			return fmt.Errorf("fill from %s: %w", pagesPath, err)
		}
		off += n
	}
	return nil
}
