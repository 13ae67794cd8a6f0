package proc

import (
	"io"
	"strconv"
	"strings"
)

// Fdinfo is /proc/PID/fdinfo/FD: the common header lines parsed, the
// file-type-specific lines kept for the code that owns that file type.
type Fdinfo struct {
	Pos   int64
	Flags uint32 // O_* as in the file's f_flags, printed in octal
	MntID int
	Ino   uint64 // 0 if the kernel does not print it (before 5.14)
	// Extra holds every other line, verbatim and in order
	// ("eventfd-count: 2a", "tfd: 5 events: ...", "inotify wd:1 ...",
	// "lock: ...").
	Extra []string
}

// ParseFdinfo parses the content of /proc/PID/fdinfo/FD.
func ParseFdinfo(r io.Reader) (*Fdinfo, error) {
	return parseFdinfo(r, "fdinfo")
}

// ReadFdinfo reads /proc/PID/fdinfo/FD. An fd closed since it was listed
// gives an error that satisfies errors.Is(err, os.ErrNotExist), as does a
// task that is gone.
func ReadFdinfo(pid, fd int) (*Fdinfo, error) {
	path := pidFile(pid, "fdinfo/"+strconv.Itoa(fd))
	t, err := readText(path, true)
	if err != nil {
		return nil, err
	}
	return parseFdinfo(t, path)
}

func parseFdinfo(r io.Reader, file string) (*Fdinfo, error) {
	fi := new(Fdinfo)
	var havePos, haveFlags, haveMnt bool
	l := newLines(r, file)
	for {
		line, ok := l.next()
		if !ok {
			break
		}
		key, val, _ := strings.Cut(line, ":")
		val = strings.TrimSpace(val)
		var err error
		switch key {
		case "pos":
			fi.Pos, err = strconv.ParseInt(val, 10, 64)
			havePos = true
		case "flags":
			var f uint64
			f, err = strconv.ParseUint(val, 8, 32)
			fi.Flags, haveFlags = uint32(f), true
		case "mnt_id":
			fi.MntID, err = strconv.Atoi(val)
			haveMnt = true
		case "ino":
			fi.Ino, err = strconv.ParseUint(val, 10, 64)
		default:
			fi.Extra = append(fi.Extra, line)
		}
		if err != nil {
			return nil, l.errorf("%s: %w", key, err)
		}
	}
	if err := l.err(); err != nil {
		return nil, err
	}
	switch {
	case !havePos:
		return nil, fileErr(file, "no pos: line")
	case !haveFlags:
		return nil, fileErr(file, "no flags: line")
	case !haveMnt:
		return nil, fileErr(file, "no mnt_id: line")
	}
	return fi, nil
}
