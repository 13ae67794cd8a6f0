package proc

import (
	"io"
	"strconv"
	"strings"
)

// Mount is one line of /proc/PID/mountinfo (proc(5)).
type Mount struct {
	ID, ParentID int
	Major, Minor uint32
	Root         string // path of the mount's root inside its file system
	MountPoint   string // as the reading task sees it
	Options      string // per-mount options: rw,nosuid,...
	Optional     []string
	FSType       string
	Source       string
	SuperOptions string
}

// ParseMountinfo parses /proc/PID/mountinfo. Paths are unescaped (the
// kernel writes space, tab, newline and backslash as \ooo).
func ParseMountinfo(r io.Reader) ([]Mount, error) {
	return parseMountinfo(r, "mountinfo")
}

// ReadMountinfo reads /proc/PID/mountinfo.
func ReadMountinfo(pid int) ([]Mount, error) {
	name := pidFile(pid, "mountinfo")
	t, err := readText(name, false)
	if err != nil {
		return nil, err
	}
	return parseMountinfo(t, name)
}

func parseMountinfo(r io.Reader, file string) ([]Mount, error) {
	l := newLines(r, file)
	var out []Mount
	for {
		line, ok := l.next()
		if !ok {
			break
		}
		f := strings.Fields(line)
		sep := -1
		for i, x := range f {
			if x == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if sep < 0 || len(f) < sep+3 {
			return nil, l.errorf("malformed mountinfo line")
		}
		var m Mount
		var err error
		if m.ID, err = strconv.Atoi(f[0]); err != nil {
			return nil, l.errorf("mount id %q", f[0])
		}
		if m.ParentID, err = strconv.Atoi(f[1]); err != nil {
			return nil, l.errorf("parent id %q", f[1])
		}
		mm := strings.SplitN(f[2], ":", 2)
		if len(mm) != 2 {
			return nil, l.errorf("device %q", f[2])
		}
		maj, err1 := strconv.ParseUint(mm[0], 10, 32)
		min, err2 := strconv.ParseUint(mm[1], 10, 32)
		if err1 != nil || err2 != nil {
			return nil, l.errorf("device %q", f[2])
		}
		m.Major, m.Minor = uint32(maj), uint32(min)
		m.Root = unescapeOctal(f[3])
		m.MountPoint = unescapeOctal(f[4])
		m.Options = f[5]
		m.Optional = append([]string(nil), f[6:sep]...)
		m.FSType = f[sep+1]
		m.Source = unescapeOctal(f[sep+2])
		if len(f) > sep+3 {
			m.SuperOptions = f[sep+3]
		}
		out = append(out, m)
	}
	return out, l.err()
}

// unescapeOctal undoes the kernel's \ooo escapes in mountinfo paths.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
