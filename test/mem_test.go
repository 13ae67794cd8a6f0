package test

import (
	"testing"
	"time"
)

// Memory states of issue 10, one workload each: each sets up its
// mappings, is dumped and restored, and checks them itself.

// TestUnreadableMappings dumps mappings whose protection forbids reading
// (PROT_NONE, write-only, exec-only, a guard page): their pages must be
// read all the same and come back with the protection they had.
func TestUnreadableMappings(t *testing.T) {
	t.Run("PROT_NONE, write-only and exec-only mappings keep their content and protection", func(t *testing.T) {
		dumpRestoreWorkload(t, "memprot")
	})
	t.Run("the memprot workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "memprot").checkPasses(30*time.Second, "memprot")
	})
}

// TestMadviseAndDevZero dumps a mapping per madvise flag smaps shows and
// a private mapping of /dev/zero: each flag, and the /dev/zero name, must
// be there after restore, and WIPEONFORK/DONTFORK must still act on fork.
func TestMadviseAndDevZero(t *testing.T) {
	t.Run("madvise flags and a private /dev/zero mapping are kept", func(t *testing.T) {
		dumpRestoreWorkload(t, "madvise")
	})
	t.Run("the madvise workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "madvise").checkPasses(30*time.Second, "madvise")
	})
}

// TestExecRestoredMemfd executes a restored memfd holding busybox through
// the fd memfd_create gave and a read-only one: no writer ctcr or the
// restore made may make execveat fail with ETXTBSY.
func TestExecRestoredMemfd(t *testing.T) {
	t.Run("a restored memfd can be executed through its fds", func(t *testing.T) {
		dumpRestoreWorkload(t, "memfdexec")
	})
	t.Run("the memfdexec workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "memfdexec").checkPasses(30*time.Second, "memfdexec")
	})
}

// TestMprotectRestoredSharedFileMapping dumps read-only MAP_SHARED
// mappings of a file opened O_RDWR and of one opened O_RDONLY: after
// restore mprotect(PROT_WRITE) must work on the first, as before the
// dump, and still be refused on the second.
func TestMprotectRestoredSharedFileMapping(t *testing.T) {
	t.Run("a shared file mapping keeps the rights its file was opened with", func(t *testing.T) {
		dumpRestoreWorkload(t, "mapshrw")
	})
	t.Run("the mapshrw workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "mapshrw").checkPasses(30*time.Second, "mapshrw")
	})
}
