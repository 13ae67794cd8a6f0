// Package hooks is ctcr's OCI runtime hook: `ctcr hook ACTION` reads the
// container's state (the OCI specs.State JSON: id, pid, bundle,
// annotations) on stdin, as runc and crun pass it.
//
//	poststart  checkpoint the container with --leave-running once it is
//	           warm. Annotations (config.json "annotations"):
//	             ctcr.checkpoint.dir         where to write it (required,
//	                                         absolute)
//	             ctcr.checkpoint.delay       wait this long first (a Go
//	                                         duration: 500ms, 2s)
//	             ctcr.checkpoint.ready-file  or wait until this path exists
//	                                         inside the container
//	             ctcr.checkpoint.timeout     give up waiting after this
//	                                         long (default 10m)
//	             ctcr.checkpoint.pre-copy    "true": copy the memory while
//	                                         the container runs first
//	                                         (checkpoint --pre-copy)
//	           The runtime waits for its poststart hooks before it
//	           reports the container started, so the hook only checks its
//	           input and starts a detached ctcr (its own session, stdio
//	           on /run/ctcr/ID.hook.log) that waits and checkpoints; the
//	           hook itself returns at once.
//	poststop   remove ctcr's lock of the container (/run/ctcr/ID.lock).
//
// A malformed state or a missing field fails the hook before anything is
// done.
package hooks

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/container"
	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/internal/atomicfile"
	"github.com/ctcr/ctcr/internal/inroot"
)

// Annotations the poststart hook reads.
const (
	AnnotationDir       = "ctcr.checkpoint.dir"
	AnnotationDelay     = "ctcr.checkpoint.delay"
	AnnotationReadyFile = "ctcr.checkpoint.ready-file"
	AnnotationTimeout   = "ctcr.checkpoint.timeout"
	AnnotationPreCopy   = "ctcr.checkpoint.pre-copy"
)

// DefaultTimeout bounds the wait for a ready file.
const DefaultTimeout = 10 * time.Minute

// ErrBadState marks a state on stdin the hook cannot act on.
var ErrBadState = errors.New("bad OCI state on stdin")

// maxState caps what is read from stdin: a state is a few hundred bytes
// plus its annotations.
const maxState = 1 << 20

// ReadState decodes the OCI state JSON from r. It must name the
// container (a non-empty id without a slash).
func ReadState(r io.Reader) (*specs.State, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxState+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadState, err)
	}
	if len(b) > maxState {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrBadState, maxState)
	}
	var st specs.State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadState, err)
	}
	if st.ID == "" {
		return nil, fmt.Errorf("%w: no \"id\"", ErrBadState)
	}
	if strings.ContainsAny(st.ID, "/\x00") || st.ID == "." || st.ID == ".." {
		return nil, fmt.Errorf("%w: id %q is not a container id", ErrBadState, st.ID)
	}
	return &st, nil
}

// Plan is what the detached checkpointer does: wait, then checkpoint.
type Plan struct {
	ID        string
	Pid       int    // the container's init, from the state
	Start     uint64 // its start time, so a reused PID is not followed
	Dir       string
	Delay     time.Duration
	ReadyFile string // absolute, inside the container
	Timeout   time.Duration
	PreCopy   bool
}

// PoststartPlan checks a poststart state and its annotations.
func PoststartPlan(st *specs.State) (*Plan, error) {
	if st.Pid <= 0 {
		return nil, fmt.Errorf("%w: container %s: no \"pid\"", ErrBadState, st.ID)
	}
	p := &Plan{ID: st.ID, Pid: st.Pid, Timeout: DefaultTimeout}
	a := st.Annotations
	p.Dir = a[AnnotationDir]
	if p.Dir == "" {
		return nil, fmt.Errorf("%w: container %s: no annotation %s (where to write the checkpoint)", ErrBadState, st.ID, AnnotationDir)
	}
	if !filepath.IsAbs(p.Dir) {
		return nil, fmt.Errorf("%w: container %s: annotation %s=%q is not an absolute path", ErrBadState, st.ID, AnnotationDir, p.Dir)
	}
	var err error
	if s, ok := a[AnnotationDelay]; ok {
		if p.Delay, err = time.ParseDuration(s); err != nil || p.Delay < 0 {
			return nil, fmt.Errorf("%w: container %s: annotation %s=%q is not a duration such as 2s", ErrBadState, st.ID, AnnotationDelay, s)
		}
	}
	if s, ok := a[AnnotationReadyFile]; ok {
		if !filepath.IsAbs(s) || filepath.Clean(s) == "/" {
			return nil, fmt.Errorf("%w: container %s: annotation %s=%q is not an absolute path of a file", ErrBadState, st.ID, AnnotationReadyFile, s)
		}
		p.ReadyFile = filepath.Clean(s)
	}
	if s, ok := a[AnnotationTimeout]; ok {
		if p.Timeout, err = time.ParseDuration(s); err != nil || p.Timeout <= 0 {
			return nil, fmt.Errorf("%w: container %s: annotation %s=%q is not a positive duration", ErrBadState, st.ID, AnnotationTimeout, s)
		}
	}
	if s, ok := a[AnnotationPreCopy]; ok {
		if p.PreCopy, err = strconv.ParseBool(s); err != nil {
			return nil, fmt.Errorf("%w: container %s: annotation %s=%q is not true or false", ErrBadState, st.ID, AnnotationPreCopy, s)
		}
	}
	stat, err := proc.ReadStat(st.Pid, st.Pid)
	if err != nil {
		return nil, fmt.Errorf("container %s: init %d: %w", st.ID, st.Pid, container.ErrNotRunning)
	}
	p.Start = stat.StartTime
	return p, nil
}

