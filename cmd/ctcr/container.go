package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/ctcr/ctcr/container"
	"github.com/ctcr/ctcr/criu"
)

// preDumpDir is where a container's pre-dump goes without -D.
func preDumpDir(id string) string { return container.Home(id) + "-pre-dump" }

func checkpointCmd(g *globalFlags, stdout io.Writer) *cobra.Command {
	var o container.CheckpointOptions
	var suspend, dumpStage, kill, resume, preDump bool
	var cgroupPath string
	c := &cobra.Command{
		Use:   "checkpoint CTID",
		Short: "Checkpoint a whole container (runc, crun, LXC, or --pid)",
		Long: `Checkpoint container CTID into DIR.

Without -D each checkpoint is a new generation, /var/lib/ctcr/CTID/TIME
(TIME in UTC, e.g. 20261205T153120.123Z), and /var/lib/ctcr/CTID/latest
is switched to it once it is complete: 'ctcr restore CTID' restores
latest, --checkpoint NAME another ('ctcr checkpoints CTID' lists them);
--keep N removes all but the N newest after a checkpoint succeeded.
With -D DIR, a DIR that holds a checkpoint already is refused unless
--force is given; the new one then replaces it once complete.

The container's cgroup is frozen, every task seized with ptrace, the
cgroup thawed (tasks stay stopped), and the process tree, its mounts and
names are dumped into DIR/images; DIR also gets config.json, stats.json,
the runtime's record (runtime/) and ctcr.json (written last). The
container is then killed, or with --leave-running it runs on. If
anything fails it is thawed and runs on untouched, and a new generation
is removed.

With -D - the checkpoint goes to stdout as one tar archive, which
'ctcr restore CTID -D -' reads from stdin, as 'ctcr dump -D -' does:
    ctcr checkpoint CT -D - | ssh host ctcr restore CT -D -
The pages are never staged on disk; the container is killed (or let go)
only once the last byte is out. Not with --pre-dump, --pre-copy,
--parent, --force or a stage; the report then goes to stderr.`,
		Args: exactArgs("CTID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.ID = args[0]
			if o.TCPClose && o.TCPEstablished {
				return usageError{fmt.Errorf("--tcp-close ends the connections --tcp-established would move: give one")}
			}
			if cgroupPath != "" {
				if o.Pid != 0 {
					return usageError{fmt.Errorf("--pid and --cgroup both name the init: give one")}
				}
				pid, err := container.InitOfCgroup(cgroupPath)
				if err != nil {
					return containerExit(err, exitCheckpointError)
				}
				o.Pid = pid
			}
			if o.Keep < 0 {
				return usageError{fmt.Errorf("--keep %d: give the number of checkpoints to keep, 1 or more", o.Keep)}
			}
			if o.Keep > 0 && o.Dir != "" {
				return usageError{fmt.Errorf("--keep prunes the generations in /var/lib/ctcr/%s: it does not go with -D", o.ID)}
			}
			if o.Dir == "" && preDump {
				o.Dir = preDumpDir(o.ID)
			}
			out := stdout
			streaming := o.Dir == streamDir
			if streaming {
				if preDump || o.PreCopy || o.Parent != "" || o.Force || suspend || dumpStage || kill || resume {
					return usageError{fmt.Errorf("-D - streams a whole checkpoint: not with --pre-dump, --pre-copy, --parent, --force or a stage")}
				}
				dir, afterCommit, cleanup, err := streamOut("checkpoint")
				if err != nil {
					return err
				}
				defer cleanup()
				o.Dir, o.AfterCommit = dir, afterCommit
				// Stdout is the archive's.
				out = cmd.ErrOrStderr()
			}
			stdout := out
			stage, err := oneStage(map[container.Stage]bool{container.StageSuspend: suspend, container.StageDump: dumpStage, container.StageKill: kill, container.StageResume: resume})
			if err != nil {
				return err
			}
			switch stage {
			case container.StageSuspend:
				return stageDone(container.Suspend(o.ID, o.Pid), exitCheckpointError)
			case container.StageKill:
				return stageDone(container.KillTasks(o.ID, o.Pid), exitCheckpointError)
			case container.StageResume:
				return stageDone(container.Resume(o.ID, o.Pid), exitCheckpointError)
			}
			o.Stage = stage
			if err := criu.CheckCompression(o.Compress); err != nil {
				return usageError{err}
			}
			logf, done, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer done()
			o.Log = logf
			if preDump {
				if stage != "" || o.PreCopy || o.LeaveRunning {
					return usageError{fmt.Errorf("--pre-dump is a step of its own: no stage, --pre-copy or --leave-running with it")}
				}
				var endLine func()
				o.Progress, endLine = g.progressLine(cmd.ErrOrStderr(), "pre-dumped")
				st, err := container.PreDump(o)
				endLine()
				if err != nil {
					return containerExit(err, exitCheckpointError)
				}
				printWarnings(cmd.ErrOrStderr(), st.Warnings)
				if g.json {
					return printJSON(stdout, map[string]any{"id": o.ID, "dir": o.Dir, "tasks": st.Tasks, "pages_bytes": st.PagesBytes,
						"parent_bytes": st.ParentBytes, "frozen_seconds": st.Frozen, "pre_dump_seconds": st.Total, "warnings": st.Warnings})
				}
				fmt.Fprintf(stdout, "container %s pre-dumped to %s: %d tasks, %d bytes of memory copied, %d left to the parent, stopped %.4f s\n",
					o.ID, o.Dir, st.Tasks, st.PagesBytes, st.ParentBytes, st.Frozen)
				return nil
			}
			var endLine, endPre func()
			o.Progress, endLine = g.progressLine(cmd.ErrOrStderr(), "dumped")
			if o.PreCopy {
				o.PreCopyProgress, endPre = g.progressLine(cmd.ErrOrStderr(), "pre-copied")
				// The pre-copy's line ends when the dump's begins.
				if dumped := o.Progress; dumped != nil {
					o.Progress = func(b uint64) {
						if endPre != nil {
							endPre()
							endPre = nil
						}
						dumped(b)
					}
				}
			}
			stuckStatus.Store(exitCheckpointError)
			m, st, err := container.CheckpointTo(&o)
			if streaming {
				o.Dir = streamDir // the staging directory is gone
			}
			if endPre != nil {
				endPre()
			}
			endLine()
			if err != nil {
				return containerExit(err, exitCheckpointError)
			}
			printWarnings(cmd.ErrOrStderr(), st.Warnings)
			if g.json {
				out := map[string]any{"id": m.ID, "runtime": m.Runtime, "dir": o.Dir, "tasks": st.Tasks,
					"pages_bytes": st.PagesBytes, "frozen_seconds": st.FrozenSeconds, "dump_seconds": st.DumpSeconds, "warnings": st.Warnings}
				if st.SnapshotCopySeconds > 0 {
					out["snapshot_copy_seconds"] = st.SnapshotCopySeconds
				}
				if o.PreCopy {
					out["pre_copy_bytes"], out["pre_copy_rounds"], out["pre_copy_seconds"] = st.PreCopyBytes, st.PreCopyRounds, st.PreCopySeconds
				}
				return printJSON(stdout, out)
			}
			if o.PreCopy {
				fmt.Fprintf(stdout, "container %s pre-copied: %d bytes of memory in %d rounds, %.3f s\n", m.ID, st.PreCopyBytes, st.PreCopyRounds, st.PreCopySeconds)
			}
			fmt.Fprintf(stdout, "container %s checkpointed to %s: %d tasks, %d bytes of memory, frozen %.3f s\n", m.ID, o.Dir, st.Tasks, st.PagesBytes, st.FrozenSeconds)
			return nil
		},
	}
	f := c.Flags()
	f.StringVarP(&o.Dir, "images-dir", "D", "", "directory to write the checkpoint to (default: a new generation in /var/lib/ctcr/CTID); - writes it to stdout as one tar archive (for 'ctcr restore CTID -D -')")
	f.IntVar(&o.Keep, "keep", 0, "without -D: once the checkpoint succeeded, remove all but the N newest generations of the container")
	f.BoolVar(&o.Force, "force", false, "with -D: replace the checkpoint DIR holds, once the new one is complete")
	f.BoolVar(&o.LeaveRunning, "leave-running", false, "let the container run on after the checkpoint")
	f.StringVar(&o.Compress, "compress", "", "store the page images compressed: zstd (pages-N.img.zst, which restore decompresses; CRIU and crit do not read them)")
	f.BoolVar(&o.NoSnapshot, "no-snapshot", false, "with --leave-running, copy the memory while the container is stopped, not from copy-on-write snapshots of it once it runs again")
	f.BoolVar(&preDump, "pre-dump", false, "only copy the memory of the running container into DIR (a pre-dump, as CRIU's), and track what it writes from then on; a later checkpoint (or pre-dump) with --parent DIR copies only the pages written since")
	f.StringVar(&o.Parent, "parent", "", "the directory of a pre-dump of the container (--pre-dump): copy only the pages written since; the images link to it, so keep (or move) both together")
	f.BoolVar(&o.PreCopy, "pre-copy", false, "copy the memory while the container runs, before freezing it (write tracking with userfaultfd, Linux 6.7): the frozen dump then copies only the pages written since; the rest stays in DIR/images/pre-copy, the images' parent")
	f.IntVar(&o.Pid, "pid", 0, "init PID of a container ctcr cannot find by its id")
	f.StringVar(&cgroupPath, "cgroup", "", "cgroup of a container ctcr cannot find by its id (as /proc/PID/cgroup names it): its init is the task whose parent is outside it")
	f.BoolVar(&o.FileLocks, "file-locks", false, "keep the file locks the container's tasks hold (flock, POSIX, OFD); without it a held lock fails the checkpoint")
	f.BoolVar(&o.TCPEstablished, "tcp-established", false, "move TCP connections whose other end is outside the container too: their segments are dropped (an nftables table) from the checkpoint until the restore")
	f.BoolVar(&o.TCPClose, "tcp-close", false, "checkpoint every established TCP connection (and those waiting to be accepted) to come back as ended, instead of moving it (both ends in the container) or failing (an end outside)")
	f.BoolVar(&o.ExtUnixSk, "ext-unix-sk", false, "keep unix sockets whose peer is outside the container; restore --ext-unix-sk connects them to the peer's name again (a connection from a client with no name comes back closed by that client, with a warning)")
	ghostLimitFlag(c, &o.GhostLimit)
	f.BoolVar(&suspend, "suspend", false, "stage: only freeze the container")
	f.BoolVar(&dumpStage, "dump", false, "stage: dump a suspended container, which stays suspended")
	f.BoolVar(&kill, "kill", false, "stage: kill every task of the container")
	f.BoolVar(&resume, "resume", false, "stage: thaw a suspended container")
	lxcPathFlag(c, g)
	needsCaps(c)
	return exits(c, exitOK, exitFailure, exitUsage, exitLocked, exitCheckpointError, exitNotRunning)
}

