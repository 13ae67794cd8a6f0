package main

import (
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/ctcr/ctcr/cgroup"
	"github.com/ctcr/ctcr/container"
	"github.com/ctcr/ctcr/criu"
	"github.com/ctcr/ctcr/internal/atomicfile"
)

func restoreCmd(g *globalFlags, stdout io.Writer) *cobra.Command {
	var o criu.RestoreOptions
	var detach, undump, resume bool
	var pidFile, name string
	c := &cobra.Command{
		Use:   "restore [CTID] [-D DIR] [--checkpoint NAME]",
		Short: "Restore a process tree, or a container, from a checkpoint",
		Long: `Restore the process tree checkpointed in DIR, with its original PIDs.
With CTID, restore the container checkpointed by 'ctcr checkpoint CTID':
the latest generation in /var/lib/ctcr/CTID, or the one --checkpoint
NAME names ('ctcr checkpoints CTID' lists them), or the checkpoint in
-D DIR (DIR may also be a directory of generations); ctcr returns once
it runs. If the runtime's record of the container is gone (runc delete
after a --leave-running checkpoint), it is written back, so the
runtime's tools manage the restored container.

Without -d, ctcr stays the parent of the restored process, waits for it
and exits with its exit status (128+N if it was killed by signal N).
With -d, ctcr returns as soon as the process runs.

The PID must be free: if another process holds it, restore fails at once;
if a zombie holds it (a dumped task not yet reaped), restore waits up to
10 seconds. A failed restore kills everything it created.

With -D - the checkpoint is read from stdin, a tar archive written by
'ctcr dump -D -' (ctcr dump -t PID -D - | ssh host ctcr restore -D -),
or with CTID by 'ctcr checkpoint CTID -D -'.
It is unpacked into a private directory under $TMPDIR (or /run/ctcr),
which is removed once the tree runs: only regular files and
directories with plain names are accepted, and the checkpoint's
manifest must verify before anything is created. Not from a terminal.`,
		Args: rangeArgs(0, "CTID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				stage, err := oneStage(map[container.Stage]bool{container.StageUndump: undump, container.StageResume: resume})
				if err != nil {
					return err
				}
				if o.Dir == streamDir {
					// A bundle streamed by 'ctcr checkpoint CTID -D -',
					// with the same checks as a process tree's.
					if name != "" || stage == container.StageResume {
						return usageError{fmt.Errorf("-D - restores the checkpoint on stdin: not with --checkpoint or --resume")}
					}
					if isTerminal(os.Stdin) {
						return usageError{fmt.Errorf("-D - reads a checkpoint archive (ctcr checkpoint CTID -D -) from stdin, which is a terminal: pipe or redirect one")}
					}
					dir, cleanup, err := receiveCheckpoint(os.Stdin)
					if err != nil {
						return fmt.Errorf("restore of container %s from stdin failed: %w", args[0], err)
					}
					// The restored container holds nothing of the bundle
					// once the restore returns.
					defer cleanup()
					o.Dir = dir
				}
				return restoreContainer(g, cmd, stdout, args[0], o.Dir, name, pidFile, stage, o)
			}
			if undump || resume {
				return usageError{fmt.Errorf("--undump and --resume are stages of a container restore: give CTID")}
			}
			if name != "" {
				return usageError{fmt.Errorf("--checkpoint names a generation of a container's checkpoints: give CTID")}
			}
			if o.Dir == "" {
				return usageError{fmt.Errorf("restore needs -D DIR")}
			}
			var streamed func() // removes the unpacked stream
			if o.Dir == streamDir {
				if isTerminal(os.Stdin) {
					return usageError{fmt.Errorf("-D - reads a checkpoint archive (ctcr dump -D -) from stdin, which is a terminal: pipe or redirect one")}
				}
				dir, cleanup, err := receiveCheckpoint(os.Stdin)
				if err != nil {
					return fmt.Errorf("restore from stdin failed: %w", err)
				}
				// The restored tasks hold nothing of the images once
				// Restore returns: removed then, not when they exit.
				defer cleanup()
				streamed, o.Dir = cleanup, dir
			}
			logf, done, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer done()
			o.Log = logf
			var endLine func()
			o.Progress, endLine = g.progressLine(cmd.ErrOrStderr(), "restored")
			restoreHostSysV(&o)
			restoreNestedNS(&o)
			r, err := criu.Restore(o)
			endLine()
			if err != nil {
				return fmt.Errorf("restore from %s failed: %w", o.Dir, err)
			}

			if err := afterRestoreHostSysV(o.Dir); err != nil {
				return fmt.Errorf("restore from %s: %w", o.Dir, err)
			}
			if streamed != nil {
				streamed()
			}
			printWarnings(cmd.ErrOrStderr(), r.Warnings)
			if pidFile != "" {
				if err := writePidFile(pidFile, r.Pid); err != nil {
					return err
				}
			}
			if g.json {
				if err := printJSON(stdout, map[string]any{
					"pid": r.Pid, "tasks": r.Tasks, "pages_bytes": r.PagesBytes,
					"restore_seconds": r.Total.Seconds(), "memory_seconds": r.Memory.Seconds(),
				}); err != nil {
					return err
				}
			}
			if logf != nil {
				logf("restored task %d: %d bytes of memory in %v", r.Pid, r.PagesBytes, r.Total)
			}
			if detach {
				return nil
			}
			ws, err := r.Wait()
			if err != nil {
				return fmt.Errorf("wait for restored task %d: %w", r.Pid, err)
			}
			switch {
			case ws.Exited():
				if ws.ExitStatus() != 0 {
					return exitStatusError(ws.ExitStatus())
				}
				return nil
			case ws.Signaled():
				return exitStatusError(128 + int(ws.Signal()))
			}
			return fmt.Errorf("restored task %d: wait status %#x", r.Pid, uint32(ws))
		},
	}
	f := c.Flags()
	f.StringVarP(&o.Dir, "images-dir", "D", "", "directory holding the images (with CTID: the checkpoint, default the latest in /var/lib/ctcr/CTID); - reads a checkpoint streamed by 'ctcr dump -D -' (with CTID: 'ctcr checkpoint CTID -D -') from stdin")
	f.StringVar(&name, "checkpoint", "", "with CTID: the generation to restore (a name 'ctcr checkpoints CTID' lists), instead of latest")
	f.BoolVarP(&detach, "restore-detached", "d", false, "return once the process runs instead of waiting for it")
	f.StringVar(&pidFile, "pidfile", "", "write the restored process's PID to this file")
	f.BoolVar(&o.ShellJob, "shell-job", false, "attach the process's terminal fds to ctcr's terminal")
	f.BoolVar(&o.ExtUnixSk, "ext-unix-sk", false, "connect unix sockets whose peer was outside the dumped tree to that peer's name again")
	f.BoolVar(&o.VdsoProxy, "vdso-proxy", false, "reach the checkpoint's vDSO functions through jumps into this kernel's vDSO, as a restore on a kernel whose vDSO differs does, even if the two match")
	f.BoolVar(&undump, "undump", false, "stage (with CTID): restore the container and leave it suspended")
	f.BoolVar(&resume, "resume", false, "stage (with CTID): thaw a container restored with --undump")
	// CRIU wants --file-locks on restore too; ctcr restores whatever
	// locks the images hold, so it is accepted and changes nothing.
	o.ManageCgroups = cgroup.ModeSoft
	f.Var(&o.ManageCgroups, "manage-cgroups", "put tasks back into the cgroups they were in: soft makes missing ones with their properties, full also sets the properties of existing ones, strict makes all (none may exist), props sets properties of existing ones only, none moves tasks into existing ones only, ignore leaves tasks in ctcr's cgroups")
	f.Lookup("manage-cgroups").NoOptDefVal = "soft"
	f.Var(&o.CgroupRoots, "cgroup-root", "put the root task's cgroup of the controller's hierarchy (of every hierarchy without one) at path, the cgroups below it under it; repeatable")
	f.Bool("file-locks", false, "accepted for CRIU's command line: the locks in the images are always restored")
	lxcPathFlag(c, g)
	needsCaps(c)
	return exits(c, exitOK, exitFailure, exitUsage, exitLocked, exitRestoreError, exitNotRunning, exitRunning, exitProcess)
}

func writePidFile(path string, pid int) error {
	// Under a random name, O_EXCL|O_NOFOLLOW, renamed over path: a link
	// planted at path or beside it is never written through.
	if err := atomicfile.WritePath(path, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return fmt.Errorf("pidfile: %w", err)
	}
	return nil
}
