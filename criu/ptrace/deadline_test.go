package ptrace

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startSleeper starts the test binary as a sleeping process of several
// threads (see TestMain) and returns it with one thread other than its
// main one.
func startSleeper(t *testing.T) (*exec.Cmd, int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (ptrace)")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PTRACE_TEST_SLEEPER=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		killAndWait(t, cmd)
	})
	pid := cmd.Process.Pid
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, e := range entries {
			if tid, _ := strconv.Atoi(e.Name()); tid != pid && tid != 0 {
				return cmd, tid
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d started no second thread in 10 s", pid)
		}
	}
}

// doWithin runs fn on the tracer thread and fails the test if it has not
// returned within 10 s: what these tests check is that a wait ends.
func doWithin(t *testing.T, tr *Tracer, what string, fn func() error, onStuck ...func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- tr.Do(fn) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		// The tracer thread is stuck: exit without closing it.
		fmt.Fprintf(os.Stderr, "--- FAIL: %s: %s did not return within 10 s\n", t.Name(), what)
		for _, f := range onStuck {
			f()
		}
		os.Exit(1)
	}
}

// taskState returns the state letter and the TracerPid of a thread.
func taskState(pid, tid int) (string, string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
	if err != nil {
		return "gone", ""
	}
	var state, tracer string
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "State:"); ok {
			state = strings.Fields(v)[0]
		}
		if v, ok := strings.CutPrefix(line, "TracerPid:"); ok {
			tracer = strings.TrimSpace(v)
		}
	}
	return state, tracer
}

// runsFreely waits up to 5 s for thread tid of pid to be untraced and
// neither stopped nor traced-stopped.
func runsFreely(pid, tid int) error {
	var state, tracer string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		state, tracer = taskState(pid, tid)
		if tracer == "0" && (state == "S" || state == "R") {
			return nil
		}
	}
	return fmt.Errorf("task %d thread %d: state %s, TracerPid %s, want running untraced", pid, tid, state, tracer)
}

// TestWaitDeadline lets a seized task run on (asleep in the kernel, as
// a task is in a remote call that blocks) and waits for its next stop,
// which never comes by itself: the wait must end at its deadline with
// ErrWaitTimeout naming the task, the task stopped, and once let go the
// task must run on, not stopped by the watchdog's SIGSTOP.
func TestWaitDeadline(t *testing.T) {
	cmd, _ := startSleeper(t)
	pid := cmd.Process.Pid
	tr := NewTracer()
	defer tr.Close()
	const d = 300 * time.Millisecond
	start := time.Now()
	var waitErr error
	doWithin(t, tr, "a wait with a deadline", func() error {
		if _, err := Seize(pid, 0); err != nil {
			return err
		}
		// The sleeper is a Go program: its runtime signals itself
		// (SIGURG), each signal a stop to pass on; only the wait that
		// reaches the deadline ends the loop.
		var sig unix.Signal
		for {
			if err := Cont(pid, sig); err != nil {
				return err
			}
			st, err := waitFor(pid, d)
			if err != nil {
				waitErr = err
				if !(st.SignalDelivery() && st.Signal() == unix.SIGSTOP) {
					t.Errorf("after the deadline the task is in %v, want the watchdog's SIGSTOP stop", st)
				}
				break
			}
			if time.Since(start) > 5*time.Second {
				return fmt.Errorf("the task keeps stopping by itself (last: %v)", st)
			}
			sig = 0
			if st.SignalDelivery() {
				sig = st.Signal()
			}
		}
		return Detach(pid)
	})
	took := time.Since(start)
	if !errors.Is(waitErr, ErrWaitTimeout) {
		t.Fatalf("Wait for a task that does not stop: %v, want ErrWaitTimeout", waitErr)
	}
	if want := fmt.Sprintf("task %d: no stop within %v", pid, d); !strings.Contains(waitErr.Error(), want) {
		t.Errorf("error %q does not say %q", waitErr, want)
	}
	if took < d || took > d+5*time.Second {
		t.Errorf("the wait with a deadline of %v took %v", d, took)
	}
	if err := runsFreely(pid, pid); err != nil {
		t.Error(err)
	}
}

