package ptrace

import (
	"os"
	"os/exec"
	"strconv"
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
	if os.Geteuid() != 0 {
		t.Skip("needs root (ptrace)")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PTRACE_TEST_SLEEPER=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	defer cmd.Process.Kill()
	var other int
	for deadline := time.Now().Add(10 * time.Second); other == 0; {
		entries, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
		for _, e := range entries {
			if tid, _ := strconv.Atoi(e.Name()); tid != pid && tid != 0 {
				other = tid
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d started no second thread in 10 s", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
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
	cmd.Wait()
}
