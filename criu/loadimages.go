package criu

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	criucore "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	fsimg "github.com/checkpoint-restore/go-criu/v7/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/vma"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/images"
)

// checkpoint is a whole image directory, read and checked for sense
// before restore changes anything.
type checkpoint struct {
	dir       *images.Checkpoint
	inventory *inventory.InventoryEntry
	tasks     []*restoredTaskImages
	files     map[uint32]*fdinfo.FileEntry
	vmOwners  map[uint32]*restoredTaskImages // by vm id: the task that holds the mm images
	// warnings say what could not be checked (a checkpoint without a
	// manifest).
	warnings []string
	// compression is that of the tasks' pages images (compression.json).
	compression string
}

type restoredTaskImages struct {
	pstree    *pstree.PstreeEntry
	core      *criucore.CoreEntry   // the main thread's (with the task core)
	threads   []*criucore.CoreEntry // every thread's, main thread first
	zombie    bool
	vmOwner   *restoredTaskImages // the task whose memory this one shares (CLONE_VM)
	mm        *mm.MmEntry
	pagemap   []*pagemap.PagemapEntry
	pagesID   uint32
	pagesPath string
	pagesSize uint64
	// pagesZstd says pagesPath is compressed (pages-N.img.zst): its
	// size says nothing of the pages, fillPagesZstd checks them.
	pagesZstd bool
	// parentPaths are the pages files of the parent images (a pre-copy,
	// pre-dumps, each the parent of the one before), and parentRuns
	// where the pages of the entries flagged pePreCopied lie in them;
	// parentSize is the bytes those entries take.
	parentPaths []string
	parentRuns  []fileRun
	parentSize  uint64
	fds         []*fdinfo.FdinfoEntry
	fs          *fsimg.FsEntry

	// parentZstd says one of parentPaths is compressed (ends in .zst):
	// the task cannot read it, fillPagesZstd decompresses it.
	parentZstd bool
}

// corruptf reports an image whose content makes no sense.
func corruptf(file, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %w", file, fmt.Sprintf(format, args...), images.ErrCorrupt)
}

// taskSize is the end of x86-64 user space with 4-level page tables.
const taskSize = 1 << 47

func loadCheckpoint(dir string) (*checkpoint, error) {
	cd, err := images.OpenCheckpoint(dir)
	if err != nil {
		return nil, err
	}
	c := &checkpoint{dir: cd, files: map[uint32]*fdinfo.FileEntry{}, vmOwners: map[uint32]*restoredTaskImages{}}
	// Every file against the manifest first: a damaged image is named
	// as such, before any of it is believed.
	c.warnings, err = images.VerifyManifest(dir)
	if errors.Is(err, images.ErrNoManifest) {
		c.warnings, err = append(c.warnings, err.Error()), nil
	}
	if err != nil {
		return nil, err
	}
	if c.compression, err = readCompression(dir); err != nil {
		return nil, err
	}
	c.inventory = &inventory.InventoryEntry{}
	if err := images.ReadOne(cd.Path(images.Inventory.FileName()), images.Inventory, c.inventory); err != nil {
		return nil, err
	}
	if v := c.inventory.GetImgVersion(); v != images.ImagesV1_1 {
		return nil, corruptf(cd.Path("inventory.img"), "image version %d, want %d", v, images.ImagesV1_1)
	}
	tree, err := images.ReadAll(cd.Path(images.Pstree.FileName()), images.Pstree, func() *pstree.PstreeEntry { return &pstree.PstreeEntry{} })
	if err != nil {
		return nil, err
	}
	if len(tree) == 0 {
		return nil, corruptf(cd.Path("pstree.img"), "no task")
	}
	if len(tree) > 1<<16 {
		return nil, corruptf(cd.Path("pstree.img"), "%d tasks", len(tree))
	}
	fileEntries, err := images.ReadAll(cd.Path(images.Files.FileName()), images.Files, func() *fdinfo.FileEntry { return &fdinfo.FileEntry{} })
	if err != nil {
		return nil, err
	}
	for _, f := range fileEntries {
		if _, dup := c.files[f.GetId()]; dup {
			return nil, corruptf(cd.Path("files.img"), "file id %d twice", f.GetId())
		}
		if fileKindOf(f.GetType()) == nil {
			return nil, fmt.Errorf("%s: file id %d of type %v: %w", cd.Path("files.img"), f.GetId(), f.GetType(), ErrUnsupported)
		}
		c.files[f.GetId()] = f
	}
	ids := map[uint32]bool{}
	pre := preloadTasks(cd, tree) // loadahead.go
	for i, ps := range tree {
		for _, id := range append([]uint32{ps.GetPid()}, ps.Threads...) {
			if ids[id] && id != ps.GetPid() {
				return nil, corruptf(cd.Path("pstree.img"), "id %d used twice", id)
			}
			ids[id] = true
		}
		t, err := c.loadTask(ps, pre[i])
		if err != nil {
			return nil, err
		}
		c.tasks = append(c.tasks, t)
	}
	return c, nil
}

