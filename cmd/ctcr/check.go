package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/ctcr/ctcr/criu"
)

func checkCmd(g *globalFlags, stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "check",
		Short: "Report whether this kernel has what ctcr needs",
		Long: `Probe the kernel interfaces ctcr relies on and print a table of them.
Exits 1 if a required one is missing.`,
		Args: cobra.NoArgs,
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
					if !f.Present {
						state = "NO"
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
}
