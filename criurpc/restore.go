package criurpc

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/mnt"
	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/cgroup"
	"github.com/ctcr/ctcr/criu"
	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/ns"
)

// restore serves RESTORE and returns the restored root's host PID.
//
// Notifications, in CRIU's order: pre-restore before anything is made;
// setup-namespaces (with the root's PID) once the root exists in its new
// namespaces, post-setup-namespaces once its mounts, hostname, IPC and
// network are back; post-restore (with the PID), network-unlock and
// pre-resume when every task is ready, just before they are let go;
// post-resume once they run.
//
// rst_sibling: CRIU clones the root with CLONE_PARENT so that it is a
// child of the runtime. ctcr builds the tree from a traced puppet, so
// the root is ctcr's child; when ctcr exits (right after the response)
// the kernel hands it to the nearest child subreaper above, which is
// the runtime itself: runc makes itself one before it starts criu
// (unless --no-subreaper), podman's conmon and containerd's shim are
// ones.
func (s *session) restore(o *rpc.CriuOpts) (_ int, err error) {
	if o == nil {
		return 0, fmt.Errorf("the request has no options")
	}
	start := time.Now()
	imgDir, workDir, err := s.dirs(o)
	if err != nil {
		return 0, err
	}
	closeLog, err := s.openLog(o, workDir, "restore.log")
	if err != nil {
		return 0, err
	}
	defer func() { s.endLog(err, closeLog) }()
	if err := checkOpts(o, true); err != nil {
		return 0, err
	}
	s.logf("restore from %s", imgDir)
	inherit, joinNet, err := inheritedFds(o.GetInheritFd())
	if err != nil {
		return 0, err
	}
	if joinNet != "" {
		s.logf("the tasks join the runtime's network namespace (inherit_fd, %s)", joinNet)
	}
	for k := range inherit {
		s.logf("inherit_fd %s: the runtime's pipe replaces it", k)
	}
	nsFlags, err := criu.ImageNamespaces(imgDir)
	if err != nil {
		return 0, err
	}
	exists := func(name string) bool {
		_, err := os.Stat(filepath.Join(imgDir, name))
		return err == nil
	}
	extSources, err := mountSources(imgDir, o.GetRoot(), o.GetExtMnt(), exists(images.Mnts.FileName(1)))
	if err != nil {
		return 0, err
	}
	for mp, src := range extSources {
		s.logf("mount %s is bound from %s", mp, src)
	}
	if joinNet != "" && nsFlags&unix.CLONE_NEWNET == 0 {
		return 0, fmt.Errorf("inherit_fd: a network namespace to join, but the checkpoint's tasks were in ctcr's own")
	}
	if cgs := o.GetCgRoot(); len(cgs) > 0 {
		// runc moved ctcr into the container's cgroups before the
		// request (criuApplyCgroups): every task ctcr makes is born
		// there. Say where, for the log.
		if own, err := cgroup.ForPid(os.Getpid()); err == nil {
			for _, c := range cgs {
				if got := own.V1[c.GetCtrl()]; got != "" && got != c.GetPath() {
					s.logf("cg_root %s:%s: ctcr is in %s, where the tasks are restored", c.GetCtrl(), c.GetPath(), got)
				}
			}
		}
	}
	if err := s.notify("pre-restore", 0, -1); err != nil {
		return 0, err
	}
	rootPid := 0
	var forked time.Duration
	var console *consoleForRestore
	if o.GetOrphanPtsMaster() {
		orphan, err := orphanPts(imgDir)
		if err != nil {
			return 0, err
		}
		if orphan {
			console = &consoleForRestore{s: s, rootPid: func() int { return rootPid }}
			defer func() {
				if console.slave != nil {
					console.slave.Close()
				}
			}()
		}
	}
	var terminal func() (*os.File, error)
	if console != nil {
		terminal = console.get
	}
	r, err := criu.Restore(criu.RestoreOptions{
		Terminal: terminal,
		Dir:      imgDir, Log: s.logf, ShellJob: o.GetShellJob(), ExtUnixSk: o.GetExtUnixSk(), JoinNet: joinNet,
		InheritFds: inherit,
		// The root's parent at the dump (runc init's parent) is not
		// restored, and ctcr, its parent now, exits at once.
		DropRootPdeathsig: true,
		PrepareRoot: func(rt *criu.RootTask) error {
			rootPid = rt.Pid
			forked = time.Since(start)
			if err := s.notify("setup-namespaces", rt.Pid, -1); err != nil {
				return err
			}
			if err := ns.RestoreOwn(rt, rt.Pid, imgDir, s.logf, extSources); err != nil {
				return err
			}
			if nsFlags&unix.CLONE_NEWNET != 0 && joinNet == "" && exists(images.Netdev.FileName(1)) {
				if err := ns.RestoreNet(rt.Pid, imgDir); err != nil {
					return err
				}
			}
			return s.notify("post-setup-namespaces", 0, -1)
		},
		PlaceTasks: func(map[int]int) error {
			if rootPid != 0 && exists(images.IpcShm.FileName(1)) {
				// Every task has attached its segments by now.
				return ns.RemoveDestroyedShm(rootPid, imgDir)
			}
			return nil
		},
		BeforeResume: func() error {
			for _, n := range []string{"post-restore", "network-unlock", "pre-resume"} {
				pid := 0
				if n == "post-restore" {
					pid = rootPid
				}
				if err := s.notify(n, pid, -1); err != nil {
					return err
				}
			}
			return nil
		},
	})
	if err != nil {
		return 0, fmt.Errorf("restore from %s: %w", imgDir, err)
	}
	s.logf("restored %d tasks (root %d, %d in its namespace), %d bytes of memory, in %v", r.Tasks, r.Pid, r.VPid, r.PagesBytes, r.Total)
	// The tasks run: a failed answer now cannot undo the restore; it is
	// logged and reported, as CRIU does.
	if err := s.notify("post-resume", 0, -1); err != nil {
		s.logf("post-resume: %v", err)
	}
	if err := writeRestoreStats(workDir, forked, time.Since(start), r.PagesBytes/pageSize); err != nil {
		s.logf("%v", err)
	}
	return r.Pid, nil
}

