// Package test holds ctcr's integration tests. Each test starts a real
// workload (a C program from workloads/ that checks itself, see
// workloads/workload.h), checkpoints it with the ctcr binary, restores it
// and asserts that the workload reports PASS. They run as root on the
// running kernel; nothing of the kernel is mocked.
//
// TestMain builds ctcr once (or takes $CTCR), compiles the workloads once
// into a temporary directory and makes the test process a child subreaper,
// so that tasks restored with -d are re-parented to it and reaped here.
package test

import (
	"bytes"
	"fmt"
	"github.com/ctcr/ctcr/test/harness"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var (
	// ctcrBin is the ctcr binary under test; ctcrErr says why there is none.
	ctcrBin string
	ctcrErr error

	// workloadBins maps a workload name to its compiled binary;
	// workloadErrs holds the compiler output of those that failed.
	workloadBins = map[string]string{}
	workloadErrs = map[string]error{}
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Println("skipping the ctcr integration tests: they must run as root (ptrace, mounts, restoring PIDs)")
		return 0
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		fmt.Println("skipping the ctcr integration tests: gcc is not installed (apt-get install gcc); it compiles the workloads")
		return 0
	}
	// Tasks restored with -d lose their parent when ctcr exits; as a
	// subreaper this process inherits them and can collect their status.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "prctl(PR_SET_CHILD_SUBREAPER): %v\n", err)
		return 1
	}
	// An fd inherited without O_CLOEXEC (from a shell, a CI runner) would
	// pass on to every workload, and ctcr may not support its kind.
	if err := harness.CloseOnExecInherited(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sweepLeftovers()
	dir, err := os.MkdirTemp("", "ctcr-workloads-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// The next run kills what this one leaves if it dies without its
	// clean-ups; until then the lock says the workloads are in use.
	if err := harness.OwnDir(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Whatever a test's clean-up missed (a task that escaped its tree, a
	// container a failed restore created under its ID) goes with the run.
	defer func() {
		harness.KillWorkload(0, dir+"/", 10*time.Second)
		if ids := harness.DeleteOwnContainers(); len(ids) > 0 {
			fmt.Fprintf(os.Stderr, "deleted containers the tests left: %s\n", strings.Join(ids, " "))
		}
	}()
	if err := compileWorkloads(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctcrBin, ctcrErr = buildCtcr()
	if ctcrErr != nil {
		fmt.Fprintf(os.Stderr, "ctcr is not available, every test that needs it fails: %v\n", ctcrErr)
	}
	return m.Run()
}

// compileWorkloads compiles every workloads/*.c into dir, and counter.c a
// second time statically linked as "counter-static". A workload that does
// not compile fails only the tests that use it.
func compileWorkloads(dir string) error {
	srcs, err := filepath.Glob("workloads/*.c")
	if err != nil || len(srcs) == 0 {
		return fmt.Errorf("no workloads/*.c found from %s: %v", mustGetwd(), err)
	}
	type target struct {
		name, src string
		extra     []string
	}
	var targets []target
	for _, src := range srcs {
		name := strings.TrimSuffix(filepath.Base(src), ".c")
		targets = append(targets, target{name, src, nil})
		if name == "counter" || name == "snapwriter" {
			targets = append(targets, target{name + "-static", src, []string{"-static"}})
		}
	}
	for _, tg := range targets {
		bin := filepath.Join(dir, tg.name)
		args := append([]string{"-O2", "-g", "-Wall", "-Wextra", "-Werror", "-std=gnu11", "-o", bin, tg.src}, tg.extra...)
		out, err := exec.Command("gcc", args...).CombinedOutput()
		if err != nil {
			workloadErrs[tg.name] = fmt.Errorf("gcc %s: %v\n%s", strings.Join(args, " "), err, out)
			continue
		}
		workloadBins[tg.name] = bin
	}
	return nil
}

// buildCtcr returns $CTCR, or builds ../bin/ctcr the way `make build` does.
func buildCtcr() (string, error) {
	if p := os.Getenv("CTCR"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("$CTCR: %w", err)
		}
		return abs, nil
	}
	root, err := filepath.Abs("..")
	if err != nil {
		return "", err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go" // where the README's machines have it; sudo drops it from PATH
	}
	bin := filepath.Join(root, "bin", "ctcr")
	cmd := exec.Command(goBin, "build", "-o", bin, "./cmd/ctcr")
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build -o bin/ctcr ./cmd/ctcr: %v\n%s", err, out.String())
	}
	return bin, nil
}

// sweepLeftovers kills the workloads and deletes the containers of test
// runs that died without their clean-ups (see harness.OwnDir), and says
// what it swept.
func sweepLeftovers() {
	tmp := os.TempDir()
	for _, dir := range harness.SweepDeadDirs(filepath.Join(tmp, "ctcr-workloads-*")) {
		fmt.Fprintf(os.Stderr, "swept the workloads of a dead test run: %s\n", dir)
	}
	if ids := harness.SweepDeadContainers(filepath.Join(tmp, "ctcrpm-*")); len(ids) > 0 {
		fmt.Fprintf(os.Stderr, "deleted containers of dead test runs: %s\n", strings.Join(ids, " "))
	}
}

func mustGetwd() string {
	wd, _ := os.Getwd()
	return wd
}

// needCtcr fails the test if ctcr could not be built.
func needCtcr(t *testing.T) {
	t.Helper()
	if ctcrErr != nil {
		t.Fatalf("no ctcr binary: %v", ctcrErr)
	}
}

// workloadBin returns the compiled workload, or fails the test with gcc's output.
func workloadBin(t *testing.T, name string) string {
	t.Helper()
	if err, ok := workloadErrs[name]; ok {
		t.Fatalf("workload %s did not compile: %v", name, err)
	}
	bin, ok := workloadBins[name]
	if !ok {
		t.Fatalf("no workload named %s in workloads/", name)
	}
	return bin
}
