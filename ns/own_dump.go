package ns

import "github.com/ctcr/ctcr/criu/images"

// DumpOwn saves the namespaces of the tree at pid that are its own (not
// ctcr's): mounts, UTS, IPC and POSIX queues, network unless skipNet.
func DumpOwn(pid int, stage *images.Staging, own map[string]bool, skipNet bool) error {
	if own["mnt"] {
		if err := DumpMounts(pid, stage); err != nil {
			return err
		}
	}
	if own["uts"] {
		if err := DumpUTS(pid, stage); err != nil {
			return err
		}
	}
	if own["ipc"] {
		if err := DumpIPC(pid, stage); err != nil {
			return err
		}
		if err := DumpMqueues(pid, stage); err != nil {
			return err
		}
	}
	if own["net"] && !skipNet {
		if err := DumpNet(pid, stage); err != nil {
			return err
		}
	}
	return nil
}
