package ptrace

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMain lets the test binary serve as a process of several threads
// (Go's runtime starts some) that the test seizes and kills.
func TestMain(m *testing.M) {
	if os.Getenv("PTRACE_TEST_SLEEPER") != "" {
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestWaitForDeadLeader seizes the main thread and one other thread of a
// process, kills the process (as exit_group from a thread not seized
// would) and waits for the main thread alone: its exit is reported only
// once the seized thread, a zombie that only ctcr can collect, is gone.
// Wait must return, not wait forever.
func TestWaitForDeadLeader(t *testing.T) {
	cmd, other := startSleeper(t)
	pid := cmd.Process.Pid
	tr := NewTracer()
	defer tr.Close()
	if err := tr.Do(func() error {
		for _, tid := range []int{pid, other} {
			if _, err := Seize(tid, 0); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	unix.Kill(pid, unix.SIGKILL)
	done := make(chan error, 1)
	go func() {
		done <- tr.Do(func() error {
			st, err := Wait(pid)
			if err == nil && !st.Exited() {
				t.Errorf("main thread: %v, want its exit", st)
			}
			if err != nil {
				return err
			}
			// The seized thread's death was collected meanwhile: its
			// Wait reports it.
			st, err = Wait(other)
			if err == nil && !st.Exited() {
				t.Errorf("thread %d: %v, want its exit", other, st)
			}
			return err
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Wait for the dead main thread %d did not return in 10 s (thread %d seized and dead)", pid, other)
	}
}
