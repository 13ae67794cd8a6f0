package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestShow checks that ctcr show describes a checkpoint, for people and
// as JSON, and refuses a directory without one.
func TestShow(t *testing.T) {
	needCtcr(t)
	w := startWorkload(t, "counter")
	img := filepath.Join(t.TempDir(), "img")
	runCtcr(t, 30*time.Second, "dump", "-t", strconv.Itoa(w.pid), "-D", img, "--leave-running")

	t.Run("show names the task, its command and its fds", func(t *testing.T) {
		r := runCtcr(t, 10*time.Second, "show", img)
		out, _ := os.ReadFile(r.outP)
		s := string(out)
		if r.status.ExitCode() != 0 || !strings.Contains(s, strconv.Itoa(w.pid)) || !strings.Contains(s, "counter") || !strings.Contains(s, "/dev/null") ||
			!strings.Contains(s, "vDSO: the same as this kernel's") {
			t.Errorf("ctcr show exited %d, printed:\n%s", r.status.ExitCode(), s)
		}
	})
	t.Run("show --json reports the task with its memory", func(t *testing.T) {
		r := runCtcr(t, 10*time.Second, "show", "--json", img)
		out, _ := os.ReadFile(r.outP)
		var v struct {
			Checkpoint struct {
				PagesBytes uint64 `json:"pages_bytes"`
				Vdso       string `json:"vdso"`
				Tasks      []struct {
					Pid  int    `json:"pid"`
					Comm string `json:"comm"`
				} `json:"tasks"`
			} `json:"checkpoint"`
		}
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if len(v.Checkpoint.Tasks) != 1 || v.Checkpoint.Tasks[0].Pid != w.pid || v.Checkpoint.PagesBytes == 0 || v.Checkpoint.Vdso != "same" {
			t.Errorf("show --json reported %+v", v.Checkpoint)
		}
	})
	t.Run("show of a directory without a checkpoint fails naming it", func(t *testing.T) {
		empty := t.TempDir()
		r := runCtcr(t, 10*time.Second, "show", empty)
		errOut, _ := os.ReadFile(r.errP)
		if r.status.ExitCode() != 1 || !strings.Contains(string(errOut), empty) {
			t.Errorf("ctcr show %s exited %d: %s", empty, r.status.ExitCode(), errOut)
		}
	})
}
