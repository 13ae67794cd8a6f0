package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// manCmd writes a man page per command (ctcr.8, ctcr-dump.8, ...), in
// plain roff, from the same text as --help: make install runs it so
// `man ctcr-checkpoint` says what `ctcr checkpoint --help` says.
func manCmd(root *cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:    "man DIR",
		Short:  "Write ctcr's man pages (section 8) into DIR",
		Hidden: true,
		Args:   exactArgs("DIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("man pages: %w", err)
			}
			pages := []*cobra.Command{root}
			for _, sub := range root.Commands() {
				if sub.IsAvailableCommand() {
					pages = append(pages, sub)
				}
			}
			for _, p := range pages {
				name := strings.ReplaceAll(p.CommandPath(), " ", "-")
				if err := os.WriteFile(filepath.Join(dir, name+".8"), []byte(manPage(p)), 0o644); err != nil {
					return fmt.Errorf("man page %s: %w", name, err)
				}
			}
			return nil
		},
	}
	return exits(c, exitOK, exitFailure, exitUsage)
}

// roff escapes s for a man page body.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			l = `\&` + l
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

func manPage(c *cobra.Command) string {
	name := strings.ReplaceAll(c.CommandPath(), " ", "-")
	var b strings.Builder
	fmt.Fprintf(&b, ".TH %s 8 %q \"ctcr\"\n", strings.ToUpper(name), time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&b, ".SH NAME\n%s \\- %s\n", name, roff(c.Short))
	fmt.Fprintf(&b, ".SH SYNOPSIS\n.nf\n%s\n.fi\n", roff(c.UseLine()))
	if c.Long != "" {
		fmt.Fprintf(&b, ".SH DESCRIPTION\n.nf\n%s\n.fi\n", roff(c.Long))
	}
	if c.HasAvailableLocalFlags() || c.HasAvailableInheritedFlags() {
		fmt.Fprintf(&b, ".SH OPTIONS\n.nf\n%s%s.fi\n", roff(c.LocalFlags().FlagUsages()), roff(c.InheritedFlags().FlagUsages()))
	}
	if c.HasAvailableSubCommands() {
		b.WriteString(".SH COMMANDS\n.nf\n")
		for _, s := range c.Commands() {
			if s.IsAvailableCommand() {
				fmt.Fprintf(&b, "%-12s %s (ctcr-%s(8))\n", s.Name(), roff(s.Short), s.Name())
			}
		}
		b.WriteString(".fi\n")
	}
	return b.String()
}
