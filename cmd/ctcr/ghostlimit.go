package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/ctcr/ctcr/criu"
	"github.com/ctcr/ctcr/criurpc"
)

// ghostLimit is the --ghost-limit flag: a size in bytes, with an
// optional K, M or G suffix (powers of 1024, as CRIU's --ghost-limit).
type ghostLimit struct{ n *int64 }

func (g ghostLimit) String() string {
	if g.n == nil || *g.n == 0 {
		return "64M"
	}
	if *g.n < 0 {
		return "0"
	}
	return strconv.FormatInt(*g.n, 10)
}

func (g ghostLimit) Type() string { return "SIZE" }

func (g ghostLimit) Set(s string) error {
	n, err := criurpc.ParseSize(s)
	if err != nil {
		return err
	}
	if n == 0 {
		n = -1 // DumpOptions.GhostLimit's "none", as 0 is its default
	}
	*g.n = n
	return nil
}

// ghostLimitFlag adds --ghost-limit to c, stored in n (0 while not
// given, which the engine reads as criu.DefaultGhostLimit).
func ghostLimitFlag(c *cobra.Command, n *int64) {
	c.Flags().Var(ghostLimit{n}, "ghost-limit", fmt.Sprintf(
		"keep unlinked files that tasks hold open or mapped with up to SIZE bytes of data each (K, M, G suffixes; 0 keeps none that holds data; holes do not count, so a sparse file of any size passes if its data does); a file over it fails the dump naming it. The default is ctcr's limit from before the flag (%dM), larger than CRIU's 1M, so that dumps which worked still do",
		criu.DefaultGhostLimit>>20))
}
