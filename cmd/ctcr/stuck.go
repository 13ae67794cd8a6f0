package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"sync/atomic"

	"github.com/ctcr/ctcr/criu/ptrace"
)

// stuckStatus is the exit status of a command that gives up on a task
// stuck in the kernel (giveUpWhenStuck): the container commands set
// theirs (16, 17) before they start; everything else fails with 1.
var stuckStatus atomic.Int32

func init() { stuckStatus.Store(exitFailure) }

// giveUpWhenStuck makes ctcr exit, with the command's failure status
// and one line naming the task, when it waits on a task that sleeps
// where no signal reaches it (ptrace.OnStuck): the wait cannot end
// otherwise, and every task a dying ctcr holds runs on (a dump's, the
// container thawed by its guard) or dies with it (a restore's
// half-made ones), as after a SIGKILL. With --json the failure is
// printed on stdout too, as run does.
func giveUpWhenStuck(args []string, stdout, stderr io.Writer) {
	ptrace.OnStuck = func(err error) {
		code := int(stuckStatus.Load())
		fmt.Fprintf(stderr, "ctcr: %v; giving up\n", err)
		if slices.Contains(args, "--json") {
			printJSON(stdout, map[string]any{"error": err.Error() + "; giving up", "exit": code})
		}
		os.Exit(code)
	}
}
