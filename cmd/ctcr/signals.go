package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/container"
	"github.com/ctcr/ctcr/criu"
)

// rollBackOnSignals makes SIGINT, SIGTERM and SIGHUP roll back what ctcr
// is doing, as a failure would, instead of ending it in the middle: the
// running dump, checkpoint or restore stops at its next step, undoes what
// it did (tasks resumed untouched, the container thawed, the tasks a
// restore made killed, nothing half-written left) and fails with a
// message naming the signal. A signal that comes while ctcr only waits
// for the task it restored ends ctcr as it would
// have without this: status 128+signal. One that comes before anything
// started fails at once saying so; one that comes while ctcr reports a
// finished operation is ignored. A second signal, or a rollback that
// takes over 30 s, ends ctcr at once, as SIGKILL would: the tasks a dump
// held run on, those a restore made die with it.
func rollBackOnSignals() {
	const rollbackLimit = 30 * time.Second
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, unix.SIGINT, unix.SIGTERM, unix.SIGHUP)
	go func() {
		rolling := false
		for sig := range ch {
			s := sig.(syscall.Signal)
			name := unix.SignalName(s)
			if rolling {
				fmt.Fprintf(os.Stderr, "ctcr: %s again: exiting before the rollback ended\n", name)
				os.Exit(128 + int(s))
			}
			switch criu.Interrupt("interrupted by " + name) {
			case criu.RollBack:
				fmt.Fprintf(os.Stderr, "ctcr: %s: rolling back\n", name)
				rolling = true
				// A rollback stuck somewhere must not make ctcr
				// unkillable but by SIGKILL, whose effect this is.
				time.AfterFunc(rollbackLimit, func() {
					fmt.Fprintf(os.Stderr, "ctcr: the rollback did not end within %v of %s: exiting\n", rollbackLimit, name)
					os.Exit(128 + int(s))
				})
			case criu.NotStarted:
				fmt.Fprintf(os.Stderr, "ctcr: interrupted by %s before anything was done\n", name)
				os.Exit(exitFailure)
			case criu.StopWaiting:
				os.Exit(128 + int(s))
			case criu.Finish:
				// Done already: report the success rather than die.
			}
		}
	}()
}

// runHidden runs the internal commands that are not for users (the
// container thaw guard, the ghost janitor of a restore), and reports
// whether args named one.
func runHidden(args []string) (int, bool) {
	if len(args) > 0 && args[0] == container.ThawGuardArg {
		return container.RunThawGuard(args[1:]), true
	}
	if len(args) == 1 && args[0] == criu.GhostJanitorArg {
		return criu.RunGhostJanitor(), true
	}
	return 0, false
}