// loadTask reads and checks the images of the task ps describes; pre
// holds them decoded already, or is nil.
func (c *checkpoint) loadTask(ps *pstree.PstreeEntry, pre *taskPreload) (*restoredTaskImages, error) {
	pid := int(ps.GetPid())
	pstreePath := c.dir.Path("pstree.img")
	if pid <= 0 || pid > 1<<22 {
		return nil, corruptf(pstreePath, "pid %d", pid)
	}
	if len(ps.Threads) == 0 || int(ps.Threads[0]) != pid || len(ps.Threads) > 1<<16 {
		return nil, corruptf(pstreePath, "task %d: threads %v do not start with the task itself", pid, ps.Threads)
	}
	// 0 is a parent, group or session outside the tree's PID namespace.
	if ps.GetPpid() > 1<<22 || ps.GetPgid() > 1<<22 || ps.GetSid() > 1<<22 {
		return nil, corruptf(pstreePath, "task %d: parent, group or session out of range", pid)
	}
	t := &restoredTaskImages{pstree: ps, mm: &mm.MmEntry{}, fs: &fsimg.FsEntry{}}
	for i, tid := range ps.Threads {
		if tid == 0 || tid > 1<<22 {
			return nil, corruptf(pstreePath, "task %d: thread id %d", pid, tid)
		}
		corePath := c.dir.Path(images.Core.FileName(int(tid)))
		core, err := pre.core(i, corePath)
		if err != nil {
			return nil, err
		}
		if i == 0 && core.Tc == nil {
			return nil, corruptf(corePath, "main thread without a task core")
		}
		if i == 0 && core.Tc.GetTaskState() == taskZombie {
			if len(ps.Threads) != 1 {
				return nil, corruptf(corePath, "zombie with threads")
			}
			t.zombie = true
			t.core = core
			return t, nil
		}
		if core.GetMtype() != criucore.CoreEntry_X86_64 || core.ThreadInfo == nil || core.ThreadCore == nil || core.ThreadInfo.Gpregs == nil {
			return nil, corruptf(corePath, "not an x86-64 thread core")
		}
		if i == 0 {
			if st := core.Tc.GetTaskState(); st != taskAlive && st != taskStopped {
				return nil, fmt.Errorf("%s: task state %d: %w", corePath, st, ErrUnsupported)
			}
			t.core = core
		}
		t.threads = append(t.threads, core)
	}
	if owner, ok := c.vmOwners[t.core.GetIds().GetVmId()]; ok && t.core.GetIds() != nil {
		// Its memory is an earlier task's (CLONE_VM): no mm or pages
		// of its own.
		t.mm, t.vmOwner = owner.mm, owner
		if err := c.loadFilesAndFS(t, pid, pre); err != nil {
			return nil, err
		}
		return t, nil
	}
	mmPath := c.dir.Path(images.Mm.FileName(pid))
	var err error
	if t.mm, err = pre.mmImage(mmPath); err != nil {
		return nil, err
	}
	if ids := t.core.GetIds(); ids != nil {
		c.vmOwners[ids.GetVmId()] = t
	}
	if err := checkVMAs(mmPath, t.mm.Vmas, c.files); err != nil {
		return nil, err
	}
	if _, ok := c.files[t.mm.GetExeFileId()]; !ok {
		return nil, corruptf(mmPath, "executable file id %d not in files.img", t.mm.GetExeFileId())
	}
	pmPath := c.dir.Path(images.Pagemap.FileName(pid))
	head, entries, err := pre.pagemap(pmPath)
	if err != nil {
		return nil, err
	}
	t.pagemap = entries
	t.pagesID = head.GetPagesId()
	t.pagesPath = c.dir.Path(images.Pages.FileName(int(t.pagesID)))
	var pages uint64
	for _, e := range entries {
		if !insideVMAs(t.mm.Vmas, e.GetVaddr(), e.GetVaddr()+uint64(e.GetNrPages())*pageSize) {
			return nil, corruptf(pmPath, "pages at %#x (%d pages) outside every dumpable mapping", e.GetVaddr(), e.GetNrPages())
		}
		switch {
		case e.GetFlags()&pePreCopied != 0:
			t.parentSize += uint64(e.GetNrPages()) * pageSize
		case e.GetFlags()&peParentTask == 0:
			pages += uint64(e.GetNrPages())
		}
	}
	t.pagesSize = pages * pageSize
	if t.parentSize > 0 {
		if err := c.loadParentPages(t, pid); err != nil {
			return nil, err
		}
	}
	if c.compression == CompressZstd {
		t.pagesPath += zstdSuffix
		t.pagesZstd = true
	}
	fi, err := os.Stat(t.pagesPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && pages == 0 {
			t.pagesPath = ""
		} else {
			return nil, fmt.Errorf("pages image: %w", err)
		}
	} else if !t.pagesZstd && uint64(fi.Size()) != t.pagesSize {
		return nil, corruptf(t.pagesPath, "%d bytes, but %s describes %d pages (%d bytes)", fi.Size(), pmPath, pages, t.pagesSize)
	}
	if err := c.loadFilesAndFS(t, pid, pre); err != nil {
		return nil, err
	}
	return t, nil
}