// TestWaitSeizedDeadline seizes a task its cgroup froze (as a container
// paused by its runtime is): it cannot reach the interrupt stop, nor any
// stop a signal would bring. The wait must end at its deadline naming
// the task; once the tracer thread ends and the cgroup is thawed, the
// task must run on untraced.
func TestWaitSeizedDeadline(t *testing.T) {
	cmd, other := startSleeper(t)
	pid := cmd.Process.Pid
	fz := newFreezer(t, cmd)
	cleanup := fz.cleanup
	fz.freeze()
	tr := NewTracer()
	const d = 300 * time.Millisecond
	start := time.Now()
	var waitErr error
	doWithin(t, tr, "a seize with a deadline", func() error {
		if err := Attach(other, 0); err != nil {
			return err
		}
		_, waitErr = waitSeized(other, d)
		return nil
	}, cleanup)
	took := time.Since(start)
	tr.Close() // the kernel detaches the task
	if !errors.Is(waitErr, ErrWaitTimeout) {
		t.Fatalf("WaitSeized of a frozen task: %v, want ErrWaitTimeout", waitErr)
	}
	if want := fmt.Sprintf("task %d (thread %d): no stop within %v while being seized", pid, other, d); !strings.Contains(waitErr.Error(), want) {
		t.Errorf("error %q does not say %q", waitErr, want)
	}
	if took < d || took > d+5*time.Second {
		t.Errorf("the seize with a deadline of %v took %v", d, took)
	}
	fz.thaw()
	if err := runsFreely(pid, other); err != nil {
		t.Error(err)
	}
}

// freezer is a v1 freezer cgroup holding one sleeper, for tests of tasks
// no signal reaches.
type freezer struct {
	t       *testing.T
	state   string // its freezer.state
	cleanup func() // thaws, kills the sleeper and removes the cgroup
}

// newFreezer moves cmd's process into a new freezer cgroup (or skips
// the test on a host with no v1 freezer).
func newFreezer(t *testing.T, cmd *exec.Cmd) *freezer {
	cg := fmt.Sprintf("/sys/fs/cgroup/freezer/deadlines-ptrace-test-%d-%d", os.Getpid(), cmd.Process.Pid)
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Skipf("no v1 freezer to freeze a task with: %v", err)
	}
	fz := &freezer{t: t, state: filepath.Join(cg, "freezer.state")}
	fz.cleanup = func() {
		os.WriteFile(fz.state, []byte("THAWED"), 0)
		cmd.Process.Kill()
		for deadline := time.Now().Add(5 * time.Second); os.Remove(cg) != nil && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
	}
	t.Cleanup(fz.cleanup)
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
		t.Fatal(err)
	}
	return fz
}

// freeze freezes the cgroup and waits until the kernel says FROZEN.
func (fz *freezer) freeze() {
	if err := os.WriteFile(fz.state, []byte("FROZEN"), 0); err != nil {
		fz.t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(fz.state)
		if strings.TrimSpace(string(b)) == "FROZEN" {
			return
		}
		if time.Now().After(deadline) {
			fz.t.Fatalf("%s: %q 5 s after FROZEN was written", fz.state, b)
		}
	}
}

func (fz *freezer) thaw() {
	if err := os.WriteFile(fz.state, []byte("THAWED"), 0); err != nil {
		fz.t.Error(err)
	}
}

// TestWaitStuckGivesUp: a wait on a task its cgroup froze while it ran
// (asleep where no signal reaches it, as in a remote call on a stuck
// file system) passes its deadline, and the watchdog's SIGSTOP cannot
// stop the task: stuckGrace later, OnStuck is called with an error
// naming the task and saying so. Once thawed, the task takes that
// SIGSTOP as a stop for the tracer, and let go it runs on.
func TestWaitStuckGivesUp(t *testing.T) {
	cmd, _ := startSleeper(t)
	pid := cmd.Process.Pid
	fz := newFreezer(t, cmd)
	stuck := make(chan error, 1)
	OnStuck, stuckGrace = func(err error) { stuck <- err }, 300*time.Millisecond
	defer func() { OnStuck, stuckGrace = nil, 10*time.Second }()
	tr := NewTracer()
	defer tr.Close()
	const d = 300 * time.Millisecond
	doWithin(t, tr, "seizing the task", func() error {
		_, err := Seize(pid, 0)
		return err
	})
	fz.freeze() // stopped in ptrace, the task counts as frozen
	done := make(chan error, 1)
	go func() {
		done <- tr.Do(func() error {
			// Let it run into the freezer, passing on the signals its
			// Go runtime sends itself, until the wait that OnStuck
			// gives up on ends with the SIGSTOP stop once thawed.
			var sig unix.Signal
			for {
				if err := Cont(pid, sig); err != nil {
					return err
				}
				st, err := waitFor(pid, d)
				if st.SignalDelivery() && st.Signal() == unix.SIGSTOP {
					if err == nil {
						err = errors.New("the SIGSTOP came without the deadline")
					}
					if !errors.Is(err, ErrWaitTimeout) {
						return err
					}
					return Detach(pid)
				}
				if err != nil {
					return err
				}
				sig = 0
				if st.SignalDelivery() {
					sig = st.Signal()
				}
			}
		})
	}()
	select {
	case err := <-stuck:
		want := fmt.Sprintf("task %d: no stop within %v, nor %v after SIGSTOP", pid, d, stuckGrace)
		if !errors.Is(err, ErrWaitTimeout) || !strings.Contains(err.Error(), want) {
			t.Errorf("OnStuck got %v, want ErrWaitTimeout saying %q", err, want)
		}
	case err := <-done:
		t.Fatalf("the wait on a frozen task ended before OnStuck: %v", err)
	case <-time.After(10 * time.Second):
		fz.cleanup()
		t.Fatal("OnStuck not called 10 s into a wait on a frozen task")
	}
	fz.thaw()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		fmt.Fprintf(os.Stderr, "--- FAIL: %s: the wait did not end 10 s after the thaw\n", t.Name())
		fz.cleanup()
		os.Exit(1)
	}
	if err := runsFreely(pid, pid); err != nil {
		t.Error(err)
	}
}

