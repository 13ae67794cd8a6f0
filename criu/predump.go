package criu

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/kernel"
	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/criu/ptrace"
)

// Pre-dumps are CRIU's way to move memory ahead of a checkpoint, one
// ctcr at a time: `pre-dump` copies the memory of a running tree into a
// directory and tracks what the tree writes from then on; the next
// `pre-dump --prev-images-dir` copies only what was written since, and
// so does the final `dump --prev-images-dir`. Each image takes the rest
// from its parent (PE_PARENT entries, and a `parent` link to the
// previous directory). Between two of them the tracking is held by a
// tracker (tracker.go). This is what migration needs: the directories
// can be sent to another host while the tree runs, and only the last,
// small one while it is stopped.

// PreDumpOptions says which tree to pre-dump, where, and on top of
// which earlier pre-dump.
type PreDumpOptions struct {
	Pid int
	Dir string
	// PrevDir is an earlier pre-dump of the tree, relative to Dir (as
	// CRIU's --prev-images-dir) or absolute: only what was written since
	// is copied.
	PrevDir  string
	Log      func(format string, args ...any)
	Progress func(bytes uint64)
	// Compress is how the pages images are stored, as DumpOptions'.
	// Each image of a chain has its own (compression.json): a dump
	// may be compressed on top of a raw pre-dump, and the other way.
	Compress string
}

// PreDumpStats describes a finished pre-dump; it is also what
// pre-dump.json holds.
type PreDumpStats struct {
	Pid         int      `json:"pid"`
	Start       uint64   `json:"start"` // the root's start time
	Tasks       int      `json:"tasks"`
	PagesBytes  uint64   `json:"pages_bytes"`  // copied into this image
	ParentBytes uint64   `json:"parent_bytes"` // left in the parent images
	Frozen      float64  `json:"frozen_seconds"`
	Total       float64  `json:"pre_dump_seconds"`
	Warnings    []string `json:"warnings,omitempty"`
}

// PreDump copies the memory of the running tree under o.Pid into o.Dir
// and leaves its writes tracked for the next pre-dump or dump. The tree
// is stopped only for the moment each task makes its userfaultfd.
func PreDump(o PreDumpOptions) (*PreDumpStats, error) {
	Begin()
	defer End()
	start := time.Now()
	logf := func(format string, args ...any) {
		if o.Log != nil {
			o.Log(format, args...)
		}
	}
	st := &PreDumpStats{Pid: o.Pid}
	warnf := func(format string, args ...any) {
		logf("warning: "+format, args...)
		st.Warnings = append(st.Warnings, fmt.Sprintf(format, args...))
	}
	rootStat, err := proc.ReadStat(o.Pid, o.Pid)
	if o.Pid <= 0 || err != nil {
		return nil, fmt.Errorf("task %d: %w", o.Pid, ErrNoTask)
	}
	st.Start = rootStat.StartTime
	if err := CheckCompression(o.Compress); err != nil {
		return nil, err
	}
	prev, err := prevImages(o.Dir, o.PrevDir)
	if err != nil {
		return nil, err
	}
	stage, err := images.NewStaging(o.Dir, images.PreDump)
	if err != nil {
		return nil, err
	}
	defer stage.Abort()

	pc, err := takePreCopy(o.Pid, prev, o.PrevDir, warnf)
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	frozen, err := pc.armNew(o.Pid, logf)
	if err != nil {
		return nil, err
	}
	st.Frozen = frozen.Seconds()

	pr := newProgress(o.Progress)
	defer pr.done()
	for _, p := range pc.order {
		n, parent, err := p.preDump(stage.Dir, o.Compress, pr)
		if err != nil {
			if taskGone(p.pid) {
				logf("pre-dump: task %d is gone: %v", p.pid, err)
				pc.drop(p.pid)
				continue
			}
			if diskError(err) {
				return nil, err
			}
			return nil, fmt.Errorf("pre-dump of task %d: %w", p.pid, err)
		}
		st.PagesBytes += n
		st.ParentBytes += parent
		st.Tasks++
	}
	if err := writeCompression(stage, o.Compress); err != nil {
		return nil, err
	}
	if pc.prevDir != "" {
		if err := os.Symlink(o.PrevDir, stage.Path(parentLink)); err != nil {
			return nil, fmt.Errorf("pre-dump: %w", err)
		}
	}
	st.Total = time.Since(start).Seconds()
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := stage.WriteFile(images.PreDumpFile, append(b, '\n')); err != nil {
		return nil, err
	}
	if err := stage.Commit(); err != nil {
		return nil, err
	}
	// Committed: hand the tracking over to a tracker for the next one.
	if err := startTracker(o.Pid, pc.order); err != nil {
		warnf("%v: the writes of the tree are no longer tracked, a dump on top of this pre-dump copies everything again", err)
	}
	logf("pre-dumped %d tasks: %d bytes copied, %d left in the parent images", st.Tasks, st.PagesBytes, st.ParentBytes)
	return st, nil
}

