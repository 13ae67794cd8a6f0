package criu

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	corex86 "github.com/checkpoint-restore/go-criu/v7/crit/images/core-x86"
	criucore "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	fsimg "github.com/checkpoint-restore/go-criu/v7/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pstree"
	rseqimg "github.com/checkpoint-restore/go-criu/v7/crit/images/rseq"
	seccompimg "github.com/checkpoint-restore/go-criu/v7/crit/images/seccomp"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/userns"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/vma"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/cgroup"
	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/criu/ptrace"
)

// DumpOptions says what to checkpoint and how.
type DumpOptions struct {
	Pid          int
	Dir          string
	LeaveRunning bool // resume the tasks after the dump instead of killing them
	ShellJob     bool // tasks may hold terminal fds; restore puts them on ctcr's terminal
	FileLocks    bool // keep the file locks tasks hold; without it a held lock fails the dump
	ExtUnixSk    bool // keep unix sockets whose peer is outside the tree; restore reconnects them by the peer's name
	TCPClose     bool // dump established TCP connections to come back as ended, instead of failing
	// Progress, if set, hears the bytes of memory dumped so far, a few
	// times a second while pages are copied.
	Progress func(bytes uint64)
	// TCPEstablished moves TCP connections with an end outside the tree
	// too, dropping their segments from the dump until the restore.
	TCPEstablished bool
	Log            func(format string, args ...any)
	// Thaw, if set, says the tree is frozen by its cgroup: every thread
	// is seized while frozen (the tree cannot change), then Thaw lets
	// them reach their ptrace stops.
	Thaw func() error
	// Extra, if set, runs once every task is seized, to add images of
	// the tree's namespaces to the checkpoint. It runs in a goroutine
	// of its own while the tasks are dumped, and the tree stays stopped
	// until it returns: it must not use ptrace on the tree nor write
	// the images the dump writes.
	Extra func(rootPid int, stage *images.Staging) error
	// BeforeResume, if set with LeaveRunning, runs once the checkpoint is
	// complete, just before the tasks are let go (vzctl's --dump stage
	// freezes the cgroup again here, so they stay suspended).
	BeforeResume func() error
	// AfterCommit, if set, runs once the checkpoint is complete on disk,
	// before the tasks are killed or let go; an error fails the dump and
	// the tasks run on (CRIU's post-dump notification, which runc and
	// podman answer).
	AfterCommit func() error
	// SavesIPC says Extra saves the tree's own IPC namespace (the
	// container front end): descriptors on POSIX message queues of that
	// namespace are then restorable. Without it they fail the dump.
	SavesIPC bool
	// NestedNS says Extra saves the UTS, IPC and network namespaces that
	// tasks below the root have of their own (ns.DumpNested): such tasks
	// are then dumped with their namespace ids instead of refused.
	NestedNS bool
	// HostSysV says Extra saves the SysV shared memory segments of the
	// host's IPC namespace that the tree maps (ns.DumpHostSysV): the
	// mappings are then restorable. Without it (or SavesIPC) they fail
	// the dump.
	HostSysV bool
	// PreCopy, if set, holds the tree's memory copied while it ran
	// (StartPreCopy): the dump copies only the pages written since, and
	// the checkpoint keeps the rest in its parent image. The caller
	// closes it after the dump.
	PreCopy *PreCopy
	// PrevDir is a pre-dump of the tree (PreDump), relative to Dir (as
	// CRIU's --prev-images-dir) or absolute: the dump copies only the
	// pages written since, and the checkpoint's parent link names it.
	PrevDir string
	// Compress is how the tasks' pages images are stored: CompressNone
	// (raw pages-N.img, as CRIU) or CompressZstd (pages-N.img.zst,
	// pages_zstd.go).
	Compress string
	// NoSnapshot makes a LeaveRunning dump copy the memory while the
	// tree is stopped, instead of from copy-on-write snapshot children
	// once it runs again (snapshot.go). A dump with BeforeResume does so
	// anyway: the tree stays suspended, its snapshot could not be reaped.
	NoSnapshot bool
	// ManageCgroups, unless ModeIgnore (the zero value, for callers that
	// manage cgroups themselves), saves the cgroups of tasks that are
	// not in ctcr's own (cgroup.img; criu/cgroups.go).
	ManageCgroups cgroup.Mode
	// GhostLimit caps the bytes of data (holes left out) of one unlinked
	// file kept in the images (CRIU's --ghost-limit); 0 means
	// DefaultGhostLimit, a negative value keeps none that holds data
	// (CRIU's limit 0). A file over it fails the dump.
	GhostLimit int64
}

// DumpStats describes a finished dump.
type DumpStats struct {
	Pid        int
	Tasks      int // processes, zombies included
	Threads    int
	PagesBytes uint64
	Frozen     time.Duration // from the first seize to resume/kill
	Total      time.Duration
	Memory     time.Duration // copying pages into the images
	// SnapshotCopy is the part of Memory spent copying pages from the
	// snapshot children after the tree was let go (Frozen excludes it).
	SnapshotCopy time.Duration
	// Warnings name what the checkpoint keeps differently from how it
	// was (a connection to a peer outside the tree that comes back
	// closed), for the user to see.
	Warnings []string
}

func (o *DumpOptions) logf(format string, args ...any) {
	if o.Log != nil {
		o.Log(format, args...)
	}
}

// dumpProc is one process of the dumped tree.
type dumpProc struct {
	pid, ppid, pgid, sid int // as ctcr sees them (host ids)
	// The ids in the root's PID namespace, which the images hold: the
	// same as the host ids unless the tree lives in its own namespace.
	vpid, vppid, vpgid, vsid int
	zombie                   bool
	stopSig                  int           // the job-control signal it was stopped by, or 0 (seize.go)
	membarrier               uint64        // its membarrier registrations (sched.json)
	xcompPerm                uint64        // the dynamic XSAVE features it may use (sched.json)
	uidMap, gidMap           idMap         // the tree's user namespace's, if its own
	seccomp                  *seccompTable // the dump's seccomp filters
	exitCode                 uint32        // wait status of a zombie
	threads                  []*dumpThread
	stat                     *proc.Stat
	status                   *proc.Status
	shared                   []ptrace.Siginfo // process-wide queue
	mm                       *mm.MmEntry
	fds                      []*fdinfo.FdinfoEntry
	fs                       *fsimg.FsEntry
	pagemap                  []*pagemap.PagemapEntry
	pagesID                  int
	// pageRuns are the pages its image holds, planned while stopped and
	// copied from its snapshot child once the tree runs (snapshot.go).
	pageRuns []pageRun
	// lazy: its pages are planned from its snapshot child once the tree
	// runs (snapshot.go's lazyMem); nil if planned while stopped.
	lazy *lazyMem
	// filesOf and fsOf are the parent whose fd table or fs this process
	// shares (CLONE_FILES, CLONE_FS), or nil.
	filesOf, fsOf *dumpProc
	// vmOf is the process whose memory this one shares (CLONE_VM without
	// being a thread), sighandOf the one whose signal handlers it shares.
	vmOf, sighandOf *dumpProc
	index           int // position in the tree, from 1: the id of its objects
}

func (p *dumpProc) leader() *dumpThread { return p.threads[0] }

// dumpThread is one seized thread.
type dumpThread struct {
	tid     int         // host id
	vtid    int         // id in the root's PID namespace
	regs    ptrace.Regs // as seized; what it resumes with after --leave-running
	xstate  []byte
	sigmask uint64
	stolen  []ptrace.Siginfo // signals dequeued while ctcr held the thread
	ambient uint64           // ambient capabilities
	ctl     *taskCtl
	core    *criucore.CoreEntry
}

// vforkWait bounds how long the dump waits for a parent in vfork to be
// let go by its child.
const vforkWait = time.Second

// dumpTree is every process under the dumped root.
type dumpTree struct {
	procs []*dumpProc // parents before children
	byPid map[int]*dumpProc
	opts  *DumpOptions
	// pidLevel is the depth of the root's PID namespace (1: ctcr's own).
	pidLevel int
	// uidMap and gidMap are those of the tree's own user namespace (nil
	// in ctcr's).
	uidMap, gidMap idMap
	seccomp        seccompTable
	rootCgSet      uint32 // inventory's root_cg_set: ctcr's own cgroups, if cgroup.img was written
	// nsStats holds the stat of each /proc/PID/ns/KIND link nsStat
	// read: sameNamespaces and nestedIDs compare every task's with the
	// root's, 8 stats per task each, of tasks that are stopped.
	nsStats   map[string]unix.Stat_t // guarded by nsStatsMu
	nsStatsMu sync.Mutex
}

// nsStat stats /proc/PID/ns/KIND once per dump.
func (d *dumpTree) nsStat(pid int, kind string) (unix.Stat_t, error) {
	path := fmt.Sprintf("/proc/%d/ns/%s", pid, kind)
	d.nsStatsMu.Lock()
	defer d.nsStatsMu.Unlock()
	if st, ok := d.nsStats[path]; ok {
		return st, nil
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return st, err
	}
	if d.nsStats == nil {
		d.nsStats = map[string]unix.Stat_t{}
	}
	d.nsStats[path] = st
	return st, nil
}

