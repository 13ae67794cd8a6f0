package criurpc

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/cgroup"
	"github.com/ctcr/ctcr/criu"
	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/ns"
)

// freezeTimeout bounds the freeze of a container's cgroup.
const freezeTimeout = 10 * time.Second

// dumpResult is what a dump or pre-dump did, for the stats image.
type dumpResult struct {
	freezing, frozen, memdump time.Duration
	pagesWritten, pagesParent uint64
}

// dump serves DUMP (preDump false) and PRE_DUMP.
//
// DUMP follows CRIU's order of notifications: pre-dump before anything
// is stopped; network-lock once every task is stopped; post-dump once the
// images are complete, before the tasks are killed (or let go);
// network-unlock after they were let go (leave_running).
func (s *session) dump(o *rpc.CriuOpts, preDump bool) (_ *dumpResult, err error) {
	if o == nil {
		return nil, fmt.Errorf("the request has no options")
	}
	imgDir, workDir, err := s.dirs(o)
	if err != nil {
		return nil, err
	}
	logName := "dump.log"
	if preDump {
		logName = "pre-dump.log"
	}
	closeLog, err := s.openLog(o, workDir, logName)
	if err != nil {
		return nil, err
	}
	defer func() { s.endLog(err, closeLog) }()
	if err := checkOpts(o, false); err != nil {
		return nil, err
	}
	pid := int(o.GetPid())
	if pid <= 0 {
		// CRIU dumps the requesting process itself; ctcr cannot stop
		// its own caller while talking to it.
		return nil, fmt.Errorf("the request names no pid to dump (dumping the requesting process is not supported)")
	}
	s.logf("%s of task %d into %s", map[bool]string{false: "dump", true: "pre-dump"}[preDump], pid, imgDir)
	res := &dumpResult{}
	if preDump {
		st, err := criu.PreDump(criu.PreDumpOptions{Pid: pid, Dir: imgDir, PrevDir: o.GetParentImg(), Log: s.logf})
		if err != nil {
			return nil, fmt.Errorf("pre-dump of task %d: %w", pid, err)
		}
		res.frozen = time.Duration(st.Frozen * float64(time.Second))
		res.pagesWritten, res.pagesParent = st.PagesBytes/pageSize, st.ParentBytes/pageSize
		return res, writeDumpStats(workDir, res)
	}

	exts, err := parseExternal(o.GetExternal())
	if err != nil {
		return nil, err
	}
	own, err := ns.Own(pid)
	if err != nil {
		return nil, err
	}
	// The network namespace is left out when it is external (the
	// runtime's, named by its inode: it joins it again at restore) or
	// asked to be restored empty.
	skipNet := o.GetEmptyNs()&unix.CLONE_NEWNET != 0
	for _, e := range exts {
		if err := checkExternalNet(pid, e); err != nil {
			return nil, err
		}
		skipNet = true
		s.logf("network namespace %d is external (%s): not dumped, the restore joins the runtime's", e.ino, e.key)
	}

	if err := s.notify("pre-dump", 0, -1); err != nil {
		return nil, err
	}
	var cg *cgroup.Set
	frozen := false
	start := time.Now()
	if fc := o.GetFreezeCgroup(); fc != "" {
		if cg, err = cgroup.ForPid(pid); err != nil {
			return nil, err
		}
		if d := filepath.Dir(cg.FreezerPath()); filepath.Clean(fc) != d {
			s.logf("freeze_cgroup %s: task %d is in %s, which is frozen instead", fc, pid, d)
		}
		if err := cg.Freeze(freezeTimeout); err != nil {
			return nil, fmt.Errorf("task %d: %w", pid, err)
		}
		frozen = true
		defer func() {
			if frozen {
				cg.Thaw()
			}
		}()
		res.freezing = time.Since(start)
		s.logf("cgroup %s frozen in %v", cg.FreezerPath(), res.freezing)
	}
	locked := false
	lockNetwork := func() error {
		if locked {
			return nil
		}
		locked = true
		if err := s.notify("network-lock", 0, -1); err != nil {
			return err
		}
		// CRIU asks next which objects the runtime wants treated as
		// external; ctcr takes network namespaces (the rest it refuses).
		ans, err := s.ask("query-ext-files", 0, -1)
		if err != nil || ans == nil {
			return err
		}
		more, err := parseExternal(ans.GetOpts().GetExternal())
		if err != nil {
			return fmt.Errorf("query-ext-files: %w", err)
		}
		for _, e := range more {
			if err := checkExternalNet(pid, e); err != nil {
				return err
			}
			skipNet = true
			s.logf("network namespace %d is external (%s, from query-ext-files)", e.ino, e.key)
		}
		return nil
	}
	opts := criu.DumpOptions{
		Pid: pid, Dir: imgDir, LeaveRunning: o.GetLeaveRunning(),
		// A console whose master the runtime holds is dumped as a
		// shell job's terminal; orphan_pts_master gives the restore a
		// new pty for it.
		ShellJob:  o.GetShellJob() || o.GetOrphanPtsMaster(),
		FileLocks: o.GetFileLocks(), ExtUnixSk: o.GetExtUnixSk(), TCPEstablished: o.GetTcpEstablished(),
		TCPClose: o.GetTcpClose(), SavesIPC: own["ipc"], PrevDir: o.GetParentImg(), Log: s.logf,
		GhostLimit: ghostLimit(o),
		Extra: func(root int, stage *images.Staging) error {
			// Without a freezer the tasks were seized by ptrace alone:
			// the network is locked here, before the images exist.
			if err := lockNetwork(); err != nil {
				return err
			}
			nsStart := time.Now()
			if err := ns.DumpOwn(root, stage, own, skipNet); err != nil {
				return err
			}
			s.logf("namespaces saved in %v", time.Since(nsStart))
			return nil
		},
		AfterCommit: func() error { return s.notify("post-dump", 0, -1) },
	}
	if cg != nil {
		opts.Thaw = func() error {
			// Every task is seized: CRIU locks the network here.
			if err := lockNetwork(); err != nil {
				return err
			}
			frozen = false
			return cg.Thaw()
		}
	}
	st, err := criu.Dump(opts)
	if err != nil {
		return nil, fmt.Errorf("dump of task %d: %w", pid, err)
	}
	for _, w := range st.Warnings {
		s.logf("Warning: %s", w)
	}
	if o.GetLeaveRunning() {
		if err := s.notify("network-unlock", 0, -1); err != nil {
			return nil, err
		}
	}
	res.frozen, res.memdump = st.Frozen, st.Memory
	res.pagesWritten = st.PagesBytes / pageSize
	res.pagesParent = parentPages(imgDir)
	s.logf("dumped %d tasks, %d bytes of memory, frozen %v, in %v", st.Tasks, st.PagesBytes, st.Frozen, time.Since(start))
	return res, writeDumpStats(workDir, res)
}