// loadFilesAndFS reads the fd table and fs images of task pid (or takes
// them from pre, if not nil).
func (c *checkpoint) loadFilesAndFS(t *restoredTaskImages, pid int, pre *taskPreload) error {
	var err error
	fdPath := c.dir.Path(images.Fdinfo.FileName(filesIDOf(t.core)))
	if t.fds, err = pre.fdinfo(fdPath); err != nil {
		return err
	}
	seen := map[uint32]bool{}
	for _, fd := range t.fds {
		if _, ok := c.files[fd.GetId()]; !ok {
			return corruptf(fdPath, "fd %d refers to file id %d not in files.img", fd.GetFd(), fd.GetId())
		}
		if fd.GetFd() > 1<<20 || seen[fd.GetFd()] {
			return corruptf(fdPath, "fd number %d repeated or out of range", fd.GetFd())
		}
		seen[fd.GetFd()] = true
	}
	fsPath := c.dir.Path(images.Fs.FileName(pid))
	if t.fs, err = pre.fsImage(fsPath); err != nil {
		return err
	}
	for _, id := range []uint32{t.fs.GetCwdId(), t.fs.GetRootId()} {
		if _, ok := c.files[id]; !ok {
			return corruptf(fsPath, "file id %d not in files.img", id)
		}
	}
	return nil
}

