package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ctcr/ctcr/test/harness"
)

// workload is one running workload program and its DIR.
type workload struct {
	t    *testing.T
	name string
	dir  string // DIR: ready, check, result, out, err
	cmd  *exec.Cmd
	pid  int

	waited bool     // the original process has been reaped by cmd.Wait
	logs   []string // files (ctcr's stderr, dump logs) shown on failure
}

// startWorkload starts the named workload in its own session with
// stdin=/dev/null and stdout/stderr on DIR/out and DIR/err, and waits for
// DIR/ready. Cleanup kills and reaps it, and the task restored in its
// place, whatever the test's outcome.
func startWorkload(t *testing.T, name string, args ...string) *workload {
	t.Helper()
	w := launchWorkload(t, name, args...)
	w.waitReady()
	return w
}

// launchWorkload starts workload name without waiting until it is ready.
func launchWorkload(t *testing.T, name string, args ...string) *workload {
	t.Helper()
	bin := workloadBin(t, name)
	w := &workload{t: t, name: name, dir: t.TempDir()}
	out, err := os.Create(w.path("out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	errf, err := os.Create(w.path("err"))
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	w.cmd = exec.Command(bin, append([]string{w.dir}, args...)...)
	w.cmd.Stdout, w.cmd.Stderr = out, errf // regular files: no pipes for ctcr to refuse
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := w.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	w.pid = w.cmd.Process.Pid
	t.Cleanup(w.cleanup)
	return w
}

func (w *workload) path(name string) string { return filepath.Join(w.dir, name) }

func (w *workload) read(name string) string {
	b, err := os.ReadFile(w.path(name))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return string(b)
}

func (w *workload) waitReady() {
	w.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(w.path("ready")); err == nil {
			return
		}
		if st, err := readStat(w.pid); err != nil || st.state == 'Z' {
			err := w.cmd.Wait()
			w.waited = true
			w.t.Fatalf("%s exited before it was ready: %v%s", w.name, err, w.report())
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("%s did not write ready within 60 s%s", w.name, w.report())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// requestCheck creates DIR/check: the workload verifies its state and exits.
func (w *workload) requestCheck() {
	w.t.Helper()
	if err := os.WriteFile(w.path("check"), nil, 0o644); err != nil {
		w.t.Fatal(err)
	}
}

// dumpRestoreWorkload starts workload name, dumps it (killing it and its
// children), restores it in the foreground, where it must check itself
// and pass, and has crit decode the images. It returns the PIDs of the
// children the workload had.
func dumpRestoreWorkload(t *testing.T, name string, args ...string) map[int]procStat {
	t.Helper()
	needCtcr(t)
	w := startWorkload(t, name, args...)
	kids := childrenOf(w.pid)
	img := filepath.Join(t.TempDir(), "img")
	dump(t, w, img, false, 0)
	// Its children, killed by the dump, were re-parented to this
	// subreaper: reap them, or their PIDs stay taken.
	for pid := range kids {
		if _, _, err := reap(pid, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	restoreForeground(t, w, img, scenario{}, nil)
	if !t.Failed() {
		decodeWithCrit(t, img)
	}
	return kids
}

// checkPasses asks the original process to check itself and expects it
// to exit 0 within timeout with a PASS result; what names it in errors.
func (w *workload) checkPasses(timeout time.Duration, what string) {
	w.t.Helper()
	w.requestCheck()
	ps, err := w.waitOriginal(timeout)
	if err != nil {
		w.t.Fatal(err)
	}
	if ps.ExitCode() != 0 {
		w.t.Errorf("%s: %v, want exit status 0%s", what, ps, w.report())
	}
	w.assertPassed()
}

// waitOriginal reaps the original process, which must exit within timeout.
func (w *workload) waitOriginal(timeout time.Duration) (*os.ProcessState, error) {
	done := make(chan error, 1)
	go func() { done <- w.cmd.Wait() }()
	select {
	case <-done:
		w.waited = true
		return w.cmd.ProcessState, nil
	case <-time.After(timeout):
		return nil, fmt.Errorf("%s (PID %d) still runs after %v: %s", w.name, w.pid, timeout, describe(w.pid))
	}
}

// assertPassed fails the test unless DIR/result says PASS.
func (w *workload) assertPassed() {
	w.t.Helper()
	res := w.read("result")
	if !strings.HasPrefix(res, "PASS") {
		w.t.Errorf("%s did not pass after restore%s", w.name, w.report())
	}
}

// report gathers what a failing test should show: the workload's result,
// out and err, and ctcr's stderr and logs.
func (w *workload) report() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n--- %s: %s", w.path("result"), strings.TrimSpace(w.read("result")))
	fmt.Fprintf(&b, "\n--- %s:\n%s", w.path("out"), tail(w.read("out"), 2000))
	fmt.Fprintf(&b, "\n--- %s:\n%s", w.path("err"), tail(w.read("err"), 2000))
	for _, l := range w.logs {
		b2, err := os.ReadFile(l)
		text := string(b2)
		if err != nil {
			text = "(" + err.Error() + ")"
		}
		fmt.Fprintf(&b, "\n--- %s:\n%s", l, tail(text, 4000))
	}
	fmt.Fprintf(&b, "\n--- %s", describe(w.pid))
	return b.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// cleanup kills and reaps the original process, its whole tree and every
// task restored in its place (restored tasks keep the original's command
// line, which names DIR, whatever their PIDs), so that a failed test leaves
// nothing running to disturb the next ones.
func (w *workload) cleanup() {
	if !w.waited {
		w.cmd.Process.Kill()
		w.waitOriginal(10 * time.Second)
	}
	if err := harness.KillWorkload(w.pid, w.dir, 10*time.Second); err != nil {
		w.t.Errorf("cleanup: %v", err)
	}
}

// ctcrRun is one invocation of ctcr; its stdout and stderr go to files so
// that a restored task that inherited them cannot hold up the test.
type ctcrRun struct {
	t      *testing.T
	args   []string
	cmd    *exec.Cmd
	outP   string
	errP   string
	done   chan struct{}
	status *os.ProcessState
}

// startCtcr runs ctcr with args in the background.
func startCtcr(t *testing.T, args ...string) *ctcrRun {
	t.Helper()
	needCtcr(t)
	dir := t.TempDir()
	r := &ctcrRun{t: t, args: args, outP: filepath.Join(dir, "ctcr.stdout"), errP: filepath.Join(dir, "ctcr.stderr"), done: make(chan struct{})}
	out, err := os.Create(r.outP)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	errf, err := os.Create(r.errP)
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	r.cmd = exec.Command(ctcrBin, args...)
	r.cmd.Stdout, r.cmd.Stderr = out, errf
	r.cmd.Env = append(os.Environ(), "GOTRACEBACK=all") // every goroutine on SIGQUIT
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", r, err)
	}
	go func() {
		r.cmd.Wait()
		r.status = r.cmd.ProcessState
		close(r.done)
	}()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			r.cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

// runCtcr runs ctcr with args and waits up to timeout for it.
func runCtcr(t *testing.T, timeout time.Duration, args ...string) *ctcrRun {
	t.Helper()
	r := startCtcr(t, args...)
	if err := r.wait(timeout); err != nil {
		t.Fatal(err)
	}
	return r
}

// wait waits up to timeout for ctcr to exit; on timeout it sends
// SIGQUIT (Go prints every goroutine's stack), then kills ctcr.
func (r *ctcrRun) wait(timeout time.Duration) error {
	select {
	case <-r.done:
		return nil
	case <-time.After(timeout):
		// SIGQUIT first: Go prints where every goroutine waits.
		r.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-r.done:
		case <-time.After(3 * time.Second):
			r.cmd.Process.Kill()
			<-r.done
		}
		return fmt.Errorf("%s did not exit within %v; stderr (with the stacks of a SIGQUIT): %s", r, timeout, r.stderr())
	}
}

func (r *ctcrRun) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// code is ctcr's exit status, or 128+signal.
func (r *ctcrRun) code() int {
	ws := r.status.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

func (r *ctcrRun) stdout() string {
	b, _ := os.ReadFile(r.outP)
	return string(b)
}

func (r *ctcrRun) stderr() string {
	b, _ := os.ReadFile(r.errP)
	return string(b)
}

func (r *ctcrRun) String() string { return "ctcr " + strings.Join(r.args, " ") }