// oneStage returns the stage flag given, if any; two are bad usage.
func oneStage(flags map[container.Stage]bool) (container.Stage, error) {
	var got container.Stage
	for s, on := range flags {
		if !on {
			continue
		}
		if got != "" {
			return "", usageError{fmt.Errorf("--%s and --%s are separate stages: give one", got, s)}
		}
		got = s
	}
	return got, nil
}

func stageDone(err error, code int) error {
	if err != nil {
		return containerExit(err, code)
	}
	return nil
}

// restoreContainer restores container id from dir (a checkpoint, a
// home of generations, or "" for id's home) and generation name; o
// gives the engine's options that apply to a container too (ExtUnixSk,
// VdsoProxy).
func restoreContainer(g *globalFlags, cmd *cobra.Command, stdout io.Writer, id, dir, name, pidFile string, stage container.Stage, o criu.RestoreOptions) error {
	if stage == container.StageResume {
		return stageDone(container.Resume(id, 0), exitRestoreError)
	}
	logf, done, err := g.logger(cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	defer done()
	progress, endLine := g.progressLine(cmd.ErrOrStderr(), "restored")
	ro := &container.RestoreOptions{ID: id, Dir: dir, Name: name, Log: logf, Stage: stage, ExtUnixSk: o.ExtUnixSk, VdsoProxy: o.VdsoProxy, Progress: progress}
	stuckStatus.Store(exitRestoreError)
	r, m, err := container.Restore(ro)
	dir = ro.Dir
	endLine()
	if err != nil {
		return containerExit(err, exitRestoreError)
	}
	printWarnings(cmd.ErrOrStderr(), r.Warnings)
	if pidFile != "" {
		if err := writePidFile(pidFile, r.Pid); err != nil {
			return err
		}
	}
	if g.json {
		return printJSON(stdout, map[string]any{"id": m.ID, "runtime": m.Runtime, "dir": dir, "pid": r.Pid, "tasks": r.Tasks,
			"pages_bytes": r.PagesBytes, "restore_seconds": r.Total.Seconds()})
	}
	fmt.Fprintf(stdout, "container %s restored from %s: init is PID %d, %d tasks\n", id, dir, r.Pid, r.Tasks)
	return nil
}
