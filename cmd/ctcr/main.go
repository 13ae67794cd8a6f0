// Command ctcr checkpoints running Linux processes to a directory of
// CRIU-format images and restores them, on this host or another.
//
// Exit statuses are listed in exitcodes.go, the one table of them.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/container"
	"github.com/ctcr/ctcr/criurpc"
)

type globalFlags struct {
	json     bool
	verbose  bool
	logFile  string
	lxcPaths []string
}

func main() {
	if code, ok := runHidden(os.Args[1:]); ok {
		os.Exit(code)
	}
	rollBackOnSignals()
	giveUpWhenStuck(os.Args[1:], os.Stdout, os.Stderr)
	// Installed or linked as criu, ctcr is CRIU to the runtimes that run
	// it (criu swrk, check, --version, dump, restore). Its own helper
	// processes run it by its real path, never as criu.
	if criurpc.IsCRIUName(os.Args[0]) && !isPuppet() {
		os.Exit(criurpc.Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	stopProfile := startCPUProfile()
	code := run(os.Args[1:], os.Stdout, os.Stderr)
	stopProfile()
	os.Exit(code)
}

func run(args []string, stdout, stderr io.Writer) int {
	if isPuppet() {
		// Never reached: a puppet is stopped by ptrace before its first
		// instruction and turned into another program.
		return exitFailure
	}
	if len(args) > 0 && args[0] == "criu" {
		return criurpc.Main(args[1:], stdout, stderr)
	}
	var g globalFlags
	root := &cobra.Command{
		Use:   "ctcr",
		Short: "Checkpoint and restore Linux processes and containers",
		Long: `ctcr checkpoints a running process tree, or a whole container, to a
directory of images in CRIU's format and restores it later, here or on
another host, with the same PIDs, memory, registers, files and signal
state.`,
		Version:       versionString(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.PersistentFlags().BoolVar(&g.json, "json", false, "print a machine-readable JSON result on stdout (and a failure as {\"error\", \"exit\"})")
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "log progress to stderr (or --log-file)")
	root.PersistentFlags().StringVar(&g.logFile, "log-file", "", "write the detailed log to this file")
	root.PersistentPreRunE = func(c *cobra.Command, _ []string) error {
		container.Places.LXC = append(append([]string(nil), g.lxcPaths...), container.Places.LXC...)
		return checkPrivileges(c)
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%s: %w (see %s --help)", strings.TrimPrefix(c.CommandPath(), "ctcr "), err, c.CommandPath())}
	})
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(args)
	root.AddCommand(dumpCmd(&g, stdout), restoreCmd(&g, stdout), checkCmd(&g, stdout), checkpointCmd(&g, stdout),
		checkpointsCmd(&g, stdout), hookCmd(&g, stdout), hookCheckpointCmd(&g, stdout), listCmd(&g, stdout), psCmd(&g, stdout),
		killCmd(&g, stdout), showCmd(&g, stdout), preDumpCmd(&g, stdout), versionCmd(&g, stdout), manCmd(root), trackWritesCmd())
	exits(root, exitOK, exitFailure, exitUsage)

	err := root.Execute()
	code := exitCodeOf(err)
	var ee exitStatusError
	if err == nil || errors.As(err, &ee) {
		return code
	}
	// One line, as the contract says: errors.Join (the failures of
	// several threads collected together) puts each on its own.
	fmt.Fprintf(stderr, "ctcr: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
	if g.json || slices.Contains(args, "--json") {
		// A script reading stdout learns of the failure there too.
		printJSON(stdout, map[string]any{"error": err.Error(), "exit": code})
	}
	return code
}

// logger returns the verbose log function, or nil when not verbose.
func (g *globalFlags) logger(stderr io.Writer) (func(string, ...any), func(), error) {
	if !g.verbose && g.logFile == "" {
		return nil, func() {}, nil
	}
	w := stderr
	closeFn := func() {}
	if g.logFile != "" {
		f, err := openLogFile(g.logFile)
		if err != nil {
			return nil, nil, err
		}
		w, closeFn = f, func() { f.Close() }
	}
	l := log.New(w, "", log.Lmicroseconds)
	return func(format string, args ...any) { l.Printf(format, args...) }, closeFn, nil
}

// openLogFile opens --log-file for appending, creating it 0600. A
// symbolic link there is followed only to what is not a regular file (a
// terminal, a pipe), or when it names one of ctcr's own fds
// (/dev/stderr, /dev/fd/N, /proc/self/fd/N): a link planted where a log
// is written must not make ctcr append to a file it names.
func openLogFile(path string) (*os.File, error) {
	ownFd := path == "/dev/stdout" || path == "/dev/stderr" || strings.HasPrefix(path, "/dev/fd/") || strings.HasPrefix(path, "/proc/self/fd/")
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSymlink != 0 && !ownFd {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|unix.O_NONBLOCK, 0)
		if err != nil {
			return nil, fmt.Errorf("--log-file: %w", err)
		}
		if st, err := f.Stat(); err != nil || st.Mode().IsRegular() || st.IsDir() {
			f.Close()
			return nil, fmt.Errorf("--log-file %s: a symbolic link to a file; name the file itself", path)
		}
		return f, nil
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_APPEND
	if !ownFd {
		flags |= unix.O_NOFOLLOW
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("--log-file: %w", err)
	}
	return f, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	return enc.Encode(v)
}

// progressLine returns a Progress option that keeps one line of stderr
// up to date while memory moves, when stderr is a terminal and the
// output is not --json, and a func that ends that line.
func (g *globalFlags) progressLine(stderr io.Writer, verb string) (func(bytes uint64), func()) {
	f, ok := stderr.(*os.File)
	if !ok || g.json {
		return nil, func() {}
	}
	if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err != nil {
		return nil, func() {}
	}
	shown := false
	return func(b uint64) {
			fmt.Fprintf(f, "\rctcr: %s: %d MiB of memory", verb, b>>20)
			shown = true
		}, func() {
			if shown {
				fmt.Fprintln(f)
			}
		}
}

// printWarnings writes each warning of a checkpoint (what it keeps
// otherwise than it was) to stderr.
func printWarnings(stderr io.Writer, warnings []string) {
	for _, w := range warnings {
		fmt.Fprintf(stderr, "ctcr: warning: %s\n", w)
	}
}

// lxcPathFlag gives c, a command that looks containers up by id, the
// --lxcpath flag.
func lxcPathFlag(c *cobra.Command, g *globalFlags) {
	c.Flags().StringArrayVar(&g.lxcPaths, "lxcpath", nil, "also look for LXC containers in this lxcpath (lxc-start -P), before the default ones")
}