// inheritedFds sorts the inherit_fd options: fds the restored tasks get
// instead of the dumped pipes ("pipe:[INO]", runc's stdio pipes), and
// a network namespace to join (runc's "extRootNetNS"). The fds are
// ctcr's own (the runtime passed them as criu's stdio or extra files).
func inheritedFds(list []*rpc.InheritFd) (map[string]*os.File, string, error) {
	pipes := map[string]*os.File{}
	joinNet := ""
	for _, in := range list {
		key, fd := in.GetKey(), int(in.GetFd())
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return nil, "", fmt.Errorf("inherit_fd %s: fd %d: %w", key, fd, err)
		}
		switch {
		case strings.HasPrefix(key, "pipe:[") && strings.HasSuffix(key, "]"):
			// Whatever the fd is: runc hands criu's own stdio for the
			// pipes the container had (a detached restore's may be a
			// file), and CRIU puts the fd in the pipe's place as it is.
			pipes[key] = os.NewFile(uintptr(fd), key)
		default:
			t, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
			if err != nil || t != unix.CLONE_NEWNET {
				return nil, "", fmt.Errorf("inherit_fd %s: fd %d is neither a pipe nor a network namespace: ctcr supports no other", key, fd)
			}
			joinNet = fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), fd)
		}
	}
	return pipes, joinNet, nil
}

// mountSources maps the mounts of the checkpoint bound from the host to
// the sources the runtime gives now (CRIU's ext-mount-map at restore):
// the root file system to root (runc's criu-root, a bind of the rootfs
// the container has now: podman's --import makes a new one), each
// ext_mnt destination to its source (a new container's /etc/hosts).
//
// A cgroup v1 bind keeps the directory the checkpoint recorded while it
// exists: runc names the hierarchy by its own cgroup there (the
// hierarchy's root, or conmon's cgroup under podman), not the
// container's, which it has just made again with the same path.
func mountSources(imgDir, root string, extMnt []*rpc.ExtMountMap, hasMounts bool) (map[string]string, error) {
	if !hasMounts {
		if root != "" && root != "/" {
			return nil, fmt.Errorf("root %s: the checkpoint has no mount namespace to restore in it", root)
		}
		return nil, nil
	}
	path := filepath.Join(imgDir, images.Mnts.FileName(1))
	entries, err := images.ReadAll(path, images.Mnts, func() *mnt.MntEntry { return &mnt.MntEntry{} })
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	if root != "" {
		if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("root %s: not a directory (%v)", root, err)
		}
		out["/"] = root
	}
	for _, m := range extMnt {
		for _, e := range entries {
			if e.GetMountpoint() != m.GetKey() || !e.GetExtMount() || e.GetMountpoint() == "/" {
				continue
			}
			if e.GetFsname() == "cgroup" {
				if _, err := os.Stat(e.GetExtKey()); err == nil {
					continue
				}
			}
			if _, err := os.Stat(m.GetVal()); err != nil {
				return nil, fmt.Errorf("ext_mnt %s:%s: the source: %w", m.GetKey(), m.GetVal(), err)
			}
			out[e.GetMountpoint()] = m.GetVal()
		}
	}
	return out, nil
}
