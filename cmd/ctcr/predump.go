package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/ctcr/ctcr/criu"
)

func preDumpCmd(g *globalFlags, stdout io.Writer) *cobra.Command {
	var o criu.PreDumpOptions
	c := &cobra.Command{
		Use:   "pre-dump -t PID -D DIR [--prev-images-dir PREV]",
		Short: "Copy a running process tree's memory ahead of its dump",
		Long: `Copy the memory of the process tree PID into DIR while it runs, as
CRIU's pre-dump does, and keep track of what it writes from then on.

The next pre-dump with --prev-images-dir (DIR as seen from its own
directory, or absolute) copies only the pages written since, and so does
the final "ctcr dump --prev-images-dir": the rest stays in the earlier
directories, which each image links to as its parent. Migration sends
the directories to the other host while the tree runs, and only the
last, small one once it is stopped.

The tree is stopped only for the moment each process gets its write
tracker (a userfaultfd in async write-protect mode, Linux 6.7; this
needs no soft-dirty bit). A small detached ctcr holds the tracking
until the next pre-dump or dump takes it, every process of the tree is
gone, or 24 hours pass.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.Pid <= 0 {
				return usageError{fmt.Errorf("pre-dump needs -t PID")}
			}
			if o.Dir == "" {
				return usageError{fmt.Errorf("pre-dump needs -D DIR")}
			}
			if err := criu.CheckCompression(o.Compress); err != nil {
				return usageError{err}
			}
			if err := notInTree(o.Pid); err != nil {
				return err
			}
			logf, done, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer done()
			o.Log = logf
			var endLine func()
			o.Progress, endLine = g.progressLine(cmd.ErrOrStderr(), "pre-dumped")
			st, err := criu.PreDump(o)
			endLine()
			if err != nil {
				return fmt.Errorf("pre-dump of task %d failed: %w", o.Pid, err)
			}
			printWarnings(cmd.ErrOrStderr(), st.Warnings)
			if g.json {
				return printJSON(stdout, map[string]any{
					"pid": st.Pid, "dir": o.Dir, "tasks": st.Tasks, "pages_bytes": st.PagesBytes, "parent_bytes": st.ParentBytes,
					"frozen_seconds": st.Frozen, "pre_dump_seconds": st.Total, "warnings": st.Warnings,
				})
			}
			return nil
		},
	}
	f := c.Flags()
	f.IntVarP(&o.Pid, "tree", "t", 0, "PID of the root of the tree")
	f.StringVarP(&o.Dir, "images-dir", "D", "", "directory to write the pre-dump to")
	f.StringVar(&o.Compress, "compress", "", "store the page images compressed: zstd (pages-N.img.zst; a dump on top reads through them, compressed or not itself)")
	f.StringVar(&o.PrevDir, "prev-images-dir", "", "an earlier pre-dump of the tree (relative to DIR, or absolute): copy only what was written since")
	needsCaps(c)
	return exits(c, exitOK, exitFailure, exitUsage)
}

// trackWritesCmd is the hidden tracker a pre-dump starts (criu.TrackerCommand):
// the tasks on stdin, fd 3 a pipe to close once it listens, the
// userfaultfds from fd 4 on.
func trackWritesCmd() *cobra.Command {
	var root int
	var start uint64
	c := &cobra.Command{
		Use:    criu.TrackerCommand,
		Hidden: true,
		Args:   noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var tasks []criu.TrackedTask
			if err := json.NewDecoder(cmd.InOrStdin()).Decode(&tasks); err != nil {
				return fmt.Errorf("tracker: tasks on stdin: %w", err)
			}
			ready := os.NewFile(3, "ready")
			var fds []*os.File
			for i := range tasks {
				fds = append(fds, os.NewFile(uintptr(4+i), "userfaultfd"))
			}
			return criu.ServeTracking(root, start, tasks, fds, ready, criu.TrackerMaxAge)
		},
	}
	c.Flags().IntVar(&root, "root", 0, "the root of the tracked tree")
	c.Flags().Uint64Var(&start, "start", 0, "its start time")
	return c
}
