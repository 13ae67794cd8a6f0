package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ctcr/ctcr/criu"
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
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	if n == 0 {
		n = -1 // DumpOptions.GhostLimit's "none", as 0 is its default
	}
	*g.n = n
	return nil
}

// parseSize reads a byte count with an optional K, M or G suffix (k, m, g
// too; powers of 1024).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	shift := 0
	if t != "" {
		switch t[len(t)-1] {
		case 'k', 'K':
			shift = 10
		case 'm', 'M':
			shift = 20
		case 'g', 'G':
			shift = 30
		}
		if shift != 0 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseUint(t, 10, 63)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size (bytes, or a number with K, M or G)", s)
	}
	if n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("%q is too large a size", s)
	}
	return int64(n) << shift, nil
}

// ghostLimitFlag adds --ghost-limit to c, stored in n (0 while not
// given, which the engine reads as criu.DefaultGhostLimit).
func ghostLimitFlag(c *cobra.Command, n *int64) {
	c.Flags().Var(ghostLimit{n}, "ghost-limit", fmt.Sprintf(
		"keep unlinked files that tasks hold open or mapped with up to SIZE bytes of data each (K, M, G suffixes; 0 keeps none that holds data; holes do not count, so a sparse file of any size passes if its data does); a file over it fails the dump naming it. The default is ctcr's limit from before the flag (%dM), larger than CRIU's 1M, so that dumps which worked still do",
		criu.DefaultGhostLimit>>20))
}