// checkVMAs verifies that mappings are page aligned, ordered, disjoint,
// inside user space, and that file mappings name known files.
func checkVMAs(path string, vmas []*vma.VmaEntry, files map[uint32]*fdinfo.FileEntry) error {
	var prevEnd uint64
	for i, v := range vmas {
		s, e := v.GetStart(), v.GetEnd()
		if s%pageSize != 0 || e%pageSize != 0 || s >= e || e > taskSize || s < prevEnd || v.GetPgoff()%pageSize != 0 {
			return corruptf(path, "mapping %d %#x-%#x is misaligned, empty, overlapping or outside user space", i, s, e)
		}
		prevEnd = e
		if v.GetStatus()&(vmaFilePrivate|vmaFileShared) != 0 {
			if _, ok := files[uint32(v.GetShmid())]; !ok || v.GetShmid() > 1<<32 {
				return corruptf(path, "mapping %#x-%#x refers to file id %d not in files.img", s, e, v.GetShmid())
			}
		}
		if v.GetProt()&^uint32(unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC) != 0 {
			return corruptf(path, "mapping %#x-%#x has protection %#x", s, e, v.GetProt())
		}
	}
	return nil
}

// insideVMAs reports whether [s, e) lies within dumpable mappings.
func insideVMAs(vmas []*vma.VmaEntry, s, e uint64) bool {
	for s < e {
		found := false
		for _, v := range vmas {
			if v.GetStart() <= s && s < v.GetEnd() && v.GetStatus()&(vmaAnonPrivate|vmaAnonShared|vmaFilePrivate) != 0 {
				s = v.GetEnd()
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// fileRun is a run of pages [addr, end) at offset off of pages file
// number file (of restoredTaskImages.parentPaths).
type fileRun struct {
	addr, end, off uint64
	file           int
}

// maxParents bounds a chain of parent images (and a loop of links).
const maxParents = 64

// loadParentPages reads the parent images' pagemaps of task pid, each
// parent's parent in turn as far as the entries need, and checks that
// they hold every page the task's pagemap says they do.
func (c *checkpoint) loadParentPages(t *restoredTaskImages, pid int) error {
	var want []fileRun
	for _, e := range t.pagemap {
		if e.GetFlags()&pePreCopied != 0 {
			want = append(want, fileRun{addr: e.GetVaddr(), end: e.GetVaddr() + uint64(e.GetNrPages())*pageSize})
		}
	}
	runs, err := t.parentLevel(c.dir.Path(parentLink), pid, want, 1)
	if err != nil {
		return err
	}
	t.parentRuns = runs
	return nil
}

// parentLevel returns where the pages of want (sorted ranges) are in
// the parent image dir and its own parents, or fails naming the page
// none of them holds.
func (t *restoredTaskImages) parentLevel(dir string, pid int, want []fileRun, depth int) ([]fileRun, error) {
	if depth > maxParents {
		return nil, fmt.Errorf("%s: more than %d parent images (a loop of links?): %w", dir, maxParents, images.ErrCorrupt)
	}
	pmPath := filepath.Join(dir, images.Pagemap.FileName(pid))
	head, entries, err := images.ReadPagemap(pmPath)
	if err != nil {
		return nil, fmt.Errorf("parent image: %w", err)
	}
	pagesPath := filepath.Join(dir, images.Pages.FileName(int(head.GetPagesId())))
	// A pre-dump may be compressed (pre-dump --compress): its pages
	// are then read through a decompressor (fillPagesZstd).
	comp, err := readCompression(dir)
	if err != nil {
		return nil, fmt.Errorf("parent image: %w", err)
	}
	if comp == CompressZstd {
		pagesPath += zstdSuffix
		t.parentZstd = true
	}
	file := len(t.parentPaths)
	t.parentPaths = append(t.parentPaths, pagesPath)
	// What this level holds: its own pages, then what it takes from
	// its parent.
	var here, fromParent []fileRun
	var off uint64
	for _, e := range entries {
		if e.GetFlags()&peParentTask != 0 {
			return nil, corruptf(pmPath, "pages at %#x of a parent image are the parent task's", e.GetVaddr())
		}
		r := fileRun{addr: e.GetVaddr(), end: e.GetVaddr() + uint64(e.GetNrPages())*pageSize}
		if n := len(here) + len(fromParent); n > 0 && r.addr < max(lastEnd(here), lastEnd(fromParent)) {
			return nil, corruptf(pmPath, "pages at %#x overlap or are out of order", e.GetVaddr())
		}
		if e.GetFlags()&pePreCopied != 0 {
			fromParent = append(fromParent, r)
			continue
		}
		r.off, r.file = off, file
		off += r.end - r.addr
		here = append(here, r)
	}
	fi, err := os.Stat(pagesPath)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) || off != 0 {
			return nil, fmt.Errorf("parent image: %w", err)
		}
	} else if comp != CompressZstd && uint64(fi.Size()) != off {
		return nil, corruptf(pagesPath, "%d bytes, but %s describes %d bytes", fi.Size(), pmPath, off)
	}
	// Only what want needs goes down the chain.
	need := intersectRuns(fromParent, want)
	if len(need) > 0 {
		deeper, err := t.parentLevel(filepath.Join(dir, parentLink), pid, need, depth+1)
		if err != nil {
			return nil, err
		}
		here = append(here, deeper...)
		sort.Slice(here, func(i, j int) bool { return here[i].addr < here[j].addr })
	}
	// Every wanted page must be somewhere.
	out := intersectRuns(here, want)
	var got uint64
	for _, r := range out {
		got += r.end - r.addr
	}
	var total uint64
	for _, r := range want {
		total += r.end - r.addr
	}
	if got != total {
		for _, w := range want {
			if err := coveredBy(out, w.addr, w.end); err != nil {
				return nil, corruptf(pmPath, "%v", err)
			}
		}
	}
	return out, nil
}

func lastEnd(runs []fileRun) uint64 {
	if len(runs) == 0 {
		return 0
	}
	return runs[len(runs)-1].end
}

// intersectRuns returns the pieces of runs (sorted, disjoint, with their
// file places) that lie in want (sorted, disjoint).
func intersectRuns(runs, want []fileRun) []fileRun {
	var out []fileRun
	j := 0
	for _, r := range runs {
		for j < len(want) && want[j].end <= r.addr {
			j++
		}
		for k := j; k < len(want) && want[k].addr < r.end; k++ {
			a, b := max(r.addr, want[k].addr), min(r.end, want[k].end)
			if a < b {
				out = append(out, fileRun{addr: a, end: b, off: r.off + (a - r.addr), file: r.file})
			}
		}
	}
	return out
}

// coveredBy fails naming the first page of [addr, end) no run holds.
func coveredBy(runs []fileRun, addr, end uint64) error {
	i := sort.Search(len(runs), func(i int) bool { return runs[i].end > addr })
	for addr < end {
		if i == len(runs) || runs[i].addr > addr {
			return fmt.Errorf("the page at %#x is in no parent image", addr)
		}
		addr = min(end, runs[i].end)
		i++
	}
	return nil
}

// eachParentRun calls fn for each piece of [addr, end) with the parent
// pages file and offset holding it, or fails if a page is in none.
func (t *restoredTaskImages) eachParentRun(addr, end uint64, fn func(addr, size uint64, file int, off uint64)) error {
	runs := t.parentRuns
	i := sort.Search(len(runs), func(i int) bool { return runs[i].end > addr })
	for addr < end {
		if i == len(runs) || runs[i].addr > addr {
			return fmt.Errorf("the page at %#x is in no parent image", addr)
		}
		n := min(end, runs[i].end) - addr
		fn(addr, n, runs[i].file, runs[i].off+(addr-runs[i].addr))
		addr += n
		i++
	}
	return nil
}
