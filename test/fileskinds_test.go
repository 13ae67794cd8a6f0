package test

import (
	"testing"
	"time"
)

// The file kinds of issue 10 that are not regular-file paths: each test
// dumps one workload holding one kind of fd, restores it, and lets the
// workload check the fd itself.

// TestOPathFds dumps O_PATH fds on a file, a directory and (with
// O_NOFOLLOW) a symlink: they have no SIGIO owner to read, and the
// symlink's fd names the link itself.
func TestOPathFds(t *testing.T) {
	t.Run("O_PATH fds on a file, a directory and a symlink come back as O_PATH fds on the same inodes", func(t *testing.T) {
		dumpRestoreWorkload(t, "opath")
	})
	t.Run("the opath workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "opath").checkPasses(30*time.Second, "opath")
	})
}
