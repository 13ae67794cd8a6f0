package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ctcr/ctcr/test/harness"
)

// benchContainer is a runc container whose only process is the bigmem
// workload (built static), holding -mib MiB: the bench's measure of
// `ctcr checkpoint --leave-running`'s frozen time for a container
// (issue 11: at most 50 ms for 1 GiB).
type benchContainer struct {
	id, bundle string
}

// startBenchContainer builds the bundle in work and runs the container
// detached until its workload is ready. Without runc it returns nil and
// says so: the container row is left out.
func startBenchContainer(work string) (*benchContainer, error) {
	if _, err := exec.LookPath("runc"); err != nil {
		fmt.Fprintln(os.Stderr, "bench: no runc: the container row is left out")
		return nil, nil
	}
	c := &benchContainer{id: fmt.Sprintf("ctcr-bench-%d", os.Getpid()), bundle: filepath.Join(work, "container")}
	rootfs := filepath.Join(c.bundle, "rootfs")
	data := filepath.Join(c.bundle, "data")
	for _, d := range []string{rootfs, data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	bin := filepath.Join(rootfs, "bigmem")
	if out, err := exec.Command("gcc", "-O2", "-static", "-o", bin, *workloadFlag).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("gcc -static %s (for the container): %v\n%s", *workloadFlag, err, out)
	}
	if out, err := c.runc(30*time.Second, "spec"); err != nil {
		return nil, fmt.Errorf("runc spec: %v: %s", err, out)
	}
	if err := c.editSpec(data); err != nil {
		return nil, err
	}
	if out, err := c.runc(30*time.Second, "run", "-d", c.id); err != nil {
		c.delete()
		return nil, fmt.Errorf("runc run -d %s: %v: %s", c.id, err, out)
	}
	if err := harness.WaitFile(filepath.Join(data, "ready"), 2*time.Minute); err != nil {
		c.delete()
		return nil, fmt.Errorf("the container's workload: %w", err)
	}
	return c, nil
}

// editSpec makes the default spec run the workload with data as /data.
func (c *benchContainer) editSpec(data string) error {
	path := filepath.Join(c.bundle, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var spec map[string]any
	if err := json.Unmarshal(b, &spec); err != nil {
		return err
	}
	proc := spec["process"].(map[string]any)
	proc["terminal"] = false
	proc["args"] = []string{"/bigmem", "/data", strconv.Itoa(*mibFlag)}
	spec["root"].(map[string]any)["readonly"] = false
	spec["mounts"] = append(spec["mounts"].([]any), map[string]any{
		"destination": "/data", "type": "bind", "source": data, "options": []string{"rbind", "rw"},
	})
	if b, err = json.Marshal(spec); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// runc runs runc in the bundle, killed after timeout, and returns its
// output. The output goes through a file: the container's process,
// started by `run -d`, inherits runc's stdout and stderr and holds them
// open, so a pipe would never end.
func (c *benchContainer) runc(timeout time.Duration, args ...string) ([]byte, error) {
	out, err := os.CreateTemp(c.bundle, "runc-out-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	cmd := exec.Command("runc", args...)
	cmd.Dir = c.bundle
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	timer := time.AfterFunc(timeout, func() { cmd.Process.Kill() })
	err = cmd.Wait()
	timer.Stop()
	b, _ := os.ReadFile(out.Name())
	return b, err
}

// frozen checkpoints the container with --leave-running into img and
// returns the frozen time ctcr reports; the container must still run.
func (c *benchContainer) frozen(ctcr, img string) (float64, error) {
	defer os.RemoveAll(img)
	var st struct {
		FrozenSeconds float64 `json:"frozen_seconds"`
	}
	if err := ctcrJSON(ctcr, &st, "checkpoint", c.id, "--leave-running", "-D", img, "--json"); err != nil {
		return 0, err
	}
	out, err := c.runc(30*time.Second, "state", c.id)
	if err != nil || !strings.Contains(string(out), `"running"`) {
		return 0, fmt.Errorf("after ctcr checkpoint --leave-running, runc state %s: %v: %s", c.id, err, out)
	}
	return st.FrozenSeconds, nil
}

// delete removes the container, if it was made.
func (c *benchContainer) delete() {
	if c != nil {
		c.runc(30*time.Second, "delete", "-f", c.id)
	}
}
