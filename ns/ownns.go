package ns

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ctcr/ctcr/criu/images"
)

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

// RestoreOwn makes again, around the restored root (sc, host PID pid),
// the namespaces DumpOwn saved in imgDir but the network: mounts (each
// source the runtime gives now in extSources), UTS names, SysV IPC
// objects and POSIX queues, each only if its images are there. It runs
// before the root forks, so that every task finds them.
func RestoreOwn(sc Syscaller, pid int, imgDir string, logf func(string, ...any), extSources ...map[string]string) error {
	exists := func(name string) bool {
		_, err := os.Stat(filepath.Join(imgDir, name))
		return err == nil
	}
	if exists(images.Mnts.FileName(1)) {
		if err := RestoreMounts(sc, pid, imgDir, logf, extSources...); err != nil {
			return fmt.Errorf("mounts: %w", err)
		}
	}
	if exists(images.Utsns.FileName(1)) {
		if err := RestoreUTS(sc, imgDir); err != nil {
			return err
		}
	}
	if exists(images.IpcShm.FileName(1)) || exists(images.IpcSem.FileName(1)) || exists(images.IpcMsg.FileName(1)) {
		if err := RestoreIPC(pid, imgDir); err != nil {
			return err
		}
	}
	// Before any task opens its queue descriptors.
	if exists(PosixMqFile) {
		if err := RestoreMqueues(pid, imgDir); err != nil {
			return err
		}
	}
	return nil
}
