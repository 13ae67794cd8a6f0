package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	criustats "github.com/checkpoint-restore/go-criu/v7/crit/images/stats"

	"github.com/ctcr/ctcr/container"
	"github.com/ctcr/ctcr/criu"
)

func showCmd(g *globalFlags, stdout io.Writer) *cobra.Command {
	c := &cobra.Command{
		Use:   "show DIR",
		Short: "Describe a checkpoint: its tasks, memory, fds, namespaces and timings",
		Long: `Describe the checkpoint in DIR: a process checkpoint (DIR holds
inventory.img) or a container bundle (DIR holds ctcr.json and images/).
Every image is read and checked, so show also tells whether a checkpoint
is complete and sound. --json prints the same as one object.`,
		Args: exactArgs("DIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			imgDir := dir
			var meta *container.Meta
			var stats *container.Stats
			var warnings []string
			if _, err := os.Stat(filepath.Join(dir, "ctcr.json")); err == nil {
				// The same checks as a restore, in the same order.
				if warnings, err = container.VerifyBundle(dir); err != nil {
					return fmt.Errorf("checkpoint in %s: %w", dir, err)
				}
				m, st, err := container.ReadBundle(dir)
				if err != nil {
					return err
				}
				meta, stats, imgDir = m, st, container.ImagesDir(dir)
			}
			sum, err := criu.Inspect(imgDir)
			if err != nil {
				return fmt.Errorf("checkpoint in %s: %w", dir, err)
			}
			sum.Warnings = append(warnings, sum.Warnings...)
			var timings *criustats.DumpStatsEntry
			if meta == nil {
				if timings, err = readStatsDump(imgDir); err != nil {
					return fmt.Errorf("checkpoint in %s: %w", dir, err)
				}
			}
			if g.json {
				out := map[string]any{"container": meta, "stats": stats, "checkpoint": sum}
				if timings != nil {
					out["stats"] = map[string]any{"frozen_seconds": float64(timings.GetFrozenTime()) / 1e6, "dump_seconds": float64(timings.GetFreezingTime()+timings.GetFrozenTime()) / 1e6,
						"memory_seconds": float64(timings.GetMemdumpTime()) / 1e6, "pages_written": timings.GetPagesWritten()}
				}
				return printJSON(stdout, out)
			}
			if timings != nil {
				fmt.Fprintf(stdout, "frozen %.3f s, dump %.3f s, memory copy %.3f s\n", float64(timings.GetFrozenTime())/1e6,
					float64(timings.GetFreezingTime()+timings.GetFrozenTime())/1e6, float64(timings.GetMemdumpTime())/1e6)
			}
			if meta != nil {
				fmt.Fprintf(stdout, "container %s (%s), checkpointed %s by ctcr %s\n", meta.ID, meta.Runtime, meta.Created.Format("2006-01-02 15:04:05 MST"), meta.CtcrVersion)
				if meta.Rootfs != "" {
					fmt.Fprintf(stdout, "  rootfs   %s\n", meta.Rootfs)
				}
				if stats != nil {
					if stats.PreCopyRounds > 0 {
						fmt.Fprintf(stdout, "  pre-copy %d bytes in %d rounds, %.3f s, while it ran\n", stats.PreCopyBytes, stats.PreCopyRounds, stats.PreCopySeconds)
					}
					fmt.Fprintf(stdout, "  frozen   %.3f s, dump %.3f s, memory copy %.3f s\n", stats.FrozenSeconds, stats.DumpSeconds, stats.MemorySeconds)
					for _, w := range stats.Warnings {
						fmt.Fprintf(stdout, "  warning  %s\n", w)
					}
				}
			}
			ns := "none (the host's)"
			if len(sum.Namespaces) > 0 {
				ns = strings.Join(sum.Namespaces, ", ")
			}
			fmt.Fprintf(stdout, "%d tasks, %d bytes of memory, own namespaces: %s\n", len(sum.Tasks), sum.PagesBytes, ns)
			if sum.Compression != "none" {
				fmt.Fprintf(stdout, "page images compressed with %s\n", sum.Compression)
			}
			switch v := sum.Vdso; {
			case v == "same":
				fmt.Fprintf(stdout, "vDSO: the same as this kernel's\n")
			case v == "proxy":
				fmt.Fprintf(stdout, "vDSO: differs from this kernel's; a restore puts its functions behind jumps into this kernel's\n")
			case v != "":
				fmt.Fprintf(stdout, "vDSO: a restore here is %s\n", v)
			}
			for _, w := range sum.Warnings {
				fmt.Fprintf(stdout, "warning: %s\n", w)
			}
			fmt.Fprintln(stdout)
			fmt.Fprintf(stdout, "%7s %7s %7s %7s %7s %10s  %-16s %s\n", "PID", "PPID", "PGID", "SID", "THREADS", "MEMORY", "COMMAND", "STATE")
			for _, t := range sum.Tasks {
				fmt.Fprintf(stdout, "%7d %7d %7d %7d %7d %10d  %-16s %s\n", t.Pid, t.Ppid, t.Pgid, t.Sid, len(t.Threads), t.PagesBytes, t.Comm, t.State)
				for _, f := range t.Fds {
					fmt.Fprintf(stdout, "%18s fd %-3d %-9s %s\n", "", f.Fd, f.Type, f.Name)
				}
			}
			return nil
		},
	}
	return exits(c, exitOK, exitFailure, exitUsage)
}
