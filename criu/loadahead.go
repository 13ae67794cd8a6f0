package criu

import (
	criucore "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	fsimg "github.com/checkpoint-restore/go-criu/v7/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pstree"

	"github.com/ctcr/ctcr/criu/images"
)

// A checkpoint of 1,000 processes has some 5,000 small images; decoding
// them one after the other was a tenth of a restore's CPU, all of it
// before the first task is made. loadTask still reads and checks them in
// tree order (a task that shares another's memory has no mm image of
// its own, which only the order tells), but the decoding is done first,
// by one goroutine per CPU. A task's images are decoded for it alone,
// as loadTask did: no two tasks share a decoded message.

// taskPreload is one task's images, decoded ahead (or the error of
// each). The zero value, or a nil one, has nothing: loadTask then reads
// the files itself.
type taskPreload struct {
	cores    []*criucore.CoreEntry // by thread, as pstree lists them
	coreErrs []error
	mm       *mm.MmEntry
	mmErr    error
	pmHead   *pagemap.PagemapHead
	pm       []*pagemap.PagemapEntry
	pmErr    error
	fdsPath  string // the fdinfo image read, chosen by the main thread's files id
	fds      []*fdinfo.FdinfoEntry
	fdsErr   error
	fs       *fsimg.FsEntry
	fsErr    error
}

// preloadTasks decodes the images of every task of tree on
// GOMAXPROCS goroutines and returns them in tree order.
func preloadTasks(dir *images.Checkpoint, tree []*pstree.PstreeEntry) []*taskPreload {
	out := make([]*taskPreload, len(tree))
	eachParallel(len(tree), func(i int) { out[i] = preloadTask(dir, tree[i]) })
	return out
}

// preloadTask decodes the images of one task, or returns nil for an
// entry loadTask refuses anyway (it says why).
func preloadTask(dir *images.Checkpoint, ps *pstree.PstreeEntry) *taskPreload {
	pid := int(ps.GetPid())
	if pid <= 0 || pid > 1<<22 || len(ps.Threads) == 0 || len(ps.Threads) > 1<<16 {
		return nil
	}
	p := &taskPreload{cores: make([]*criucore.CoreEntry, len(ps.Threads)), coreErrs: make([]error, len(ps.Threads))}
	for i, tid := range ps.Threads {
		if tid == 0 || tid > 1<<22 {
			return nil
		}
		p.cores[i] = &criucore.CoreEntry{}
		p.coreErrs[i] = images.ReadOne(dir.Path(images.Core.FileName(int(tid))), images.Core, p.cores[i])
	}
	if p.coreErrs[0] != nil || p.cores[0].GetTc().GetTaskState() == taskZombie {
		return p
	}
	// A task sharing another's memory has no mm or pagemap image: the
	// error stays unread.
	p.mm = &mm.MmEntry{}
	p.mmErr = images.ReadOne(dir.Path(images.Mm.FileName(pid)), images.Mm, p.mm)
	p.pmHead, p.pm, p.pmErr = images.ReadPagemap(dir.Path(images.Pagemap.FileName(pid)))
	p.fdsPath = dir.Path(images.Fdinfo.FileName(filesIDOf(p.cores[0])))
	p.fds, p.fdsErr = images.ReadAll(p.fdsPath, images.Fdinfo, func() *fdinfo.FdinfoEntry { return &fdinfo.FdinfoEntry{} })
	p.fs = &fsimg.FsEntry{}
	p.fsErr = images.ReadOne(dir.Path(images.Fs.FileName(pid)), images.Fs, p.fs)
	return p
}

// filesIDOf is the id of the fdinfo image of the task whose main thread's
// core is core.
func filesIDOf(core *criucore.CoreEntry) int {
	if ids := core.GetIds(); ids != nil {
		return int(ids.GetFilesId())
	}
	return 1
}

// core returns thread i's core image, from path unless preloaded.
func (p *taskPreload) core(i int, path string) (*criucore.CoreEntry, error) {
	if p != nil && i < len(p.cores) {
		return p.cores[i], p.coreErrs[i]
	}
	core := &criucore.CoreEntry{}
	return core, images.ReadOne(path, images.Core, core)
}

// mmImage returns the task's mm image, from path unless preloaded.
func (p *taskPreload) mmImage(path string) (*mm.MmEntry, error) {
	if p != nil && p.mm != nil {
		return p.mm, p.mmErr
	}
	m := &mm.MmEntry{}
	return m, images.ReadOne(path, images.Mm, m)
}

// pagemap returns the task's pagemap image, from path unless preloaded.
func (p *taskPreload) pagemap(path string) (*pagemap.PagemapHead, []*pagemap.PagemapEntry, error) {
	if p != nil && p.mm != nil {
		return p.pmHead, p.pm, p.pmErr
	}
	return images.ReadPagemap(path)
}

// fdinfo returns the fdinfo image at path, unless preloaded.
func (p *taskPreload) fdinfo(path string) ([]*fdinfo.FdinfoEntry, error) {
	if p != nil && p.fdsPath == path {
		return p.fds, p.fdsErr
	}
	return images.ReadAll(path, images.Fdinfo, func() *fdinfo.FdinfoEntry { return &fdinfo.FdinfoEntry{} })
}

// fsImage returns the task's fs image, from path unless preloaded.
func (p *taskPreload) fsImage(path string) (*fsimg.FsEntry, error) {
	if p != nil && p.fs != nil {
		return p.fs, p.fsErr
	}
	fs := &fsimg.FsEntry{}
	return fs, images.ReadOne(path, images.Fs, fs)
}
