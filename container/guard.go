package container

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ThawGuardArg, as ctcr's first argument, runs the thaw guard
// (RunThawGuard) instead of a command.
const ThawGuardArg = "__thaw-guard"

// A container checkpoint freezes the container's cgroup, and ctcr may be
// killed (SIGKILL, the OOM killer) before it thaws it. A frozen cgroup
// does not thaw by itself, so before freezing ctcr starts a guard: a
// child process in its own session, ignoring the terminal's signals,
// that reads a pipe whose only writer is ctcr. The kernel closes that
// end when ctcr dies, however it dies: the guard then reads end-of-file
// without having been told the freezer is ctcr's business again, and
// thaws the cgroup itself.
type thawGuard struct {
	w   *os.File
	cmd *exec.Cmd
}

// Guard replies: what ctcr tells the guard before it closes the pipe.
const (
	guardDone = "done\n" // ctcr saw to the freezer itself
)

// startThawGuard starts a guard of freezerFile (a v1 freezer.state or a
// v2 cgroup.freeze file).
func startThawGuard(freezerFile string) (*thawGuard, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("thaw guard: %w", err)
	}
	defer r.Close()
	cmd := exec.Command("/proc/self/exe", ThawGuardArg, freezerFile)
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("thaw guard: %w", err)
	}
	return &thawGuard{w: w, cmd: cmd}, nil
}

// release tells the guard ctcr sees to the freezer itself and waits for
// it to exit.
func (g *thawGuard) release() {
	if g == nil {
		return
	}
	g.w.WriteString(guardDone)
	g.w.Close()
	done := make(chan struct{})
	go func() { g.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		g.cmd.Process.Kill()
	}
}

// RunThawGuard is the guard's whole life (args: the freezer file). It
// returns its exit status.
func RunThawGuard(args []string) int {
	signal.Ignore(unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGPIPE)
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "ctcr: thaw guard: want one freezer file")
		return 2
	}
	msg, _ := io.ReadAll(os.Stdin)
	if string(msg) == guardDone {
		return 0
	}
	file := args[0]
	value := "THAWED"
	if filepath.Base(file) == "cgroup.freeze" {
		value = "0"
	}
	if !strings.HasPrefix(file, "/sys/fs/cgroup/") {
		fmt.Fprintf(os.Stderr, "ctcr: thaw guard: %q is not a cgroup file\n", file)
		return 1
	}
	fd, err := unix.Open(file, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ctcr: thaw guard: open %s: %v\n", file, err)
		return 1
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(value)); err != nil {
		fmt.Fprintf(os.Stderr, "ctcr: thaw guard: thaw %s: %v\n", file, err)
		return 1
	}
	return 0
}

// testKillWhileFrozen is a test hook: with CTCR_TEST_KILL_FROZEN set,
// ctcr kills itself (SIGKILL) right after freezing a container, the
// moment only the guard can undo.
func testKillWhileFrozen() {
	if os.Getenv("CTCR_TEST_KILL_FROZEN") == "" {
		return
	}
	unix.Kill(os.Getpid(), unix.SIGKILL)
	select {}
}