// pagePEParent is CRIU's PE_PARENT (criu/include/pagemap.h): the
// entry's pages are in the parent image.
const pagePEParent = 1 << 0

// parentPages counts the pages the checkpoint in imgDir left to its
// parent image (a pre-dump), for the stats: the dump's own counts say
// only what it copied.
func parentPages(imgDir string) uint64 {
	paths, _ := filepath.Glob(filepath.Join(imgDir, "pagemap-*.img"))
	var n uint64
	for _, p := range paths {
		_, entries, err := images.ReadPagemap(p)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if e.GetFlags()&pagePEParent != 0 {
				n += uint64(e.GetNrPages())
			}
		}
	}
	return n
}

// checkExternalNet makes sure the external network namespace e is the
// one task pid is in: the restore joins the runtime's in its place.
func checkExternalNet(pid int, e externalNS) error {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
		return fmt.Errorf("task %d: network namespace: %w", pid, err)
	}
	if st.Ino != e.ino {
		return fmt.Errorf("external net[%d]:%s: task %d is in network namespace %d", e.ino, e.key, pid, st.Ino)
	}
	return nil
}

// ghostLimit maps the request's ghost_limit to DumpOptions.GhostLimit.
// Unset, it is ctcr's default (64 MiB), not CRIU's 1 MiB (which the
// field's getter would return): runtimes leave it unset, and dumps that
// worked before it was mapped still do. Set, it is CRIU's meaning: the
// bytes of data an unlinked file may hold, 0 for none.
func ghostLimit(o *rpc.CriuOpts) int64 {
	switch {
	case o.GhostLimit == nil:
		return 0
	case o.GetGhostLimit() == 0:
		return -1
	}
	return int64(o.GetGhostLimit())
}
