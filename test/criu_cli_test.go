package test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// CRIU's own command line, as scripts call it, answered by ctcr linked
// as criu: dump with -t/-D/-W/-o/-v4, restore -d with --pidfile.
func TestCriuCommandLineDumpRestore(t *testing.T) {
	link := criuLink(t)
	w := startWorkload(t, "counter")
	img, work := filepath.Join(t.TempDir(), "img"), filepath.Join(t.TempDir(), "work")
	if err := os.Mkdir(work, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(link, "dump", "-t", strconv.Itoa(w.pid), "-D", img, "-W", work, "-o", "dump.log", "-v4").CombinedOutput()
	w.logs = append(w.logs, filepath.Join(work, "dump.log"), filepath.Join(work, "restore.log"))
	if err != nil {
		t.Fatalf("criu dump -t %d: %v\n%s%s", w.pid, err, out, w.report())
	}
	if _, err := os.Stat(filepath.Join(work, "stats-dump")); err != nil {
		t.Errorf("criu dump -W %s wrote no stats-dump there: %v", work, err)
	}
	if _, err := w.waitOriginal(10 * time.Second); err != nil {
		t.Fatalf("the dumped task was not killed: %v", err)
	}
	pidfile := filepath.Join(t.TempDir(), "pid")
	out, err = exec.Command(link, "restore", "-D", img, "-W", work, "-o", "restore.log", "-d", "--pidfile", pidfile).CombinedOutput()
	if err != nil {
		t.Fatalf("criu restore -d: %v\n%s%s", err, out, w.report())
	}
	if b, err := os.ReadFile(pidfile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(w.pid) {
		t.Errorf("--pidfile holds %q (%v), want %d", b, err, w.pid)
	}
	w.requestCheck()
	ws, reaped, err := reap(w.pid, 60*time.Second)
	if err != nil || !reaped {
		t.Fatalf("the restored task: reaped %v, %v%s", reaped, err, w.report())
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("the restored task ended with %s, want exit status 0%s", exitText(ws), w.report())
	}
	w.assertPassed()
}

func TestCriuCommandLineBadInput(t *testing.T) {
	link := criuLink(t)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"a dump without -t is bad usage", []string{"dump", "-D", t.TempDir()}, 2, "needs -t PID"},
		{"swrk on an fd that is no socket fails and says so", []string{"swrk", "0"}, 1, "swrk socket fd 0"},
		{"an unknown command is bad usage", []string{"lazy-pages"}, 2, "unknown command"},
		{"an unsupported feature fails check", []string{"check", "--feature", "lazy_pages"}, 1, "not supported by ctcr"},
		{"a restore from an empty directory names it", []string{"restore", "-D", t.TempDir(), "-d"}, 1, "no checkpoint in"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(link, tc.args...)
			cmd.Stdin = nil
			out, err := cmd.CombinedOutput()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || !strings.Contains(string(out), tc.want) || strings.Count(strings.TrimSpace(string(out)), "\n") > 1 {
				t.Errorf("criu %s: exit status %d, output %q; want %d and a short message with %q", strings.Join(tc.args, " "), code, out, tc.code, tc.want)
			}
		})
	}
}
