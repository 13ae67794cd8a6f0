package main

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ctcr/ctcr/container"
)

// Exit codes are a contract with wrapper scripts: vzctl's codes for the
// container commands, 0/1/2 for everything. exitTable is the one place
// they are listed; run maps errors onto them (exitCodeOf) and each
// command's --help shows the ones that command can return (exits).
const (
	exitOK              = 0
	exitFailure         = 1  // failed, or found nothing to act on
	exitUsage           = 2  // bad command line
	exitLocked          = 9  // another ctcr holds the container's lock
	exitCheckpointError = 16 // checkpoint failed; the container runs on
	exitRestoreError    = 17 // restore failed; nothing of it is left
	exitNotRunning      = 31 // the container is not running
	exitRunning         = 32 // the container is running already
	// exitProcess stands, in the table, for restore's pass-through of
	// the restored process's own exit status; it is never returned.
	exitProcess = -1
)

// exitTable gives each code its meaning, in the order --help lists them.
var exitTable = []struct {
	code    int
	meaning string
}{
	{exitOK, "success"},
	{exitFailure, "failure: unknown container or checkpoint (the message says where ctcr looked), a missing capability, or the operation failed (stderr names the task, fd, file or image); for a container, nothing was changed"},
	{exitUsage, "bad usage: a missing or extra argument, an unknown flag, flags that exclude each other"},
	{exitLocked, "another ctcr holds the container's lock (/run/ctcr/CTID.lock)"},
	{exitCheckpointError, "the checkpoint failed; the container was thawed and runs on"},
	{exitRestoreError, "the restore failed; everything it created was removed"},
	{exitNotRunning, "the container is not running"},
	{exitRunning, "the container is running already"},
	{exitProcess, "without -d, the restored process's exit status (128+N if signal N killed it)"},
}

// exitsAnnotation is the cobra annotation holding the codes a command
// can return, for tests and the help text.
const exitsAnnotation = "ctcr-exit-codes"

// exits records the codes c can return and appends the "Exit status"
// section, drawn from exitTable, to its help.
func exits(c *cobra.Command, codes ...int) *cobra.Command {
	var b strings.Builder
	b.WriteString("\n\nExit status:\n")
	var names []string
	for _, e := range exitTable {
		if !slices.Contains(codes, e.code) {
			continue
		}
		code := strconv.Itoa(e.code)
		if e.code == exitProcess {
			code = "N"
		}
		names = append(names, code)
		fmt.Fprintf(&b, "%4s  %s\n", code, wrap(e.meaning, 64, "      "))
	}
	c.Long = strings.TrimRight(c.Long, "\n") + strings.TrimRight(b.String(), "\n")
	if c.Annotations == nil {
		c.Annotations = map[string]string{}
	}
	c.Annotations[exitsAnnotation] = strings.Join(names, ",")
	return c
}

// wrap breaks s into lines of at most width characters, the second and
// later ones starting with indent.
func wrap(s string, width int, indent string) string {
	var out strings.Builder
	n := 0
	for i, w := range strings.Fields(s) {
		if i > 0 && n+1+len(w) > width {
			out.WriteString("\n" + indent)
			n = 0
		} else if i > 0 {
			out.WriteByte(' ')
			n++
		}
		out.WriteString(w)
		n += len(w)
	}
	return out.String()
}

// usageError marks errors in the command line.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// codedError is an error with the exit status it must produce.
type codedError struct {
	error
	code int
}

func (e codedError) Unwrap() error { return e.error }

// exitStatusError makes ctcr exit with a given status and no message
// (restore without -d exits with the restored task's status).
type exitStatusError int

func (e exitStatusError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// exitCodeOf maps an error of any command to its exit status.
func exitCodeOf(err error) int {
	var ee exitStatusError
	var ce codedError
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return int(ee)
	case errors.As(err, &ue) || isCobraUsage(err):
		return exitUsage
	case errors.As(err, &ce):
		return ce.code
	}
	return exitFailure
}

// containerExit maps an error of a container command to its exit code:
// the condition the container was found in, else attempted (16 or 17)
// when the checkpoint or restore itself was under way
// (container.ErrAttempted), else 1.
func containerExit(err error, attempted int) error {
	code := exitFailure
	switch {
	case errors.Is(err, container.ErrUnknown):
		code = exitFailure
	case errors.Is(err, container.ErrLocked):
		code = exitLocked
	case errors.Is(err, container.ErrNotRunning):
		code = exitNotRunning
	case errors.Is(err, container.ErrRunning):
		code = exitRunning
	case errors.Is(err, container.ErrAttempted):
		code = attempted
	}
	return codedError{err, code}
}

// isCobraUsage recognises the usage errors cobra makes itself, which
// carry no type: an unknown command or a required flag left out.
func isCobraUsage(err error) bool {
	msg := err.Error()
	// Flag errors come through the flag error func as usageError; only
	// what cobra words itself is matched, at the start of its message
	// (a system call's "invalid argument" deep in a failure is not bad
	// usage).
	for _, p := range []string{"unknown command", "required flag(s)", "unknown flag", "unknown shorthand flag", "flag needs an argument", "invalid argument \""} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// Argument validators that say what is missing or extra, as usage
// errors (cobra's own say "accepts 1 arg(s), received 0" and would exit
// 1). names are the operands as the Use line spells them.

// exactArgs wants exactly the operands named.
func exactArgs(names ...string) cobra.PositionalArgs {
	return rangeArgs(len(names), names...)
}

// rangeArgs wants the first min of the operands named, and allows the
// rest.
func rangeArgs(min int, names ...string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		name := strings.TrimPrefix(c.CommandPath(), c.Root().Name()+" ")
		switch {
		case len(args) < min:
			return usageError{fmt.Errorf("%s needs %s (usage: %s)", name, strings.Join(names[len(args):min], " and "), c.UseLine())}
		case len(args) > len(names):
			extra := strings.Join(args[len(names):], " ")
			if len(names) == 0 {
				return usageError{fmt.Errorf("%s takes no arguments, got %q (usage: %s)", name, extra, c.UseLine())}
			}
			return usageError{fmt.Errorf("%s takes at most %s, got the extra %q (usage: %s)", name, strings.Join(names, " "), extra, c.UseLine())}
		}
		return nil
	}
}

// noArgs refuses every operand.
func noArgs(c *cobra.Command, args []string) error { return rangeArgs(0)(c, args) }