// taskGone reports whether pid, which ran while it was pre-dumped,
// exited: reaped, or a zombie that its parent has not reaped yet (a
// container's shell reaps its sleeps when it gets to it), whose
// pagemap and memory are gone with its mm.
func taskGone(pid int) bool {
	st, err := proc.ReadStat(pid, pid)
	return err != nil || st.State == 'Z' || st.State == 'X'
}

// prevImages checks that prevDir (relative to dir, or absolute) holds a
// pre-dump and returns its path, or "" for no prevDir.
func prevImages(dir, prevDir string) (string, error) {
	if prevDir == "" {
		return "", nil
	}
	path := prevDir
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, prevDir)
	}
	if _, err := os.Stat(filepath.Join(path, images.PreDumpFile)); err != nil {
		return "", fmt.Errorf("%s is not a complete pre-dump (no %s): %w", path, images.PreDumpFile, err)
	}
	return path, nil
}

// takePreCopy takes the tracking of the tree under root from its tracker,
// if it has one, as a PreCopy whose parent image is prev (an earlier
// pre-dump): its processes' covered pages are read from prev's
// pagemaps once their ids in the images are known. Without prev the
// tracking is kept but nothing is covered.
func takePreCopy(root int, prev, link string, warnf func(string, ...any)) (*PreCopy, error) {
	pc := &PreCopy{procs: map[int]*preProc{}, prevDir: prev, link: link, logf: func(string, ...any) {}}
	tasks, fds, err := takeTracking(root)
	if err != nil {
		warnf("%v", err)
	}
	if len(tasks) == 0 && prev != "" {
		warnf("the writes of task %d were not tracked since the pre-dump in %s (its tracker ended): every page is copied again", root, prev)
		pc.prevDir = ""
	}
	for i, t := range tasks {
		st, err := proc.ReadStat(t.Pid, t.Pid)
		if err != nil || st.StartTime != t.Start {
			closeAll(fds[i : i+1])
			continue
		}
		p := &preProc{pid: t.Pid, start: t.Start, uffd: fds[i]}
		for _, v := range t.Vmas {
			p.vmas = append(p.vmas, vmaRange(v[0], v[1], v[2]))
		}
		pc.procs[t.Pid] = p
	}
	return pc, nil
}

// armNew seizes the tree under root for a moment: every process not
// tracked yet makes a userfaultfd, and has its private mappings
// registered once it runs again. The ids of all of them in the images
// are read meanwhile, and their covered pages from the parent image. It
// returns how long the tree was stopped.
func (pc *PreCopy) armNew(root int, logf func(string, ...any)) (time.Duration, error) {
	tr := ptrace.NewTracer()
	defer tr.Close()
	d := &dumpTree{byPid: map[int]*dumpProc{}, opts: &DumpOptions{Log: logf}}
	stopped := time.Now()
	err := tr.Do(func() error {
		if err := d.seize(root); err != nil {
			return err
		}
		for _, p := range d.procs {
			if p.zombie || pc.procs[p.pid] != nil {
				continue
			}
			fd, err := makeUffd(p)
			if err != nil {
				if errors.Is(err, errTaskGone) {
					return err
				}
				logf("pre-dump: task %d: %v", p.pid, err)
				continue
			}
			pc.procs[p.pid] = &preProc{pid: p.pid, start: p.stat.StartTime, uffd: fd, fresh: true}
		}
		// While the tree is held: a task that exits once it runs on
		// takes its ids with it.
		return d.virtualIDs()
	})
	if rerr := tr.Do(d.resume); err == nil && rerr != nil {
		err = fmt.Errorf("let the tree run on: %w", rerr)
	}
	frozen := time.Since(stopped)
	if err != nil {
		return frozen, err
	}
	// Tracked tasks no longer in the tree are of no use.
	inTree := map[int]bool{}
	for i, p := range d.procs {
		inTree[p.pid] = true
		pre := pc.procs[p.pid]
		if pre == nil || p.zombie {
			continue
		}
		pre.index, pre.vpid = i+1, p.vpid
		if pre.fresh {
			if err := kernel.UffdAPI(pre.uffd, kernel.UFFD_FEATURE_WP_ASYNC); err != nil {
				return frozen, fmt.Errorf("pre-dump needs userfaultfd write-protection in async mode (Linux 6.7): %w", ErrUnsupported)
			}
		} else if pc.prevDir != "" {
			if pre.covered, err = coveredByImage(pc.prevDir, p.vpid); err != nil {
				return frozen, err
			}
		}
		// Mappings made since the last pre-dump are tracked from now on.
		if err := pre.register(); err != nil {
			// Gone once it ran on: reaped, or a zombie whose parent
			// has not reaped it yet (whose pagemap gives ESRCH).
			if taskGone(p.pid) {
				logf("pre-dump: task %d is gone: %v", p.pid, err)
				inTree[p.pid] = false
				continue
			}
			return frozen, fmt.Errorf("task %d: %w", p.pid, err)
		}
		pc.order = append(pc.order, pre)
	}
	for pid := range pc.procs {
		if !inTree[pid] {
			pc.drop(pid)
		}
	}
	return frozen, nil
}

