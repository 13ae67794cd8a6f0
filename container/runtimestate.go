package container

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// A container is often restored after its runtime's record of it is
// gone: checkpointed with the OCI hook or --leave-running, then
// `runc delete`d (the usual order when a container moves or is
// replaced). Restored without a record it would run unseen: runc list,
// exec, kill and delete would not know it and its cgroups would outlive
// it. So a checkpoint keeps a copy of the runtime's state directory
// (runc: state.json; crun: status and config.json) in DIR/runtime/, and
// a restore that finds the record gone writes it back, as runc's own
// restore writes a new state.json, pointed at the new init.

// runtimeStateDir is where a bundle keeps the copy.
const runtimeStateDir = "runtime"

// runtimeStateMax bounds one file of a runtime's state directory: runc's
// state.json holds the whole config, but no more.
const runtimeStateMax = 8 << 20

// saveRuntimeState copies the regular files of runc's or crun's state
// directory of c into dir/runtime (mode 0600, as the runtimes keep them).
func saveRuntimeState(dir string, c *Container) error {
	if (c.Runtime != "runc" && c.Runtime != "crun") || c.StateDir == "" {
		return nil
	}
	ents, err := os.ReadDir(c.StateDir)
	if err != nil {
		return fmt.Errorf("%s state of container %s: %w", c.Runtime, c.ID, err)
	}
	out := filepath.Join(dir, runtimeStateDir)
	if err := os.Mkdir(out, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s state of container %s: %w", c.Runtime, c.ID, err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue // runc's exec.fifo, crun's sockets: they belong to a live runtime
		}
		b, err := readCapped(filepath.Join(c.StateDir, e.Name()), runtimeStateMax)
		if err != nil {
			return fmt.Errorf("%s state of container %s: %w", c.Runtime, c.ID, err)
		}
		if err := writeFileAtomicMode(filepath.Join(out, e.Name()), b, 0o600); err != nil {
			return fmt.Errorf("%s state of container %s: %w", c.Runtime, c.ID, err)
		}
	}
	return nil
}

func readCapped(path string, max int64) ([]byte, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > max {
		return nil, fmt.Errorf("%s: not a regular file of at most %d bytes", path, max)
	}
	return os.ReadFile(path)
}

// recordFile is the file of a runtime's state directory that says the
// container exists.
func recordFile(runtime string) string {
	if runtime == "crun" {
		return "status"
	}
	return "state.json"
}

// recreateRuntimeState writes the runtime's state directory of restored
// container m back from the copy in bundle dir, if it is gone, and
// reports whether it did. The caller then points it at the new init.
func recreateRuntimeState(dir string, m *Meta) (bool, error) {
	if (m.Runtime != "runc" && m.Runtime != "crun") || m.StateDir == "" {
		return false, nil
	}
	if _, err := os.Stat(filepath.Join(m.StateDir, recordFile(m.Runtime))); err == nil {
		return false, nil
	}
	saved := filepath.Join(dir, runtimeStateDir)
	ents, err := os.ReadDir(saved)
	if err != nil {
		return false, fmt.Errorf("%s's record of container %s is gone and the checkpoint keeps no copy (%s): %w", m.Runtime, m.ID, saved, err)
	}
	// The runtimes make their state directories 0711 (runc) or 0700
	// (crun); only root reads them.
	if err := os.MkdirAll(filepath.Dir(m.StateDir), 0o700); err != nil {
		return false, err
	}
	if err := os.Mkdir(m.StateDir, 0o711); err != nil && !errors.Is(err, fs.ErrExist) {
		return false, fmt.Errorf("recreate %s: %w", m.StateDir, err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := readCapped(filepath.Join(saved, e.Name()), runtimeStateMax)
		if err != nil {
			return false, err
		}
		if err := writeFileAtomicMode(filepath.Join(m.StateDir, e.Name()), b, 0o600); err != nil {
			return false, fmt.Errorf("recreate %s: %w", m.StateDir, err)
		}
	}
	return true, nil
}