// Args are the arguments of the hidden subcommand that carries out p.
func (p *Plan) Args() []string {
	args := []string{"--id", p.ID, "--pid", strconv.Itoa(p.Pid), "--start", strconv.FormatUint(p.Start, 10),
		"--dir", p.Dir, "--delay", p.Delay.String(), "--timeout", p.Timeout.String()}
	if p.ReadyFile != "" {
		args = append(args, "--ready-file", p.ReadyFile)
	}
	if p.PreCopy {
		args = append(args, "--pre-copy")
	}
	return args
}

// LogPath is where the detached checkpointer of container id writes.
func LogPath(id string) string { return filepath.Join(container.LockDir, id+".hook.log") }

// Detach starts exe with args in a new session, stdin on /dev/null and
// stdout and stderr on logPath, and returns without waiting for it: the
// runtime waits for the hook and for the pipes it gave it, so the child
// must hold neither.
func Detach(exe string, args []string, logPath string) (int, error) {
	if err := atomicfile.PrivateDir(filepath.Dir(logPath)); err != nil {
		return 0, err
	}
	// A new file renamed over the old log, never one opened by its name:
	// a link planted there is replaced, not written through.
	logf, err := atomicfile.Create(filepath.Dir(logPath), filepath.Base(logPath), 0o600)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	pid := cmd.Process.Pid
	return pid, cmd.Process.Release()
}

// ErrInitGone means the container's init exited before it was ready.
var ErrInitGone = errors.New("the container's init exited")

// Wait sleeps p.Delay, then waits until p.ReadyFile exists inside the
// container (looked up from the init's root, so files on the
// container's own mounts count), for at most p.Timeout.
func (p *Plan) Wait() error {
	if p.Delay > 0 {
		time.Sleep(p.Delay)
	}
	if err := p.initAlive(); err != nil {
		return err
	}
	if p.ReadyFile == "" {
		return nil
	}
	deadline := time.Now().Add(p.Timeout)
	for {
		if err := p.initAlive(); err != nil {
			return err
		}
		ok, err := p.readyFileExists()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("container %s: %s did not appear within %v", p.ID, p.ReadyFile, p.Timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *Plan) initAlive() error {
	st, err := proc.ReadStat(p.Pid, p.Pid)
	if err != nil || st.StartTime != p.Start || st.State == 'Z' || st.State == 'X' {
		return fmt.Errorf("container %s: init %d: %w", p.ID, p.Pid, ErrInitGone)
	}
	return nil
}

// readyFileExists resolves ReadyFile with the init's root as "/", so an
// absolute symlink inside the container cannot point at the host.
func (p *Plan) readyFileExists() (bool, error) {
	root, err := inroot.OfTask(p.Pid)
	if err != nil {
		return false, fmt.Errorf("container %s: init %d: %w", p.ID, p.Pid, ErrInitGone)
	}
	defer root.Close()
	_, err = root.Stat(p.ReadyFile, inroot.InRoot)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	return false, fmt.Errorf("container %s: ready file: %w", p.ID, err)
}

// Checkpoint waits for p and checkpoints the container with
// --leave-running. The state's pid identifies the init: runc writes its
// state.json only after the poststart hooks ran, and the detached
// checkpointer may be faster. When the runtime's state names the same
// init by then, the container is resolved by id instead, so that the
// checkpoint records the runtime (and a restore updates its state).
func (p *Plan) Checkpoint(log func(string, ...any)) (*container.Meta, *container.Stats, error) {
	if err := p.Wait(); err != nil {
		return nil, nil, err
	}
	pid := p.Pid
	if c, err := container.Resolve(p.ID, 0); err == nil && c.Pid == p.Pid {
		pid = 0
	}
	return container.Checkpoint(container.CheckpointOptions{ID: p.ID, Pid: pid, Dir: p.Dir, LeaveRunning: true, PreCopy: p.PreCopy, Log: log})
}

// Poststop removes ctcr's lock file of the container. A ctcr that still
// holds the lock (a checkpoint under way) keeps it: the lock is left
// and ErrLocked returned.
func Poststop(st *specs.State) error {
	unlock, err := container.Lock(st.ID, false)
	if err != nil {
		return err
	}
	defer unlock()
	path := filepath.Join(container.LockDir, st.ID+".lock")
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
