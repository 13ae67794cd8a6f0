package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/ctcr/ctcr/hooks"
)

func hookCmd(g *globalFlags, stdout io.Writer) *cobra.Command {
	c := &cobra.Command{
		Use:   "hook ACTION",
		Short: "OCI runtime hook (poststart, poststop): container state JSON on stdin",
		Long: `Run as an OCI runtime hook; the runtime passes the container's state
(id, pid, bundle, annotations) as JSON on stdin.

poststart  checkpoint the container with --leave-running once it is warm:
           annotation ctcr.checkpoint.dir (required) says where, and
           ctcr.checkpoint.delay (a duration: 2s) or
           ctcr.checkpoint.ready-file (a path inside the container)
           when; ctcr.checkpoint.timeout bounds the wait (default 10m).
           The hook returns at once; a detached ctcr waits and
           checkpoints, logging to /run/ctcr/ID.hook.log.
poststop   remove ctcr's lock of the container (/run/ctcr/ID.lock).

A malformed state or a missing field exits 1 and does nothing; 0 for
poststart means the checkpointer started.`,
		Args: exactArgs("ACTION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			action := args[0]
			if action != "poststart" && action != "poststop" {
				return usageError{fmt.Errorf("hook %q: ctcr acts as a poststart or poststop hook", action)}
			}
			st, err := hooks.ReadState(cmd.InOrStdin())
			if err != nil {
				return fmt.Errorf("hook %s: %w", action, err)
			}
			if action == "poststop" {
				if err := hooks.Poststop(st); err != nil {
					return fmt.Errorf("hook poststop of container %s: %w", st.ID, err)
				}
				return nil
			}
			p, err := hooks.PoststartPlan(st)
			if err != nil {
				return fmt.Errorf("hook poststart: %w", err)
			}
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("hook poststart of container %s: %w", st.ID, err)
			}
			hargs := append([]string{hookCheckpointName, "-v"}, p.Args()...)
			pid, err := hooks.Detach(exe, hargs, hooks.LogPath(st.ID))
			if err != nil {
				return fmt.Errorf("hook poststart of container %s: start the checkpointer: %w", st.ID, err)
			}
			if g.json {
				return printJSON(stdout, map[string]any{"id": st.ID, "checkpointer_pid": pid, "log": hooks.LogPath(st.ID)})
			}
			return nil
		},
	}
	return exits(c, exitOK, exitFailure, exitUsage)
}

// hookCheckpointName is the hidden subcommand the poststart hook starts
// detached.
const hookCheckpointName = "hook-checkpoint"

func hookCheckpointCmd(g *globalFlags, stdout io.Writer) *cobra.Command {
	var p hooks.Plan
	c := &cobra.Command{
		Use:    hookCheckpointName,
		Hidden: true,
		Args:   noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			logf, done, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer done()
			if logf == nil {
				logf = func(string, ...any) {}
			}
			logf("container %s: waiting (delay %v, ready file %q) to checkpoint to %s", p.ID, p.Delay, p.ReadyFile, p.Dir)
			m, st, err := p.Checkpoint(logf)
			if err != nil {
				return containerExit(err, exitCheckpointError)
			}
			logf("container %s checkpointed to %s: %d tasks, %d bytes of memory, frozen %.3f s", m.ID, p.Dir, st.Tasks, st.PagesBytes, st.FrozenSeconds)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&p.ID, "id", "", "container id")
	f.IntVar(&p.Pid, "pid", 0, "its init")
	f.Uint64Var(&p.Start, "start", 0, "the init's start time")
	f.StringVar(&p.Dir, "dir", "", "checkpoint directory")
	f.DurationVar(&p.Delay, "delay", 0, "wait this long")
	f.StringVar(&p.ReadyFile, "ready-file", "", "wait for this file inside the container")
	f.DurationVar(&p.Timeout, "timeout", hooks.DefaultTimeout, "wait at most this long for the ready file")
	f.BoolVar(&p.PreCopy, "pre-copy", false, "copy the memory while the container runs first")
	c.MarkFlagRequired("id")
	c.MarkFlagRequired("pid")
	c.MarkFlagRequired("dir")
	return c
}
