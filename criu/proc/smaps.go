package proc

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ParseVmFlags parses /proc/PID/smaps into the VmFlags of each mapping,
// by start address: two-letter names ("dc" MADV_DONTFORK, "wf"
// MADV_WIPEONFORK, "lo" mlock'ed, ...).
func ParseVmFlags(r io.Reader) (map[uint64][]string, error) { return parseVmFlags(r, "smaps") }

// ReadVmFlags reads /proc/PID/smaps for the VmFlags of its mappings.
func ReadVmFlags(pid int) (map[uint64][]string, error) {
	path := pidFile(pid, "smaps")
	t, err := readText(path, false)
	if err != nil {
		return nil, err
	}
	return parseVmFlags(t, path)
}

// parseVmFlags takes, of the some 25 lines smaps has per mapping, the
// first (its address) and VmFlags.
func parseVmFlags(r io.Reader, file string) (map[uint64][]string, error) {
	out := map[uint64][]string{}
	l := newLines(r, file)
	var start uint64
	have := false
	for {
		t, ok := l.next()
		if !ok {
			break
		}
		if rest, ok := strings.CutPrefix(t, "VmFlags:"); ok {
			if !have {
				return nil, l.errorf("VmFlags before any mapping")
			}
			out[start] = strings.Fields(rest)
			continue
		}
		// A mapping's first line: "start-end perms ..."; the others are
		// "Name:   value".
		if sp := strings.IndexByte(t, ' '); sp > 0 && t[sp-1] != ':' {
			if lo, _, ok := strings.Cut(t[:sp], "-"); ok {
				if v, err := strconv.ParseUint(lo, 16, 64); err == nil {
					start, have = v, true
				}
			}
		}
	}
	if err := l.err(); err != nil {
		return nil, err
	}
	return out, nil
}

// LockedBytes returns the memory of task pid locked in its mappings
// (VmLck of /proc/PID/status, which the kernel keeps as a counter: no
// page-table walk, unlike smaps). A fork clears VM_LOCKED in the child,
// so a snapshot child's smaps cannot tell which mappings are locked: a
// dump that reads VmFlags from one needs this to be 0.
func LockedBytes(pid int) (uint64, error) {
	path := pidFile(pid, "status")
	b, err := readFile(path)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(l, "VmLck:")
		if !ok {
			continue
		}
		kb, ok := strings.CutSuffix(strings.TrimSpace(rest), " kB")
		n, err := strconv.ParseUint(strings.TrimSpace(kb), 10, 64)
		if !ok || err != nil {
			return 0, &ParseError{File: path, Err: fmt.Errorf("VmLck %q is not a size in kB", rest)}
		}
		return n << 10, nil
	}
	// A task without an mm (a zombie, a kernel thread) has no Vm* lines.
	return 0, nil
}
