package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/container"
)

func listCmd(g *globalFlags, stdout io.Writer) *cobra.Command {
	c := &cobra.Command{
		Use:   "list",
		Short: "List the containers ctcr knows",
		Long: `List the containers runc and crun report and those with a checkpoint
under /var/lib/ctcr, one line each: ID, RUNTIME, STATUS (running,
stopped, or checkpointed when only the checkpoint is left), the init's
host PID, and the checkpoint directory.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ents, err := container.List()
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(stdout, ents)
			}
			w := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tRUNTIME\tSTATUS\tPID\tCHECKPOINT")
			for _, e := range ents {
				pid, ck := "-", "-"
				if e.Pid > 0 {
					pid = strconv.Itoa(e.Pid)
				}
				if e.Checkpoint != "" {
					ck = e.Checkpoint
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", e.ID, e.Runtime, e.Status, pid, ck)
			}
			return w.Flush()
		},
	}
	lxcPathFlag(c, g)
	return exits(c, exitOK, exitFailure, exitUsage)
}

func psCmd(g *globalFlags, stdout io.Writer) *cobra.Command {
	var pid int
	c := &cobra.Command{
		Use:   "ps CTID",
		Short: "List the processes of a running container",
		Long: `List the processes in the cgroup of container CTID: the host PID, the
PID inside the container's PID namespace, and the command line.`,
		Args: exactArgs("CTID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ps, err := container.Processes(args[0], pid)
			if err != nil {
				return containerExit(err, exitFailure)
			}
			if g.json {
				if ps == nil {
					ps = []container.Process{}
				}
				return printJSON(stdout, ps)
			}
			w := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintln(w, "PID\tNSPID\tCOMMAND")
			for _, p := range ps {
				fmt.Fprintf(w, "%d\t%d\t%s\n", p.Pid, p.NSPid, p.Command)
			}
			return w.Flush()
		},
	}
	c.Flags().IntVar(&pid, "pid", 0, "init PID of a container ctcr cannot find by its id")
	lxcPathFlag(c, g)
	return exits(c, exitOK, exitFailure, exitUsage, exitNotRunning)
}

func killCmd(g *globalFlags, stdout io.Writer) *cobra.Command {
	var pid int
	c := &cobra.Command{
		Use:   "kill CTID [SIGNAL]",
		Short: "Send a signal to a container's init (default TERM)",
		Long: `Send SIGNAL (a name such as TERM, SIGKILL, or a number; default TERM)
to the init of container CTID.`,
		Args: rangeArgs(1, "CTID", "SIGNAL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			sig := unix.SIGTERM
			if len(args) == 2 {
				s, err := parseSignal(args[1])
				if err != nil {
					return usageError{err}
				}
				sig = s
			}
			c, err := container.Kill(args[0], pid, sig)
			if err != nil {
				return containerExit(err, exitFailure)
			}
			if g.json {
				return printJSON(stdout, map[string]any{"id": c.ID, "pid": c.Pid, "signal": int(sig)})
			}
			return nil
		},
	}
	c.Flags().IntVar(&pid, "pid", 0, "init PID of a container ctcr cannot find by its id")
	lxcPathFlag(c, g)
	return exits(c, exitOK, exitFailure, exitUsage, exitNotRunning)
}

// parseSignal accepts TERM, SIGTERM, term or 15.
func parseSignal(s string) (unix.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("signal %d out of range 1-64", n)
		}
		return unix.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}
