package main

import (
	"io"

	"github.com/spf13/cobra"
)

func restoreCmd(g *globalFlags, stdout io.Writer) *cobra.Command {
	return &cobra.Command{Use: "restore -D DIR", Short: "Restore a process from a directory of images"}
}

func checkCmd(g *globalFlags, stdout io.Writer) *cobra.Command {
	return &cobra.Command{Use: "check", Short: "Report whether this kernel has what ctcr needs"}
}