// coveredByImage returns the pages the image in dir holds for the task
// with id vpid, its own or its parents': every entry of its pagemap.
func coveredByImage(dir string, vpid int) ([]proc.PageRange, error) {
	path := filepath.Join(dir, images.Pagemap.FileName(vpid))
	_, entries, err := images.ReadPagemap(path)
	if errors.Is(err, os.ErrNotExist) {
		return []proc.PageRange{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("parent image: %w", err)
	}
	var out []proc.PageRange
	for _, e := range entries {
		if e.GetFlags()&peParentTask != 0 {
			continue
		}
		out = append(out, proc.PageRange{Start: e.GetVaddr(), End: e.GetVaddr() + uint64(e.GetNrPages())*pageSize})
	}
	return normalize(out), nil
}

// preDump writes p's pagemap and pages images into dir (the pages
// compressed as compress says): pages the
// parent image holds and p did not write since stay there; the others
// are copied. The pages are protected again, so that the next image
// sees what is written from now on. It returns the bytes copied and
// those left in the parent.
func (p *preProc) preDump(dir, compress string, pr *progress) (uint64, uint64, error) {
	pmr, err := proc.OpenPagemap(p.pid)
	if err != nil {
		return 0, 0, err
	}
	defer pmr.Close()
	written, tracked, err := p.written(pmr, true)
	if err != nil {
		return 0, 0, err
	}
	// Stale pages are copied here, and protected again since: the next
	// image may take them from this one.
	clean := intersect(subtract(tracked, normalize(append(written, p.stale...))), p.covered)
	p.stale = nil
	vmas, err := privateVMAs(p.pid)
	if err != nil {
		return 0, 0, err
	}
	runs, err := collectPages(p.pid, vmas, nil, nil)
	if err != nil {
		return 0, 0, err
	}
	// Pages of mappings no longer tracked would have to be copied again
	// at the dump anyway.
	runs = splitPreCopied(clip(runs, tracked), clean)
	var copy []pageRun
	for _, r := range runs {
		if !r.preCopied {
			copy = append(copy, r)
		}
	}
	path := filepath.Join(dir, images.Pages.FileName(p.index))
	if compress == CompressZstd {
		path += zstdSuffix
	}
	copied, _, n, err := copyRunning(p.pid, copy, path, pr)
	if err != nil {
		return 0, 0, err
	}
	// Both kinds of entries, in address order.
	var entries []*pagemap.PagemapEntry
	var parent uint64
	i := 0
	for _, r := range runs {
		if !r.preCopied {
			continue
		}
		for i < len(copied) && copied[i].GetVaddr() < r.addr {
			entries = append(entries, copied[i])
			i++
		}
		entries = append(entries, &pagemap.PagemapEntry{Vaddr: proto.Uint64(r.addr), NrPages: proto.Uint32(uint32(r.npages)), Flags: proto.Uint32(pePreCopied)})
		parent += r.npages * pageSize
	}
	entries = append(entries, copied[i:]...)
	msgs := []proto.Message{&pagemap.PagemapHead{PagesId: proto.Uint32(uint32(p.index))}}
	for _, e := range entries {
		msgs = append(msgs, e)
	}
	path = filepath.Join(dir, images.Pagemap.FileName(p.vpid))
	if err := images.WriteFile(path, images.Pagemap, msgs...); err != nil {
		return 0, 0, fmt.Errorf("write %s: %w", path, err)
	}
	return n, parent, nil
}

// coverFromPrev reads, for a dump on top of a pre-dump, which pages the
// pre-dump holds for each tracked process, by its id in the images.
func (pc *PreCopy) coverFromPrev(procs []*dumpProc) error {
	if pc == nil || pc.prevDir == "" {
		return nil
	}
	for _, p := range procs {
		pre := pc.procs[p.pid]
		if pre == nil || p.zombie {
			continue
		}
		var err error
		if pre.covered, err = coveredByImage(pc.prevDir, p.vpid); err != nil {
			return err
		}
	}
	return nil
}
