package proc

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Mapping is one line of /proc/PID/maps.
type Mapping struct {
	Start, End                uint64
	Read, Write, Exec, Shared bool // perms "rwxs"/"rwxp"
	Offset                    uint64
	Major, Minor              uint32 // device, hex in the file
	Inode                     uint64
	// Path is "" for anonymous memory, the kernel's bracketed name
	// ("[heap]", "[stack]", "[vdso]", "[vvar]", "[vvar_vclock]",
	// "[vsyscall]", "[anon:name]", ...) or a file path without the
	// " (deleted)" suffix. It is as printed: the kernel writes a '\n' in a
	// file name as `\012` and does not escape '\\', so a path is not always
	// reversible; code that must open the file uses /proc/PID/map_files.
	Path string
	// Deleted says the path ended in " (deleted)". A live file whose name
	// really ends in " (deleted)" reads the same; only map_files tells them
	// apart.
	Deleted bool
}

const deletedSuffix = " (deleted)"

// ParseMaps parses the content of /proc/PID/maps.
func ParseMaps(r io.Reader) ([]Mapping, error) {
	return parseMaps(r, "maps")
}

// Maps reads /proc/PID/maps. A task whose mm is already gone (a zombie, or
// one that exited after the open) has an empty file, and Maps returns no
// mappings and no error.
func Maps(pid int) ([]Mapping, error) {
	path := pidFile(pid, "maps")
	t, err := readText(path, false)
	if err != nil {
		return nil, err
	}
	return parseMaps(t, path)
}

func parseMaps(r io.Reader, file string) ([]Mapping, error) {
	var ms []Mapping
	l := newLines(r, file)
	for {
		line, ok := l.next()
		if !ok {
			break
		}
		m, err := parseMapsLine(line)
		if err != nil {
			return nil, lineErr(file, l.n, "%w", err)
		}
		ms = append(ms, m)
	}
	if err := l.err(); err != nil {
		return nil, err
	}
	return ms, nil
}

// parseMapsLine parses one line, printed by show_map_vma as
// "%08lx-%08lx %c%c%c%c %08llx %02x:%02x %lu " followed by padding and
// the name.
func parseMapsLine(line string) (Mapping, error) {
	var m Mapping
	rng, rest, ok1 := strings.Cut(line, " ")
	perms, rest, ok2 := strings.Cut(rest, " ")
	off, rest, ok3 := strings.Cut(rest, " ")
	dev, rest, ok4 := strings.Cut(rest, " ")
	ino, rest, _ := strings.Cut(rest, " ")
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return m, errors.New("fewer than 5 fields")
	}

	lo, hi, ok := strings.Cut(rng, "-")
	if !ok {
		return m, fmt.Errorf("address range %q has no '-'", rng)
	}
	var err error
	if m.Start, err = strconv.ParseUint(lo, 16, 64); err != nil {
		return m, fmt.Errorf("start address: %w", err)
	}
	if m.End, err = strconv.ParseUint(hi, 16, 64); err != nil {
		return m, fmt.Errorf("end address: %w", err)
	}
	if m.Start >= m.End {
		return m, fmt.Errorf("empty or inverted range %s", rng)
	}

	if len(perms) != 4 {
		return m, fmt.Errorf("permissions %q are not 4 characters", perms)
	}
	for i, want := range "rwx" {
		switch perms[i] {
		case byte(want):
			switch i {
			case 0:
				m.Read = true
			case 1:
				m.Write = true
			case 2:
				m.Exec = true
			}
		case '-':
		default:
			return m, fmt.Errorf("permissions %q: bad character %q", perms, perms[i])
		}
	}
	switch perms[3] {
	case 's':
		m.Shared = true
	case 'p':
	default:
		return m, fmt.Errorf("permissions %q: want 's' or 'p' last", perms)
	}

	if m.Offset, err = strconv.ParseUint(off, 16, 64); err != nil {
		return m, fmt.Errorf("offset: %w", err)
	}
	maj, min, ok := strings.Cut(dev, ":")
	if !ok {
		return m, fmt.Errorf("device %q has no ':'", dev)
	}
	major, err := strconv.ParseUint(maj, 16, 32)
	if err != nil {
		return m, fmt.Errorf("device major: %w", err)
	}
	minor, err := strconv.ParseUint(min, 16, 32)
	if err != nil {
		return m, fmt.Errorf("device minor: %w", err)
	}
	m.Major, m.Minor = uint32(major), uint32(minor)
	if m.Inode, err = strconv.ParseUint(ino, 10, 64); err != nil {
		return m, fmt.Errorf("inode: %w", err)
	}

	// Every name the kernel prints starts with '/' or '[' (or is an
	// anon_inode: name), so the padding can be dropped, but trailing
	// spaces belong to the file name.
	path := strings.TrimLeft(rest, " ")
	if p, ok := strings.CutSuffix(path, deletedSuffix); ok {
		path, m.Deleted = p, true
	}
	m.Path = path
	return m, nil
}
