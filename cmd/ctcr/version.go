package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/container"
	"github.com/ctcr/ctcr/criu"
	"github.com/ctcr/ctcr/criu/images"
)

// commit is the source revision, set at link time by make
// (-ldflags "-X main.commit=..."); without it, the revision the go
// command stamped into the binary, if any.
var commit string

// buildCommit returns the revision ctcr was built from, with "-dirty"
// when the tree had changes, or "unknown".
func buildCommit() string {
	if commit != "" {
		return commit
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "unknown"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}

// versionString is what --version and `ctcr version` print.
func versionString() string {
	return fmt.Sprintf("ctcr %s (commit %s, %s)", container.Version, buildCommit(), runtime.Version())
}

func versionCmd(g *globalFlags, stdout io.Writer) *cobra.Command {
	c := &cobra.Command{
		Use:   "version",
		Short: "Print ctcr's version, commit and Go version",
		Long: `Print ctcr's version, the commit it was built from and the Go version
that built it. With --json also the image format it writes and the
kernel features it found and uses (those 'ctcr check' lists).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !g.json {
				fmt.Fprintln(stdout, versionString())
				return nil
			}
			var uts unix.Utsname
			unix.Uname(&uts)
			var present, missing []string
			for _, f := range criu.Features() {
				if f.Present {
					present = append(present, f.Name)
				} else {
					missing = append(missing, f.Name)
				}
			}
			return printJSON(stdout, map[string]any{
				"version": container.Version, "commit": buildCommit(), "go": runtime.Version(),
				"image_format":    map[string]any{"criu_images": "CRIU images, inventory img_version " + fmt.Sprint(images.ImagesV1_1), "bundle": "ctcr.json, stats.json, config.json, images/"},
				"kernel":          strings.TrimRight(string(uts.Release[:]), "\x00"),
				"kernel_features": present, "kernel_features_missing": missing,
			})
		},
	}
	return exits(c, exitOK, exitUsage)
}