// TestCollectExits kills a process whose main thread and one other
// thread ctcr holds, and collects their deaths; then, for a held thread
// that was not killed, fails at its deadline, naming it.
func TestCollectExits(t *testing.T) {
	killed, killedOther := startSleeper(t)
	alive, _ := startSleeper(t)
	tr := NewTracer()
	defer tr.Close()
	doWithin(t, tr, "collecting exits", func() error {
		for _, tid := range []int{killed.Process.Pid, killedOther, alive.Process.Pid} {
			if _, err := Seize(tid, 0); err != nil {
				return err
			}
		}
		unix.Kill(killed.Process.Pid, unix.SIGKILL)
		if err := collectExits([]int{killed.Process.Pid, killedOther}, 5*time.Second); err != nil {
			t.Errorf("collect the deaths of a killed process: %v", err)
		}
		err := collectExits([]int{alive.Process.Pid}, 200*time.Millisecond)
		if want := fmt.Sprintf("task %d (and 0 more) not dead", alive.Process.Pid); err == nil || !errors.Is(err, ErrWaitTimeout) || !strings.Contains(err.Error(), want) {
			t.Errorf("collect the death of a live task: %v, want ErrWaitTimeout saying %q", err, want)
		}
		return Detach(alive.Process.Pid)
	})
}

// TestWaitForDeadNamespaceInit seizes the init of a PID namespace (a
// container's) and its two children, kills the init and waits for it
// alone: an init that exits kills every task of its namespace and waits,
// inside the kernel, until each is reaped, and the dead children's
// deaths go to ctcr, their tracer, first. Wait must collect them and
// return the init's death, not wait forever.
func TestWaitForDeadNamespaceInit(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (ptrace, CLONE_NEWPID)")
	}
	cmd := exec.Command("/bin/sh", "-c", "sleep 60 & sleep 60 & wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	init := cmd.Process.Pid
	var kids []int
	t.Cleanup(func() {
		killAndWait(t, cmd)
	})
	for deadline := time.Now().Add(10 * time.Second); len(kids) < 2; time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", init, init))
		kids = kids[:0]
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				kids = append(kids, pid)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the namespace's init %d made %d children in 10 s, want 2", init, len(kids))
		}
	}
	tr := NewTracer()
	doWithin(t, tr, "a wait for a killed namespace init", func() error {
		for _, pid := range append([]int{init}, kids...) {
			if _, err := Seize(pid, 0); err != nil {
				return err
			}
		}
		unix.Kill(init, unix.SIGKILL)
		st, err := Wait(init)
		if err != nil {
			return err
		}
		if !st.Exited() {
			t.Errorf("init %d: %v, want its death", init, st)
		}
		for _, kid := range kids {
			// Collected while the init's wait lasted: reported now.
			st, err := Wait(kid)
			if err != nil {
				return err
			}
			if !st.Exited() {
				t.Errorf("child %d: %v, want its death", kid, st)
			}
		}
		return nil
	})
	tr.Close()
}

// killAndWait kills cmd's process and waits 5 s at most for it to end: a
// task still traced by a tracer that should have let it go never does,
// and the test must say so rather than hang.
func killAndWait(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	cmd.Process.Kill()
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		t.Errorf("process %d did not end 5 s after SIGKILL (still traced?):\n%s", cmd.Process.Pid, st)
	}
}