// Dump checkpoints the process tree rooted at opts.Pid into opts.Dir. On
// failure every task is put back as it was and detached; nothing is left
// in Dir but what was there.
func Dump(opts DumpOptions) (*DumpStats, error) {
	if err := CheckCompression(opts.Compress); err != nil {
		return nil, err
	}
	for try := 1; ; try++ {
		st, err := dumpOnce(opts)
		// A task of a tree that forks and exits fast may die while
		// held (an exit under way when it was seized): the ptrace call
		// that meets it says ESRCH. The dump rolled back, so a plain
		// dump simply runs again on the tree as it is now.
		retry := err != nil && try < dumpTries && Interrupted() == nil &&
			opts.PreCopy == nil && opts.PrevDir == "" && opts.Thaw == nil &&
			(errors.Is(err, unix.ESRCH) || errors.Is(err, ptrace.ErrExited))
		if !retry {
			return st, err
		}
		opts.logf("a task died while the tree was held (%v): dumping again", err)
	}
}

// dumpTries bounds how often Dump starts again when a task dies under it.
const dumpTries = 3

func dumpOnce(opts DumpOptions) (*DumpStats, error) {
	start := time.Now()
	pid := opts.Pid
	if pid <= 0 {
		return nil, fmt.Errorf("task %d: %w", pid, ErrNoTask)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		return nil, fmt.Errorf("task %d: %w", pid, ErrNoTask)
	}
	if pid == os.Getpid() {
		return nil, fmt.Errorf("task %d is ctcr itself", pid)
	}
	if st, err := proc.ReadStatus(pid, pid); err == nil && st.Tgid != pid {
		return nil, fmt.Errorf("task %d is a thread of process %d: dump the process", pid, st.Tgid)
	}

	Begin()
	defer End()
	tr := ptrace.NewTracer()
	defer tr.Close()
	// Deferred after Close so it runs first: undoing needs the tracer.
	var rb rollback
	defer rb.run()

	stage, err := images.NewStaging(opts.Dir)
	if err != nil {
		return nil, err
	}
	rb.add(func() { stage.Abort() })
	var warnings []string
	warnf := func(format string, args ...any) {
		opts.logf("warning: "+format, args...)
		warnings = append(warnings, fmt.Sprintf(format, args...))
	}
	if opts.PrevDir != "" {
		if opts.PreCopy != nil {
			return nil, fmt.Errorf("a dump is on top of a pre-dump or of its own pre-copy, not both")
		}
		prev, err := prevImages(opts.Dir, opts.PrevDir)
		if err != nil {
			return nil, err
		}
		pc, err := takePreCopy(pid, prev, opts.PrevDir, warnf)
		if err != nil {
			return nil, err
		}
		defer pc.Close()
		opts.PreCopy = pc
	}

	d := &dumpTree{byPid: map[int]*dumpProc{}, opts: &opts}
	frozenAt := time.Now()
	// Until the dump succeeds, every task is put back as it was:
	// registers, mask, the signals it dequeued, then detached.
	rb.add(func() {
		if err := tr.Do(d.resume); err != nil {
			opts.logf("resume: %v", err)
		}
	})
	seize := d.seize
	if opts.Thaw != nil {
		seize = d.seizeFrozen
	}
	if err := tr.Do(func() error { return seize(pid) }); err != nil {
		return nil, err
	}
	opts.logf("seized %d processes (%v)", len(d.procs), time.Since(frozenAt))
	// The images of the tree's namespaces (Extra) need no ptrace, only
	// the tree held: they are read beside the tasks' state, on another
	// core, and waited for before the tree may run again.
	var extra *besideRun
	if opts.Extra != nil {
		extra = startBeside(func() error { return opts.Extra(pid, stage) }, &rb)
	}
	// So is the root's vDSO, which the restore compares with its own.
	vdso := startBeside(func() error {
		if err := writeVdso(stage.Dir, pid); err != nil {
			return fmt.Errorf("write %s: %w", vdsoFile, err)
		}
		return nil
	}, &rb)
	if err := Interrupted(); err != nil {
		return nil, err
	}
	if err := d.virtualIDs(); err != nil {
		return nil, err
	}
	if err := opts.PreCopy.coverFromPrev(d.procs); err != nil {
		return nil, err
	}
	if err := d.sameNamespaces(); err != nil {
		return nil, err
	}
	if err := d.userIDMaps(); err != nil {
		return nil, err
	}
	if err := d.checkSharing(); err != nil {
		return nil, err
	}
	if err := tr.Do(d.readStates); err != nil {
		return nil, err
	}
	d.keepJobStops()
	if err := d.dumpCgroups(stage); err != nil {
		return nil, err
	}
	sched, err := d.dumpSched()
	if err != nil {
		return nil, err
	}
	if err := writeSched(stage.Path(schedFile), sched); err != nil {
		return nil, fmt.Errorf("write %s: %w", schedFile, err)
	}
	if err := writeAmbient(stage.Dir, d.procs); err != nil {
		return nil, err
	}
	opts.logf("task state read (%v since seize)", time.Since(frozenAt))

	files := newFileTable()
	files.vpidOf = map[int]int{}
	files.vtidOf, files.vpgidOf = map[int]int{}, map[int]int{}
	for _, p := range d.procs {
		files.vpidOf[p.pid] = p.vpid
		files.vpgidOf[p.pgid] = p.vpgid
		for _, th := range p.threads {
			files.vtidOf[th.tid] = th.vtid
		}
	}
	files.fileLocks = opts.FileLocks
	files.tcpClose = opts.TCPClose
	setGhostLimit(files, opts.GhostLimit)
	files.tcpEstablished = opts.TCPEstablished
	files.leaveRunning = opts.LeaveRunning
	files.warnf = warnf
	// Runs before the tasks are resumed (the rollback runs newest first).
	rb.add(func() { files.giveBack(true, opts.logf) })
	files.savesIPC = opts.SavesIPC
	files.hostSysV = opts.HostSysV
	files.nestedNS = opts.NestedNS
	files.rootPid = d.procs[0].pid
	if files.rootNetIno, err = nsInode(d.procs[0].pid, "net"); err != nil {
		return nil, err
	}
	if files.rootIPCIno, err = nsInode(d.procs[0].pid, "ipc"); err != nil {
		return nil, err
	}
	if opts.ExtUnixSk {
		allowExternalUnixPeers(files, d.procs)
	}
	shmem := map[uint64][]proc.PageRange{} // parts of shared anonymous objects dumped so far
	pr := newProgress(opts.Progress)
	var memTime time.Duration
	var pagesBytes uint64
	// With snapshots the pages are only planned here, and copied once
	// the tree runs again.
	useSnapshots := opts.LeaveRunning && !opts.NoSnapshot && opts.BeforeResume == nil
	// The maps and smaps of the processes after the one being dumped
	// are read meanwhile, on the other cores: smaps is the dearest /proc
	// file of a task. Not for what plans its memory otherwise (a
	// snapshot reads its own; a pre-copied process must first end its
	// tracking, which changes its mappings' flags) or shares another's.
	mapsAhead := startReadAheadOf(len(d.procs), func(i int) (*mapsRead, error) {
		p := d.procs[i]
		if p.zombie || p.vmOf != nil || opts.PreCopy.of(p.pid) != nil || useSnapshots {
			return nil, nil
		}
		return readMaps(p.pid)
	})
	defer mapsAhead.end()
	for i, p := range d.procs {
		if p.zombie {
			continue
		}
		if err := Interrupted(); err != nil {
			return nil, err
		}
		if err := dumpTaskFiles(p, files, opts.ShellJob); err != nil {
			return nil, err
		}
		p.pagesID = i + 1
		memStart := time.Now()
		if p.vmOf != nil {
			continue // its memory is the one vmOf dumps
		}
		if useSnapshots && opts.PreCopy.of(p.pid) == nil {
			// Only its mappings now; its pages once it runs.
			if p.lazy, err = planLazy(p, files, shmem); err != nil {
				return nil, err
			}
			memTime += time.Since(memStart)
			continue
		}
		// A failure read ahead is met again, and reported, by
		// planMemory's own read.
		ahead, _ := mapsAhead.get(i)
		runs, err := planMemory(p, d.byPid[p.ppid], files, shmem, opts.PreCopy.of(p.pid), ahead)
		if err != nil {
			return nil, err
		}
		var n uint64
		if useSnapshots {
			p.pageRuns = runs
			p.pagemap, n = pagemapEntries(runs)
		} else if p.pagemap, n, err = p.dumpPages(tr, runs, pagesImagePath(stage, p.pagesID, opts.Compress), pr, opts.logf); err != nil {
			return nil, err
		}
		memTime += time.Since(memStart)
		pagesBytes += n
	}
	if !useSnapshots {
		pr.done()
	}
	opts.logf("files and %d bytes of memory dumped (%v since seize)", pagesBytes, time.Since(frozenAt))
	if err := opts.PreCopy.stage(stage, d.procs); err != nil {
		return nil, err
	}
	if err := writeCompression(stage, opts.Compress); err != nil {
		return nil, err
	}

	if err := errors.Join(vdso.wait(), extra.wait()); err != nil {
		return nil, err
	}
	// With snapshots, the image files are written once the tree runs
	// again: their contents are known now, and encoding and writing
	// them (the first encoding of each message type builds its coder)
	// need not hold the tree stopped.
	var pending *pendingImages
	if useSnapshots {
		pending = &pendingImages{}
	}
	if err := d.writeImages(stage, files, pending); err != nil {
		return nil, err
	}
	// The last moment a signal to ctcr rolls the dump back.
	if err := Interrupted(); err != nil {
		return nil, err
	}
	var snapCopy time.Duration
	if useSnapshots {
		ss := &snapshotSet{logf: opts.logf}
		// Newer than the resume on the stack, so it runs first: the
		// children die, and are reaped by their still seized tasks.
		rb.add(func() {
			err := tr.Do(func() error { return errors.Join(ss.kill(), ss.reapStopped()) })
			if err != nil {
				opts.logf("snapshots: %v", err)
			}
		})
		// Write-protect snapshots first where they fit (snapshot_uffd.go).
		var us *uffdSet
		if mode, err := snapshotMode(); err != nil {
			return nil, err
		} else if mode == "uffd" {
			us = &uffdSet{logf: opts.logf}
			// Closed before the tasks resume: no protection left.
			rb.add(us.closeAll)
		}
		snapStart := time.Now()
		err := tr.Do(func() (err error) {
			for _, p := range d.procs {
				if p.zombie || p.vmOf != nil {
					continue
				}
				ok := false
				path := pagesImagePath(stage, p.pagesID, opts.Compress)
				small := false
				if p.lazy != nil && us != nil {
					runs, why, err := us.take(p, d.byPid[p.ppid], path)
					if err != nil {
						return err
					}
					if why == "" {
						p.pageRuns = runs
						var n uint64
						p.pagemap, n = pagemapEntries(runs)
						pagesBytes += n
						continue // its mm images once it runs (VmFlags)
					}
					if small = why == uffdSmall; small {
						opts.logf("task %d: %s: copied while stopped", p.pid, why)
					} else {
						opts.logf("task %d: no write-protect snapshot (%s): forked", p.pid, why)
					}
				}
				if p.lazy != nil {
					// A pre-copy's and a pre-dump's are planned
					// stopped, and snapshotWorth weighs them.
					if small {
						ok = false
					} else if ok, err = ss.take(p, d.byPid[p.ppid], path); err != nil {
						return err
					}
					if !ok {
						runs, err := p.lazy.planStopped(p, d.byPid[p.ppid])
						if err != nil {
							return err
						}
						p.lazy = nil
						p.pageRuns = runs
						var n uint64
						p.pagemap, n = pagemapEntries(runs)
						pagesBytes += n
						// In place of writeImages's, not written yet.
						if err := p.writeMemImages(pending.writer(stage)); err != nil {
							return err
						}
					}
				} else if why := snapshotWorth(p.pageRuns); why != "" {
					opts.logf("task %d: no snapshot: %s", p.pid, why)
				} else if ok, err = ss.take(p, d.byPid[p.ppid], path); err != nil {
					return err
				}
				if !ok {
					if _, _, err := writePages(p.pid, p.pageRuns, pagesImagePath(stage, p.pagesID, opts.Compress), pr); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		opts.logf("%d write-protect snapshots taken, %d snapshot children forked in %v (%v since seize)", len(us.snapsOrNil()), len(ss.snaps), time.Since(snapStart), time.Since(frozenAt))
		// Let the tree go: from here on nothing rolls back but the
		// images and the children.
		rb.release()
		files.giveBack(true, opts.logf)
		err = tr.Do(d.resume)
		frozen := time.Since(frozenAt)
		reaped := false
		endSnapshots := func() {
			if reaped {
				return
			}
			reaped = true
			// The tree runs: each task is seized again, briefly, to reap.
			err := tr.Do(func() error { return errors.Join(ss.kill(), ss.reapRunning()) })
			if err != nil {
				opts.logf("snapshots: %v", err)
			}
		}
		defer endSnapshots()
		defer us.closeAll()
		var after rollback
		defer after.run()
		after.add(func() { stage.Abort() })
		if err != nil {
			return nil, err
		}
		opts.logf("tree let go after %v frozen; copying its pages from the snapshots", frozen)
		copyStart := time.Now()
		if err := pending.write(); err != nil {
			return nil, err
		}
		if n, err := us.writeMemImages(stage); err != nil {
			return nil, err
		} else if n > 0 {
			opts.logf("mm images of %d write-protected processes written (%v)", n, time.Since(copyStart))
		}
		if err := us.copyAll(pr); err != nil {
			return nil, err
		}
		n, err := ss.planFromChildren(d, stage)
		if err != nil {
			return nil, err
		}
		pagesBytes += n
		opts.logf("pages of %d bytes planned from the snapshots in %v", n, time.Since(copyStart))
		if err := ss.copyPages(pr); err != nil {
			return nil, err
		}
		pr.done()
		snapCopy = time.Since(copyStart)
		memTime += snapCopy
		if len(ss.snaps) == 0 && len(us.snapsOrNil()) == 0 {
			// Every page was copied while stopped (no child could
			// be forked): nothing was copied from a snapshot.
			snapCopy = 0
		}
		// The children go before the commit: their memory is the
		// tree's copied pages.
		endSnapshots()
		// The last moment a signal to ctcr rolls the dump back (the
		// tree runs on either way).
		if err := Interrupted(); err != nil {
			return nil, err
		}
		if err := stage.Commit(); err != nil {
			return nil, err
		}
		after.release()
		opts.logf("images written to %s (%v after the tree was let go)", opts.Dir, snapCopy)
		if opts.AfterCommit != nil {
			if err := opts.AfterCommit(); err != nil {
				return nil, err
			}
		}
		threads := 0
		for _, p := range d.procs {
			threads += len(p.threads)
		}
		return &DumpStats{Pid: pid, Tasks: len(d.procs), Threads: threads, PagesBytes: pagesBytes, Frozen: frozen, Total: time.Since(start),
			Memory: memTime, SnapshotCopy: snapCopy, Warnings: warnings}, nil
	}
	if err := stage.Commit(); err != nil {
		return nil, err
	}
	opts.logf("images written to %s (%v since seize)", opts.Dir, time.Since(frozenAt))

	if opts.AfterCommit != nil {
		// A refusal keeps the tasks running: the rollback resumes them
		// (CRIU's post-dump script). The images stay.
		if err := opts.AfterCommit(); err != nil {
			return nil, err
		}
	}
	// Committed: the checkpoint exists. Drop the rollback and end the
	// tasks as asked.
	rb.release()
	files.giveBack(opts.LeaveRunning, opts.logf)
	if opts.LeaveRunning {
		if opts.BeforeResume != nil {
			if err := opts.BeforeResume(); err != nil {
				tr.Do(d.resume)
				return nil, err
			}
		}
		err = tr.Do(d.resume)
	} else {
		err = tr.Do(d.kill)
	}
	frozen := time.Since(frozenAt)
	if err != nil {
		return nil, err
	}
	threads := 0
	for _, p := range d.procs {
		threads += len(p.threads)
	}
	return &DumpStats{Pid: pid, Tasks: len(d.procs), Threads: threads, PagesBytes: pagesBytes, Frozen: frozen, Total: time.Since(start), Memory: memTime, Warnings: warnings}, nil
}

// sameNamespaces refuses a task whose namespaces are not its root's: the
// images give the tree one set (a task in a nested PID namespace is
// virtualIDs' to name), but for the UTS, IPC and network namespaces the
// caller saves (NestedNS), which nestedIDs records per task.
func (d *dumpTree) sameNamespaces() error {
	root := d.procs[0]
	for _, k := range nsKinds {
		want, err := d.nsStat(root.pid, k.name)
		if err != nil {
			continue // a kind this kernel lacks
		}
		for _, p := range d.procs[1:] {
			if p.zombie {
				continue
			}
			got, err := d.nsStat(p.pid, k.name)
			if err != nil {
				return fmt.Errorf("task %d: %s namespace: %w", p.pid, k.name, err)
			}
			if k.name == "pid" {
				continue // its children's namespace may differ; virtualIDs checks
			}
			if got.Ino == want.Ino && got.Dev == want.Dev {
				continue
			}
			if d.nestedKind(k.name) {
				if k.name == "mnt" {
					if err := d.nestedMountFiles(p); err != nil {
						return err
					}
				}
				continue
			}
			return fmt.Errorf("task %d is in another %s namespace than the root task %d of the tree: %w", p.pid, k.name, root.pid, ErrUnsupported)
		}
	}
	return nil
}

// userIDMaps reads the id maps of the tree's user namespace, if it has
// one of its own: credentials are dumped as seen inside it.
func (d *dumpTree) userIDMaps() error {
	root := d.procs[0].pid
	ids, err := namespaceIDs(root)
	if err != nil || ids["user"] != nsOwn {
		return err
	}
	if d.uidMap, err = readIDMap(root, "uid_map"); err != nil {
		return err
	}
	d.gidMap, err = readIDMap(root, "gid_map")
	for _, p := range d.procs {
		p.uidMap, p.gidMap = d.uidMap, d.gidMap
	}
	return err
}

// virtualIDs finds every id as the root's PID namespace sees it, from
// the NSpid/NSpgid/NSsid lines of /proc/PID/status. A task in a PID
// namespace nested below the root's is refused.
func (d *dumpTree) virtualIDs() error {
	last := innermost
	for i, p := range d.procs {
		st, err := proc.ReadStatus(p.pid, p.pid)
		if err != nil {
			return fmt.Errorf("task %d: %w", p.pid, err)
		}
		levels := max(len(st.NSpid), 1)
		if i == 0 {
			d.pidLevel = levels
		} else if levels != d.pidLevel {
			return fmt.Errorf("task %d is in a PID namespace nested below the root's: %w", p.pid, ErrUnsupported)
		}
		p.vpid = last(st.NSpid, p.pid)
		p.vpgid = last(st.NSpgid, p.pgid)
		p.vsid = last(st.NSsid, p.sid)
		// A thread's id in the root's namespace is its own when there
		// is one level; else startState takes it from the status the
		// read-ahead reads anyway (a status read per thread here cost a
		// process of 1,000 threads some 40 ms). Nothing reads vtid
		// before.
		for _, th := range p.threads {
			th.vtid = th.tid
		}
	}
	for i, p := range d.procs {
		if parent, ok := d.byPid[p.ppid]; ok && i > 0 {
			p.vppid = parent.vpid
		} else if d.pidLevel == 1 {
			p.vppid = p.ppid
		}
		// else: the parent is outside the root's namespace: 0, as CRIU.
	}
	return nil
}

// checkSharing refuses processes that share their memory, fd table, fs
// or signal handlers with another process (CLONE_VM, CLONE_FILES,
// CLONE_FS, CLONE_SIGHAND without CLONE_THREAD): restore recreates each
// process with its own.
func (d *dumpTree) checkSharing() error {
	for i, p := range d.procs {
		if p.zombie {
			continue
		}
		parent, ok := d.byPid[p.ppid]
		if !ok || parent.zombie || i == 0 {
			continue
		}
		if sameObject(parent.pid, p.pid, kcmpVM) {
			// Memory shared with the parent (CLONE_VM): dumped once, by
			// the parent, and shared again at restore. (A vfork parent
			// was refused while the tree was walked.)

			p.vmOf = parent
			if parent.vmOf != nil {
				p.vmOf = parent.vmOf
			}
			if sameObject(parent.pid, p.pid, kcmpSighand) {
				p.sighandOf = parent
			}
		} else if sameObject(parent.pid, p.pid, kcmpSighand) {
			return fmt.Errorf("task %d shares its signal handlers with its parent %d: %w", p.pid, parent.pid, ErrUnsupported)
		}
		// An fd table or fs shared with the parent (CLONE_FILES,
		// CLONE_FS) is dumped once, by its first owner, and shared again
		// at restore. A parent may share it with its own parent: point
		// at the owner, whose id names the fdinfo image it writes (the
		// parent writes none).
		if sameObject(parent.pid, p.pid, kcmpFiles) {
			p.filesOf = parent
			if parent.filesOf != nil {
				p.filesOf = parent.filesOf
			}
		}
		if sameObject(parent.pid, p.pid, kcmpFS) {
			p.fsOf = parent
			if parent.fsOf != nil {
				p.fsOf = parent.fsOf
			}
		}
	}
	return nil
}

// readStates reads every thread's registers and everything each task
// must be asked with remote syscalls.
//
// Preconditions: runs on the tracer thread; the tree is seized.
func (d *dumpTree) readStates() error {
	// What needs no ptrace is read by other goroutines, ahead of this
	// thread (readahead.go).
	ra := startReadAhead(d.procs)
	defer ra.end()
	// A dump that kills the tree leaves the scratch areas where they are
	// (see keepScratch). One whose tree runs on, or that a pre-copy
	// tracks, takes each away at once; so does a process whose memory
	// another one of the tree shares, whose pages must not show it.
	killing := !d.opts.LeaveRunning && d.opts.PreCopy == nil && d.opts.PrevDir == ""
	sharedVM := map[*dumpProc]bool{}
	for _, p := range d.procs {
		if p.vmOf != nil {
			sharedVM[p], sharedVM[p.vmOf] = true, true
		}
	}
	var pending []*stateRead
	finishOne := func() error {
		sr := pending[0]
		pending = pending[1:]
		return sr.finish()
	}
	// A failure leaves no batch running: the rollback needs every task
	// stopped.
	drain := func() {
		for len(pending) > 0 {
			finishOne()
		}
	}
	for _, p := range d.procs {
		p.seccomp = &d.seccomp
		if p.zombie {
			continue
		}
		if err := Interrupted(); err != nil {
			drain()
			return err
		}
		// Processes that share one memory are asked one at a time: each
		// maps its scratch area into that memory, and one's must not be
		// there while another's is being set up.
		if sharedVM[p] {
			for len(pending) > 0 {
				if err := finishOne(); err != nil {
					drain()
					return err
				}
			}
		}
		sr, err := p.startState(ra, killing && !sharedVM[p], d.opts.logf)
		if err != nil {
			drain()
			return err
		}
		pending = append(pending, sr)
		if len(pending) >= queryWindow || sharedVM[p] {
			if err := finishOne(); err != nil {
				drain()
				return err
			}
		}
	}
	for len(pending) > 0 {
		if err := finishOne(); err != nil {
			drain()
			return err
		}
	}
	return nil
}

// queryWindow is how many processes readStates lets answer their query
// batch at once. Asking a process costs a few ptrace round trips in
// which the tracer thread only waits for the task to be scheduled:
// while the next processes' scratch areas are mapped, the batches of
// the ones before run, on the other core or between two of ctcr's
// waits, instead of each waiting its turn.
const queryWindow = 8

// stateRead is a process whose state readStates has started to read:
// its query batch may still run.
type stateRead struct {
	p       *dumpProc
	facts   *procFacts
	maps    []proc.Mapping
	query   *pendingQuery
	mayKeep bool // its scratch area may stay (keepScratch)
}

// startState reads p's threads' registers, maps p's scratch area and
// lets p run the batch that asks it what only it can tell; finish reads
// the rest and builds p's core images with the facts ra read ahead.
//
// Preconditions: runs on the tracer thread; the tree is seized.
func (p *dumpProc) startState(ra *readAhead, mayKeep bool, logf func(string, ...any)) (*stateRead, error) {
	pid := p.pid
	var err error
	// The ptrace reads first: the facts are often still being read.
	for _, th := range p.threads {
		if th.regs, err = ptrace.GetRegs(th.tid); err != nil {
			return nil, err
		}
		if th.xstate, err = ptrace.GetXState(th.tid); err != nil {
			return nil, err
		}
		if err := tilesInUse(th.xstate); err != nil {
			return nil, fmt.Errorf("task %d thread %d: %w", pid, th.tid, err)
		}
		// In sigsuspend, ppoll and the like, the kernel reports the mask
		// the syscall will put back (Linux 5.2+), the thread's own.
		if th.sigmask, err = ptrace.GetSigmask(th.tid); err != nil {
			return nil, err
		}
	}
	facts, err := ra.of(p)
	if err != nil {
		return nil, err
	}
	maps := facts.maps
	if maps == nil {
		if maps, err = proc.Maps(pid); err != nil {
			return nil, fmt.Errorf("task %d: %w", pid, err)
		}
	}
	mem, err := ptrace.OpenMem(pid)
	if err != nil {
		return nil, fmt.Errorf("task %d: %w", pid, err)
	}
	ip, gadget, ok := findLoneInsn(mem, maps)
	if !ok {
		mem.Close()
		return nil, fmt.Errorf("task %d has no vDSO to run remote syscalls from: %w", pid, ErrUnsupported)
	}
	statuses := make([]*proc.Status, len(p.threads))
	for i := range p.threads {
		statuses[i] = facts.threads[i].status
	}
	sig := p.stopSignalOf(statuses)
	for i, th := range p.threads {
		st := facts.threads[i].status
		tgid, vtid := innermost(st.NStgid, pid), innermost(st.NSpid, th.tid)
		th.vtid = vtid
		th.ctl = &taskCtl{tid: th.tid, mem: mem, xstate: th.xstate, r: &ptrace.Remote{Tid: th.tid, IP: ip, Base: th.regs,
			Own: &ptrace.OwnState{Mask: th.sigmask, Sig: sig, TgkillArgs: [2]uint64{uint64(tgid), uint64(vtid)}}}}
	}
	mainRsp := uint64(0)
	for _, th := range p.threads {
		if th.tid == pid {
			mainRsp = th.regs.Rsp
		}
	}
	// A pre-copy's write protection is asynchronous (UFFD_FEATURE_WP_ASYNC):
	// writing the frame only marks its page written, to be copied again.
	p.leader().ctl.lone = findLoneSpot(mem, maps, gadget, mainRsp)
	// A scratch area that may stay until the kill goes where it touches
	// no mapping (keepScratch).
	at := uint64(0)
	if mayKeep {
		at = scratchPlace(maps)
	}
	if err := p.mapScratchAt(maps, false, at); err != nil { // its query batch names it
		return nil, err
	}
	// Signals the threads dequeued on their way to the seize stop go
	// back into their queues now, where they stay while the threads are
	// held: a ctcr that dies from here on loses none of them, and the
	// image finds them with the others.
	for _, th := range p.threads {
		if err := th.requeue(p.pid, th.stolen); err != nil {
			return nil, err
		}
		th.stolen = nil
	}
	if err := p.dropLeftUffds(facts.leftUffds, logf); err != nil {
		return nil, err
	}
	lead := p.leader().ctl
	p.status = facts.threads[0].status
	pq, err := startQueryTask(lead)
	if err != nil {
		return nil, fmt.Errorf("task %d: %w", pid, err)
	}
	return &stateRead{p: p, facts: facts, maps: maps, query: pq, mayKeep: mayKeep}, nil
}

// finish collects what p's query batch answered and reads the rest of
// p's state (see startState).
//
// Preconditions: runs on the tracer thread.
func (sr *stateRead) finish() error {
	p, facts, maps := sr.p, sr.facts, sr.maps
	pid := p.pid
	q, err := sr.query.finish()
	if err != nil {
		return fmt.Errorf("task %d: %w", pid, err)
	}
	if p.shared, err = ptrace.PendingSignals(pid, true); err != nil {
		return err
	}
	if ptimers := facts.timers; len(ptimers) > 0 {
		tidOf := map[int]int{}
		for _, th := range p.threads {
			tidOf[th.tid] = th.vtid
		}
		if q.timers.Posix, err = queryPosixTimers(p.leader().ctl, fmt.Sprintf("task %d", pid), ptimers, tidOf); err != nil {
			return err
		}
	}
	tqs, err := p.queryThreads()
	if err != nil {
		return err
	}
	for i, th := range p.threads {
		tq := &q.threadQuery
		if i > 0 {
			tq = tqs[i]
		}
		if th.core, err = dumpThreadCore(p, th, &facts.threads[i], tq); err != nil {
			return err
		}
	}
	p.leader().core.Tc = &criucore.TaskCoreEntry{
		TaskState:      proto.Uint32(taskAlive),
		ExitCode:       proto.Uint32(0),
		Personality:    proto.Uint32(facts.personality),
		Flags:          proto.Uint32(p.stat.Flags),
		BlkSigset:      proto.Uint64(p.leader().sigmask),
		Comm:           proto.String(p.stat.Comm),
		Timers:         q.timers,
		Rlimits:        facts.rlimits,
		SignalsS:       signalQueue(p.shared),
		Sigactions:     q.sigactions,
		ChildSubreaper: proto.Bool(q.subreaper),
		OomScoreAdj:    facts.knobs.OomScoreAdj,
		Loginuid:       facts.knobs.Loginuid,
	}
	s := p.stat
	p.mm = &mm.MmEntry{
		MmStartCode: proto.Uint64(s.StartCode), MmEndCode: proto.Uint64(s.EndCode),
		MmStartData: proto.Uint64(s.StartData), MmEndData: proto.Uint64(s.EndData),
		MmStartStack: proto.Uint64(s.StartStack), MmStartBrk: proto.Uint64(s.StartBrk), MmBrk: proto.Uint64(q.brk),
		MmArgStart: proto.Uint64(s.ArgStart), MmArgEnd: proto.Uint64(s.ArgEnd),
		MmEnvStart: proto.Uint64(s.EnvStart), MmEnvEnd: proto.Uint64(s.EnvEnd),
		MmSavedAuxv: facts.auxv, Dumpable: proto.Int32(int32(q.dumpable)), ThpDisabled: proto.Bool(q.thpOff),
	}
	if sr.mayKeep && p.keepScratch(q.scratchNamed, maps) {
		return nil
	}
	// The scratch mapping must be gone before memory is read.
	return p.dropScratch()
}

// keepScratch reports whether p's scratch area may stay mapped until p
// is killed at the end of the dump, which saves the lone munmap call
// (two of the process's ptrace round trips, a third of what asking it
// costs). The area is then its own mapping, left out of the memory the
// dump reads (scratchArea); a rollback takes it away before resuming p
// (resume), and a ctcr that dies meanwhile leaves it named ctcr-scratch
// for the next dump to remove, as one that dies inside a batch does.
// It must be a mapping of its own: named (the query batch names it), or,
// on a kernel that names no anonymous mapping, touching no mapping of
// maps (read before it was made), with which it could have merged.
func (p *dumpProc) keepScratch(named bool, maps []proc.Mapping) bool {
	start, end, ok := p.scratchArea()
	if !ok {
		return false
	}
	if named {
		return true
	}
	for _, m := range maps {
		if m.End == start || m.Start == end {
			return false
		}
	}
	return true
}

// scratchPlace returns an address for a scratch area with a free page
// on each side, so that it can merge with no mapping of maps (the
// process's, sorted), or 0 if none is found. It is at the top of the
// highest gap between two mappings of the user address space that is
// not the stack's guard gap, where the kernel itself puts new
// mappings.
func scratchPlace(maps []proc.Mapping) uint64 {
	const userTop = 1 << 47    // x86-64 4-level paging: TASK_SIZE_MAX
	const stackGuard = 1 << 20 // the kernel's default stack_guard_gap
	need := uint64(scratchSize+frameAreaSize) + 2*pageSize
	for i := len(maps) - 1; i > 0; i-- {
		lo, hi := maps[i-1].End, maps[i].Start
		if hi > userTop || hi <= lo {
			continue
		}
		if maps[i].Path == "[stack]" {
			if hi-lo < stackGuard {
				continue
			}
			hi -= stackGuard
		}
		if hi-lo >= need {
			return hi - pageSize - uint64(scratchSize+frameAreaSize)
		}
	}
	return 0
}

// scratchArea returns the bounds of p's scratch mapping, if p has one.
func (p *dumpProc) scratchArea() (start, end uint64, ok bool) {
	if len(p.threads) == 0 || p.threads[0].ctl == nil || p.threads[0].ctl.runner == 0 {
		return 0, 0, false
	}
	start = p.threads[0].ctl.runner
	return start, start + scratchSize + frameAreaSize, true
}

// dumpThreadCore builds the core image of one thread from what the
// tracer asks it and the facts f read from outside.
func dumpThreadCore(p *dumpProc, th *dumpThread, f *threadFacts, q *threadQuery) (*criucore.CoreEntry, error) {
	tid := th.tid
	where := fmt.Sprintf("task %d thread %d", p.pid, tid)
	st, tstat, robust, robustLen, attr := f.status, f.stat, f.robust, f.robustLen, f.sched
	rs, err := ptrace.GetRseq(tid)
	if err != nil {
		return nil, err
	}
	pending, err := ptrace.PendingSignals(tid, false)
	if err != nil {
		return nil, err
	}
	gp := restartedRegs(th.regs)
	fp, err := fpregsToImage(th.xstate)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if q.membarrier != 0 {
		p.membarrier = q.membarrier // per process: only its main thread's query asks
	}
	if q.xcompPerm != 0 {
		p.xcompPerm = q.xcompPerm // per process, as membarrier
	}
	pending = append(pending, th.stolen...)
	pending = append(pending, th.ctl.r.Stolen...)
	c := &criucore.CoreEntry{
		Mtype: criucore.CoreEntry_X86_64.Enum(),
		ThreadInfo: &corex86.ThreadInfoX86{
			ClearTidAddr: proto.Uint64(q.clearTid),
			Gpregs:       gpregsToImage(&gp),
			Fpregs:       fp,
		},
		ThreadCore: &criucore.ThreadCoreEntry{
			FutexRla:    proto.Uint64(robust),
			FutexRlaLen: proto.Uint32(uint32(robustLen)),
			SchedNice:   proto.Int32(attr.Nice),
			SchedPolicy: proto.Uint32(schedPolicyToImage(attr)),
			SchedPrio:   proto.Uint32(attr.Priority),
			BlkSigset:   proto.Uint64(th.sigmask),
			Sas:         q.altstack,
			PdeathSig:   proto.Uint32(q.pdeathsig),
			SignalsP:    signalQueue(pending),
			Creds:       dumpCreds(st, uint32(q.secbits), p.uidMap, p.gidMap),
			Comm:        proto.String(tstat.Comm),
		},
	}
	th.ambient = st.CapAmb // creds_entry has no field for them: caps.json
	if err := p.seccomp.dumpSeccomp(st, tid, c.ThreadCore); err != nil {
		return nil, fmt.Errorf("task %d: %w", p.pid, err)
	}
	if rs.Pointer != 0 {
		c.ThreadCore.RseqEntry = &rseqimg.RseqEntry{RseqAbiPointer: proto.Uint64(rs.Pointer), RseqAbiSize: proto.Uint32(rs.Size), Signature: proto.Uint32(rs.Signature)}
	}
	return c, nil
}

// scratchName names ctcr's scratch mapping in a dumped task
// (PR_SET_VMA_ANON_NAME): one a ctcr that died left behind shows in
// /proc/PID/maps as [anon:ctcr-scratch], and the next dump removes it.
const scratchName = "ctcr-scratch"

// mapScratch maps an executable scratch area in the process being
// dumped, shared by its threads: the syscall runner in its first page,
// argument data after it, then the signal-frame area. It also removes
// the scratch areas of an earlier ctcr that died (maps: the process's
// mappings, or nil). With name it names the area (else the caller's
// next batch must).
//
// Preconditions: runs on the tracer thread; every thread has its ctl.
func (p *dumpProc) mapScratch(maps []proc.Mapping, name bool) error {
	return p.mapScratchAt(maps, name, 0)
}

// mapScratchAt is mapScratch with the area at at if at is not 0 and
// that place is free (else where the kernel puts it).
//
// Preconditions: runs on the tracer thread; every thread has its ctl.
func (p *dumpProc) mapScratchAt(maps []proc.Mapping, name bool, at uint64) error {
	c := p.leader().ctl
	size := uint64(scratchSize + frameAreaSize)
	flags := unix.MAP_PRIVATE | unix.MAP_ANONYMOUS
	if at != 0 {
		flags |= unix.MAP_FIXED_NOREPLACE
	}
	addr, err := c.mmap(at, size, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC, flags, -1, 0)
	if err != nil && at != 0 {
		addr, err = c.mmap(0, size, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, -1, 0)
	}
	if err != nil {
		return fmt.Errorf("task %d: scratch %w", c.tid, err)
	}
	if err := c.installRunner(addr); err != nil {
		return err
	}
	frames := &frameArea{addr: addr + scratchSize}
	for _, th := range p.threads {
		t := th.ctl
		if t == nil || t.r.Own == nil {
			continue // a rollback before readState reached it
		}
		t.scratch, t.size, t.runner, t.frames = addr+pageSize, scratchSize-pageSize, addr, frames
		t.r.Own.Stop, t.r.Own.FrameSP = addr+runnerStop, frames.addr+8
	}
	b := c.newBatch()
	for _, m := range maps {
		if isLeftScratch(c.mem, m) {
			b.add(unix.SYS_MUNMAP, m.Start, m.End-m.Start)
		}
	}
	if _, err := b.run(); err != nil {
		return fmt.Errorf("task %d: remove the scratch area a dead ctcr left: %w", p.pid, err)
	}
	if !name {
		return nil
	}
	// A kernel without CONFIG_ANON_VMA_NAME says EINVAL: the area then
	// goes unnamed.
	b = c.newBatch()
	nameAt, err := b.put(scratchName)
	if err != nil {
		return err
	}
	b.add(unix.SYS_PRCTL, unix.PR_SET_VMA, unix.PR_SET_VMA_ANON_NAME, addr, size, nameAt)
	b.run()
	return nil
}

// dropLeftUffds closes, in the task, the userfaultfds a ctcr that died
// during a pre-copy left there: it has the task make one, takes it and
// has it closed, and dying in between leaves an fd the task never
// opened. Such a userfaultfd never had its API handshake (fdinfo shows
// no UFFD_FEATURE_INITIALIZED), so nothing can use it; one the program
// made itself has had it before any use.
//
// Preconditions: runs on the tracer thread; the scratch area is mapped.
// closed lists them (leftUffds, read ahead; none for a process whose fd
// table is its parent's).
func (p *dumpProc) dropLeftUffds(closed []int, logf func(string, ...any)) error {
	if len(closed) == 0 {
		return nil
	}
	b := p.leader().ctl.newBatch()
	for _, fd := range closed {
		b.add(unix.SYS_CLOSE, uint64(fd))
	}
	if _, err := b.run(); err != nil {
		return fmt.Errorf("task %d: close the userfaultfds %v a dead ctcr left: %w", p.pid, closed, err)
	}
	if len(closed) > 0 {
		logf("task %d: closed fds %v, userfaultfds a ctcr that died during a pre-copy left", p.pid, closed)
	}
	return nil
}

// isLeftScratch tells a scratch area a ctcr that died left in a task:
// named so (kernels with CONFIG_ANON_VMA_NAME), or, unnamed, a private
// anonymous read-write-execute mapping of the scratch area's size that
// starts with the syscall runner.
func isLeftScratch(mem *ptrace.Mem, m proc.Mapping) bool {
	if m.Path == "[anon:"+scratchName+"]" {
		return true
	}
	if m.Path != "" || !m.Read || !m.Write || !m.Exec || m.End-m.Start != scratchSize+frameAreaSize {
		return false
	}
	b := make([]byte, len(syscallRunner))
	return mem.ReadAt(b, m.Start) == nil && bytes.Equal(b, syscallRunner)
}

// requeue queues signals again in thread th of process pid, from the
// thread itself: the kernel lets a task queue a signal with a kernel
// si_code (SIGCHLD's) only to itself, named with its ids in its own PID
// namespace.
//
// Preconditions: runs on the tracer thread; the scratch area is mapped.
func (th *dumpThread) requeue(pid int, sigs []ptrace.Siginfo) error {
	if len(sigs) == 0 {
		return nil
	}
	tgid, tid := th.ctl.r.Own.TgkillArgs[0], th.ctl.r.Own.TgkillArgs[1]
	b := th.ctl.newBatch()
	for _, si := range sigs {
		at, err := b.put(si[:])
		if err != nil {
			return err
		}
		b.add(unix.SYS_RT_TGSIGQUEUEINFO, tgid, tid, uint64(si.Signo()), at)
	}
	if _, err := b.run(); err != nil {
		return fmt.Errorf("task %d thread %d: queue %d dequeued signals again: %w", pid, th.tid, len(sigs), err)
	}
	return nil
}

// stopSignal chooses the signal the syscall runner raises to stop p's
// threads after a batch (see ptrace.OwnState): one the process ignores,
// so that it is dropped if ctcr dies, and that none of its threads has
// pending or dequeued, so that it cannot merge with one of theirs.
func (p *dumpProc) stopSignal() (unix.Signal, error) {
	statuses := make([]*proc.Status, len(p.threads))
	for i, th := range p.threads {
		st, err := proc.ReadStatus(p.pid, th.tid)
		if err != nil {
			return 0, fmt.Errorf("task %d thread %d: %w", p.pid, th.tid, err)
		}
		statuses[i] = st
	}
	return p.stopSignalOf(statuses), nil
}

// stopSignalOf is stopSignal with the status of each of p's threads
// read already (statuses[i]: p.threads[i]'s).
func (p *dumpProc) stopSignalOf(statuses []*proc.Status) unix.Signal {
	st := statuses[0] // the main thread's: the process-wide fields
	busy := st.SigCgt | st.ShdPnd
	for i, th := range p.threads {
		busy |= statuses[i].SigPnd
		for _, si := range th.stolen {
			if n := si.Signo(); n > 0 && n <= 64 {
				busy |= 1 << (n - 1)
			}
		}
	}
	free := func(s unix.Signal) bool { return busy&(1<<(uint(s)-1)) == 0 }
	// Ignored by default, unless the process set a handler.
	for _, s := range []unix.Signal{unix.SIGURG, unix.SIGWINCH, unix.SIGCHLD} {
		if free(s) {
			return s
		}
	}
	for s := unix.Signal(1); s < 32; s++ {
		if st.SigIgn&(1<<(uint(s)-1)) != 0 && free(s) && s != unix.SIGKILL && s != unix.SIGSTOP {
			return s
		}
	}
	// Every candidate is caught (the Go runtime catches all of them):
	// SIGURG, which Go uses to preempt its threads and every runtime
	// that catches it must take unasked. A ctcr that dies between the
	// raise and the stop makes the handler run once.
	return unix.SIGURG
}

// dropScratch unmaps the process's scratch area. The runner cannot
// unmap the page it runs from, so this is a lone call from the vDSO:
// with the one that maps the area, the only window in which a ctcr that
// dies leaves the thread lost (see ptrace.OwnState).
//
// Preconditions: runs on the tracer thread.
func (p *dumpProc) dropScratch() error {
	c := p.leader().ctl
	if c == nil || c.scratch == 0 {
		return nil
	}
	addr := c.runner
	for _, th := range p.threads {
		if th.ctl != nil {
			th.ctl.scratch, th.ctl.size, th.ctl.runner, th.ctl.frames = 0, 0, 0, nil
		}
	}
	if _, err := c.call(unix.SYS_MUNMAP, addr, scratchSize+frameAreaSize); err != nil {
		return fmt.Errorf("task %d: unmap scratch: %w", c.tid, err)
	}
	return nil
}

// Task states of core images (compel's COMPEL_TASK_*).
const (
	taskAlive  = 0x1
	taskDead   = 0x2
	taskZombie = 0x6
)

// dumpTaskFiles records fds, cwd, root, umask and the executable.
func dumpTaskFiles(p *dumpProc, files *fileTable, shellJob bool) error {
	pid := p.pid
	if p.filesOf == nil {
		fds, err := dumpFds(pid, p.vpid, files, shellJob)
		if err != nil {
			return err
		}
		p.fds = fds
	}
	fsID := func(name string) (uint32, error) {
		path, err := os.Readlink(fmt.Sprintf("/proc/%d/%s", pid, name))
		if err != nil {
			return 0, fmt.Errorf("task %d %s: %w", pid, name, err)
		}
		if strings.HasSuffix(path, " (deleted)") {
			return dumpRemovedFsDir(files, pid, name, path) // files_ghostkinds.go
		}
		st, err := files.stats.statInTree(pid, path)
		if err != nil {
			return 0, fmt.Errorf("task %d %s: %w", pid, name, err)
		}
		// In its own mount namespace's view only: the restored task
		// changes to it there (restoreFS resolves it in the task).
		mntID, err := files.viewMount(fmt.Sprintf("/proc/%d/%s", pid, name), path, &st, false)
		if err != nil {
			return 0, fmt.Errorf("task %d %s: %w", pid, name, err)
		}
		return files.regFileIn(path, unix.O_RDONLY|unix.O_DIRECTORY, 0, &st, mntID), nil
	}
	cwd, err := fsID("cwd")
	if err != nil {
		return err
	}
	root, err := fsID("root")
	if err != nil {
		return err
	}
	p.fs = &fsimg.FsEntry{CwdId: proto.Uint32(cwd), RootId: proto.Uint32(root), Umask: proto.Uint32(p.status.Umask)}

	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return fmt.Errorf("task %d exe: %w", pid, err)
	}
	if strings.HasSuffix(exe, " (deleted)") {
		id, err := dumpExeGhost(files, pid, exe)
		if err != nil {
			return err
		}
		p.mm.ExeFileId = proto.Uint32(id)
		return nil
	}
	st, err := files.stats.statInTree(pid, exe)
	if err != nil {
		return fmt.Errorf("task %d exe: %w", pid, err)
	}
	mntID, err := files.viewMount(fmt.Sprintf("/proc/%d/exe", pid), exe, &st, false)
	if err != nil {
		return fmt.Errorf("task %d exe: %w", pid, err)
	}
	p.mm.ExeFileId = proto.Uint32(files.regFileIn(exe, unix.O_RDONLY, 0, &st, mntID))
	return nil
}

// planMemory records the VMAs of p in p.mm and returns the runs of pages
// its pages image holds, without copying any (writePages copies them from
// the stopped task, or a snapshot's copyPages from its child). Each part
// of a shared anonymous object is written once, by the first mapping of
// it (shmem: the parts of each object, by offset, written so far). With
// pre, the pages pre-copied and not written since are left in the parent
// image.
//
// ahead, if not nil, is p's maps and VmFlags read since its state was:
// the tasks are stopped and nothing ctcr did since changed p's
// mappings.
func planMemory(p, parent *dumpProc, files *fileTable, shmem map[uint64][]proc.PageRange, pre *preProc, ahead *mapsRead) ([]pageRun, error) {
	pid := p.pid
	pp, err := openParentPages(p, parent)
	if err != nil {
		return nil, err
	}
	defer pp.close()
	var clean []proc.PageRange
	if pre != nil {
		// First: the end of the tracking clears the protection marks
		// (the pagemap shows them as swapped pages) and the registered
		// flags of mappings (which keep them apart).
		var err error
		if clean, err = pre.clean(); err != nil {
			return nil, fmt.Errorf("task %d: pre-copied pages: %w", pid, err)
		}
	}
	if ahead == nil || pre != nil {
		if ahead, err = readMaps(pid); err != nil {
			return nil, err
		}
	}
	maps, vmFlags := ahead.maps, ahead.vmFlags
	only, err := classifyVMAs(p, maps, vmFlags, files, shmem)
	if err != nil {
		return nil, err
	}
	runs, err := collectPages(pid, p.mm.Vmas, only, pp)
	if err != nil {
		return nil, err
	}
	runs = splitPreCopied(runs, clean)
	markNoFork(runs, p.mm.Vmas, vmFlags)
	return runs, nil
}

// mapsRead is a process's /proc/PID/maps and the VmFlags of its smaps.
type mapsRead struct {
	maps    []proc.Mapping
	vmFlags map[uint64][]string
}

func readMaps(pid int) (*mapsRead, error) {
	maps, err := proc.Maps(pid)
	if err != nil {
		return nil, fmt.Errorf("task %d: %w", pid, err)
	}
	vmFlags, err := proc.ReadVmFlags(pid)
	if err != nil {
		return nil, fmt.Errorf("task %d: %w", pid, err)
	}
	return &mapsRead{maps: maps, vmFlags: vmFlags}, nil
}

// openParentPages opens the pagemap of p's parent in the dump, if it has
// memory of its own, for collectPages to find the pages they still
// share; nil if not.
func openParentPages(p, parent *dumpProc) (*parentPages, error) {
	if parent == nil || parent == p || parent.zombie || parent.mm == nil || len(parent.mm.Vmas) == 0 {
		return nil, nil
	}
	pmr, err := proc.OpenPagemap(parent.pid)
	if err != nil {
		return nil, fmt.Errorf("task %d: %w", parent.pid, err)
	}
	return &parentPages{vmas: parent.mm.Vmas, pmr: pmr}, nil
}

// classifyVMAs turns the mappings of p into its VMA entries (p.mm.Vmas,
// in address order, advice from vmFlags when known) and its AIO rings,
// and returns, for each shared anonymous VMA, the part of its object no
// VMA dumped before covers (shmem records what they covered).
func classifyVMAs(p *dumpProc, maps []proc.Mapping, vmFlags map[uint64][]string, files *fileTable, shmem map[uint64][]proc.PageRange) (map[*vma.VmaEntry][]proc.PageRange, error) {
	pid := p.pid
	var vmas []*vma.VmaEntry
	only := map[*vma.VmaEntry][]proc.PageRange{}
	scratchStart, scratchEnd, hasScratch := p.scratchArea()
	for _, m := range maps {
		if hasScratch && m.Start == scratchStart && m.End == scratchEnd {
			continue // ctcr's own, kept until the kill (keepScratch)
		}
		e, err := classifyVMA(pid, m, vmFlags[m.Start], files)
		if err != nil {
			return nil, err
		}
		if e == nil {
			continue
		}
		adviseVMA(e, vmFlags[e.GetStart()])
		vmas = append(vmas, e)
		if e.GetStatus()&vmaAnonShared != 0 {
			// Only the part of the object no mapping before showed.
			id, off := e.GetShmid(), e.GetPgoff()
			part := []proc.PageRange{{Start: off, End: off + e.GetEnd() - e.GetStart()}}
			var addrs []proc.PageRange
			for _, r := range subtract(part, shmem[id]) {
				addrs = append(addrs, proc.PageRange{Start: e.GetStart() + r.Start - off, End: e.GetStart() + r.End - off})
			}
			only[e] = addrs
			shmem[id] = normalize(append(shmem[id], part...))
		}
	}
	sortVMAs(vmas)
	p.mm.Vmas = vmas
	var err error
	if p.mm.Aios, err = dumpAioRings(pid, vmas, files); err != nil {
		return nil, err
	}
	return only, nil
}

// writeMemImages writes p's mm and pagemap images through w.
func (p *dumpProc) writeMemImages(w func(k images.Kind, name string, msgs ...proto.Message) error) error {
	if err := w(images.Mm, images.Mm.FileName(p.vpid), p.mm); err != nil {
		return err
	}
	msgs := []proto.Message{&pagemap.PagemapHead{PagesId: proto.Uint32(uint32(p.pagesID))}}
	for _, e := range p.pagemap {
		msgs = append(msgs, e)
	}
	return w(images.Pagemap, images.Pagemap.FileName(p.vpid), msgs...)
}

func (d *dumpTree) writeImages(stage *images.Staging, files *fileTable, pending *pendingImages) error {
	w := func(k images.Kind, name string, msgs ...proto.Message) error {
		if err := images.WriteFile(stage.Path(name), k, msgs...); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		return nil
	}
	// The images of each process are written by goroutines on every
	// CPU (writeQueued); those of the whole tree after them, the
	// inventory last.
	var queued []func() error
	q := func(k images.Kind, name string, msgs ...proto.Message) error {
		queued = append(queued, func() error { return w(k, name, msgs...) })
		return nil
	}
	if pending != nil {
		// Every image is only kept, for pending.write.
		w = pending.writer(stage)
		q = w
	}
	var tree []proto.Message
	var rootIDs *criucore.TaskKobjIdsEntry
	nsIDs, err := namespaceIDs(d.procs[0].pid)
	if err != nil {
		return err
	}
	if d.uidMap != nil {
		if err := w(images.Userns, images.Userns.FileName(nsOwn), &userns.UsernsEntry{UidMap: d.uidMap, GidMap: d.gidMap}); err != nil {
			return err
		}
	}
	if nsIDs["time"] == nsOwn {
		e, err := dumpTimens(d.procs[0].pid)
		if err != nil {
			return err
		}
		if err := w(images.Timens, images.Timens.FileName(nsOwn), e); err != nil {
			return err
		}
	}
	if len(d.seccomp.filters) > 0 {
		if err := w(images.Seccomp, images.Seccomp.FileName(), &seccompimg.SeccompEntry{SeccompFilters: d.seccomp.filters}); err != nil {
			return err
		}
	}
	for i, p := range d.procs {
		id := uint32(i + 1)
		p.index = i + 1
		filesID, fsID := id, id
		if p.filesOf != nil {
			filesID = uint32(p.filesOf.index)
		}
		if p.fsOf != nil {
			fsID = uint32(p.fsOf.index)
		}
		vmID, sighandID := id, id
		if p.vmOf != nil {
			vmID = uint32(p.vmOf.index)
		}
		if p.sighandOf != nil {
			sighandID = uint32(p.sighandOf.index)
		}
		ids := &criucore.TaskKobjIdsEntry{VmId: proto.Uint32(vmID), FilesId: proto.Uint32(filesID), FsId: proto.Uint32(fsID), SighandId: proto.Uint32(sighandID)}
		nsIDs.fill(ids)
		if err := d.nestedIDs(p, ids); err != nil {
			return err
		}
		if i == 0 {
			rootIDs = ids
		}
		ps := &pstree.PstreeEntry{Pid: proto.Uint32(uint32(p.vpid)), Ppid: proto.Uint32(uint32(p.vppid)), Pgid: proto.Uint32(uint32(p.vpgid)), Sid: proto.Uint32(uint32(p.vsid))}
		if p.zombie {
			// A zombie's core holds only its state and exit status.
			ps.Threads = []uint32{uint32(p.vpid)}
			core := &criucore.CoreEntry{Mtype: criucore.CoreEntry_X86_64.Enum(), Tc: &criucore.TaskCoreEntry{
				TaskState: proto.Uint32(taskZombie), ExitCode: proto.Uint32(p.exitCode), Personality: proto.Uint32(0),
				Flags: proto.Uint32(0), BlkSigset: proto.Uint64(0), Comm: proto.String(p.stat.Comm),
			}}
			if err := q(images.Core, images.Core.FileName(p.vpid), core); err != nil {
				return err
			}
			tree = append(tree, ps)
			continue
		}
		for _, th := range p.threads {
			ps.Threads = append(ps.Threads, uint32(th.vtid))
		}
		tree = append(tree, ps)
		p.leader().core.Ids = ids
		for _, th := range p.threads {
			if err := q(images.Core, images.Core.FileName(th.vtid), th.core); err != nil {
				return err
			}
		}
		if err := q(images.Ids, images.Ids.FileName(p.vpid), ids); err != nil {
			return err
		}
		if p.vmOf == nil {
			if err := p.writeMemImages(q); err != nil {
				return err
			}
		}
		var fd []proto.Message
		for _, e := range p.fds {
			fd = append(fd, e)
		}
		if p.filesOf == nil {
			if err := q(images.Fdinfo, images.Fdinfo.FileName(int(id)), fd...); err != nil {
				return err
			}
		}
		if err := q(images.Fs, images.Fs.FileName(p.vpid), p.fs); err != nil {
			return err
		}
	}
	if err := writeQueued(queued); err != nil {
		return err
	}
	if err := w(images.Pstree, images.Pstree.FileName(), tree...); err != nil {
		return err
	}
	if err := files.finish(); err != nil {
		return err
	}
	var fe []proto.Message
	for _, e := range files.entries {
		fe = append(fe, e)
	}
	if err := w(images.Files, images.Files.FileName(), fe...); err != nil {
		return err
	}
	if err := files.writeExtra(stage); err != nil {
		return err
	}
	var uptime uint64
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) == nil {
		uptime = uint64(ts.Nano() / 1000)
	}
	inv := &inventory.InventoryEntry{
		ImgVersion: proto.Uint32(images.ImagesV1_1), FdinfoPerId: proto.Bool(true),
		RootIds: rootIDs, NsPerId: proto.Bool(true), Lsmtype: inventory.Lsmtype_NO_LSM.Enum(),
		DumpUptime: proto.Uint64(uptime),
	}
	if d.rootCgSet != 0 {
		inv.RootCgSet = proto.Uint32(d.rootCgSet)
	}
	return w(images.Inventory, images.Inventory.FileName(), inv)
}

// resume puts every seized thread back as it was and detaches it: the
// signals it dequeued are queued again, its mask and registers restored.
//
// Preconditions: runs on the tracer thread.
func (d *dumpTree) resume() error {
	var errs []error
	for _, p := range d.procs {
		if p.zombie || len(p.threads) == 0 {
			continue
		}
		lead := p.leader().ctl
		if lead != nil {
			stolen := false
			for _, th := range p.threads {
				stolen = stolen || len(th.stolen) > 0 || (th.ctl != nil && len(th.ctl.r.Stolen) > 0)
			}
			if stolen && lead.scratch == 0 {
				errs = append(errs, p.mapScratch(nil, true))
			}
			for _, th := range p.threads {
				if th.ctl == nil || lead.scratch == 0 {
					continue
				}
				sigs := append(th.stolen, th.ctl.r.Stolen...)
				th.stolen, th.ctl.r.Stolen = nil, nil
				errs = append(errs, th.requeue(p.pid, sigs))
			}
			errs = append(errs, p.dropScratch())
			lead.mem.Close()
		}
		for _, th := range p.threads {
			if th.ctl != nil {
				errs = append(errs, ptrace.SetSigmask(th.tid, th.sigmask))
				errs = append(errs, th.ctl.r.Restore())
			} else if len(th.stolen) > 0 {
				errs = append(errs, fmt.Errorf("task %d thread %d: %d dequeued signals could not be queued again", p.pid, th.tid, len(th.stolen)))
			}
			errs = append(errs, ptrace.Detach(th.tid))
		}
	}
	// A thread that died meanwhile (it was exiting when seized: the
	// tree forks and exits fast) has nothing to resume: ESRCH is not a
	// failure of the resume.
	kept := errs[:0]
	for _, err := range errs {
		if err != nil && !errors.Is(err, unix.ESRCH) {
			kept = append(kept, err)
		}
	}
	return errors.Join(kept...)
}

// ownIDs returns the process and thread ids of thread tid of process
// pid as they see themselves, in their own PID namespace.
func ownIDs(pid, tid int) (int, int, error) {
	st, err := proc.ReadStatus(pid, tid)
	if err != nil {
		return 0, 0, fmt.Errorf("task %d thread %d: %w", pid, tid, err)
	}
	return innermost(st.NStgid, pid), innermost(st.NSpid, tid), nil
}

// innermost returns the last of the ids /proc lists for each PID
// namespace (NSpid and the others), the one in the task's own, or host
// if the list is empty (a kernel without them).
func innermost(ids []int, host int) int {
	if len(ids) == 0 {
		return host
	}
	return ids[len(ids)-1]
}

// kill ends every dumped task. They are traced: SIGKILL ends them at
// once, and the tracer must collect each thread's death before the
// kernel lets it go on (a thread-group leader is reported after its
// threads, the init of a PID namespace after every task in it), so deaths
// are collected in whatever order they come.
//
// Preconditions: runs on the tracer thread.
func (d *dumpTree) kill() error {
	var left []int
	for _, p := range d.procs {
		if p.zombie {
			continue
		}
		unix.Kill(p.pid, unix.SIGKILL)
		for _, th := range p.threads {
			left = append(left, th.tid)
		}
		if len(p.threads) > 0 && p.threads[0].ctl != nil {
			p.threads[0].ctl.mem.Close()
		}
	}
	if err := ptrace.CollectExits(left); err != nil {
		return fmt.Errorf("wait for the dumped tasks to die: %w", err)
	}
	return nil
}

// InVfork returns a thread of process pid that waits in vfork, or in
// clone with CLONE_VFORK (posix_spawn, Go's os/exec), for its child to
// exec or exit, or 0 if none does. ptrace cannot stop a thread there,
// and frozen by its cgroup it waits until thawed. The kernel function
// it sleeps in tells, frozen or not (a thread frozen on its way back
// from clone sleeps in the freezer's).
func InVfork(pid int) int {
	tids, err := proc.Threads(pid)
	if err != nil {
		return 0
	}
	for _, tid := range tids {
		nr, err := blockedSyscall(tid)
		if err != nil || (nr != unix.SYS_VFORK && nr != unix.SYS_CLONE && nr != unix.SYS_CLONE3) {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/wchan", pid, tid))
		switch w := string(b); {
		case err == nil && (w == "kernel_clone" || w == "wait_for_vfork_done"):
			return tid
		case err == nil && w != "" && w != "0":
			continue // asleep elsewhere: in the freezer, or faulting
		}
		// No wchan (kernel without symbols): a clone that sleeps
		// uninterruptibly waits for its child.
		if st, err := proc.ReadStat(pid, tid); err == nil && (nr == unix.SYS_VFORK || st.State == 'D') {
			return tid
		}
	}
	return 0
}

// blockedSyscall returns the syscall a stopped task is in, from
// /proc/PID/syscall.
func blockedSyscall(pid int) (int, error) {
	// /proc/TID/syscall is the thread's own, even for a thread that is
	// not its process's leader.
	b, err := proc.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("task %d: empty syscall file", pid)
	}
	return strconv.Atoi(f[0])
}
