package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ctcr/ctcr/container"
)

func checkpointsCmd(g *globalFlags, stdout io.Writer) *cobra.Command {
	c := &cobra.Command{
		Use:   "checkpoints CTID",
		Short: "List the checkpoints (generations) of a container",
		Long: `List the checkpoints 'ctcr checkpoint CTID' wrote into /var/lib/ctcr/CTID,
oldest first: NAME (what restore --checkpoint takes), AGE, SIZE, and
whether it is complete and the one latest names (what 'ctcr restore
CTID' restores). A checkpoint of ctcr 0.1.0's layout, written directly
into /var/lib/ctcr/CTID, is listed as ".". A container with no
checkpoint is an unknown one.`,
		Args: exactArgs("CTID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			gens, err := container.Generations(args[0])
			if err != nil {
				return err
			}
			if len(gens) == 0 {
				return fmt.Errorf("container %s: %w: no checkpoints in %s", args[0], container.ErrUnknown, container.Home(args[0]))
			}
			if g.json {
				return printJSON(stdout, gens)
			}
			w := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tAGE\tSIZE\tSTATE")
			now := time.Now()
			for _, gen := range gens {
				state := "complete"
				if !gen.Complete {
					state = "incomplete"
				}
				if gen.Latest {
					state += ", latest"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", gen.Name, age(now.Sub(gen.Created)), size(gen.Bytes), state)
			}
			return w.Flush()
		},
	}
	return exits(c, exitOK, exitFailure, exitUsage)
}

// age prints a duration as people read ages: 45s, 12m, 3h, 2d.
func age(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// size prints a byte count in binary units.
func size(b int64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := int64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}
