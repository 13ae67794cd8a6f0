package criu

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestGhostTempNameFitsNameMax: the temporary name of a ghost whose old
// name is as long as a name can be still is a valid name, and a short
// one keeps its old name whole.
func TestGhostTempNameFitsNameMax(t *testing.T) {
	long := strings.Repeat("n", unix.NAME_MAX)
	if got := ghostTempName(long, 0xffffffff, 99); len(got) > unix.NAME_MAX || !strings.HasPrefix(got, ".nnn") || !strings.Contains(got, ".ctcr-ghost-") {
		t.Errorf("the temporary name of a %d-byte name is %d bytes: %q", len(long), len(got), got)
	}
	if got := ghostTempName("gk-fifo", 1, 0); !strings.HasPrefix(got, ".gk-fifo.ctcr-ghost-") || !strings.HasSuffix(got, "-1-0") {
		t.Errorf("ghostTempName(gk-fifo, 1, 0) = %q", got)
	}
}
