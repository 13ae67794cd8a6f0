package proc

import (
	"bufio"
	"bytes"
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
	var out map[uint64][]string
	var perr error
	// Parsed in the read buffer: of smaps' some 25 lines per mapping
	// (18 KiB for a small process) only the VmFlags are kept.
	err := readInto(path, false, func(b []byte) { out, perr = parseVmFlagsBytes(b, path) })
	if err != nil {
		return nil, err
	}
	return out, perr
}

func parseVmFlags(r io.Reader, file string) (map[uint64][]string, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, &ParseError{File: file, Err: fmt.Errorf("reading: %w", err)}
	}
	return parseVmFlagsBytes(b, file)
}

// parseVmFlagsBytes takes, of each mapping's lines, the first (its
// address) and VmFlags; the others are "Name:   value".
func parseVmFlagsBytes(b []byte, file string) (map[uint64][]string, error) {
	out := map[uint64][]string{}
	var start uint64
	have := false
	for n := 1; len(b) > 0; n++ {
		t, rest, _ := bytes.Cut(b, []byte{'\n'})
		b = rest
		if len(t) >= maxLine {
			return nil, &ParseError{File: file, Line: n, Err: fmt.Errorf("reading: %w", bufio.ErrTooLong)}
		}
		if flags, ok := bytes.CutPrefix(t, []byte("VmFlags:")); ok {
			if !have {
				return nil, lineErr(file, n, "VmFlags before any mapping")
			}
			out[start] = strings.Fields(string(flags))
			continue
		}
		if sp := bytes.IndexByte(t, ' '); sp > 0 && t[sp-1] != ':' {
			if lo, _, ok := bytes.Cut(t[:sp], []byte{'-'}); ok {
				if v, ok := parseHex(lo); ok {
					start, have = v, true
				}
			}
		}
	}
	return out, nil
}

// parseHex parses b, 1 to 16 hex digits, without a string.
func parseHex(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 16 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		v = v<<4 | uint64(c)
	}
	return v, true
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
