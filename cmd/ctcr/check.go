package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/ctcr/ctcr/criu"
)

func checkCmd(g *globalFlags, stdout io.Writer) *cobra.Command {
	c := &cobra.Command{
		Use:   "check",
		Short: "Report whether this kernel has what ctcr needs",
		Long: `Probe the kernel interfaces ctcr relies on and print a table of them.
A required one missing is NO (and ctcr check fails); an optional one
missing is "no": ctcr works without it.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			feats := criu.Features()
			missing := criu.CheckFeatures()
			if g.json {
				if err := printJSON(stdout, map[string]any{"ok": missing == nil, "features": feats}); err != nil {
					return err
				}
			} else {
				for _, f := range feats {
					state := "yes"
					switch {
					case !f.Present && f.Required:
						state = "NO"
					case !f.Present:
						// Not a fault: ctcr does without it.
						state = "no"
					}
					need := "optional"
					if f.Required {
						need = "required"
					}
					fmt.Fprintf(stdout, "%-52s %-4s %-8s %s\n", f.Name, state, need, f.Detail)
				}
			}
			if missing != nil {
				return missing
			}
			if !g.json {
				fmt.Fprintln(stdout, "Looks good.")
			}
			return nil
		},
	}
	return exits(c, exitOK, exitFailure, exitUsage)
}
