package proc

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// Status holds the fields of /proc/PID/task/TID/status that a dump needs.
type Status struct {
	Name     string // unescaped: equal to Stat.Comm
	State    byte
	Umask    uint32
	HasUmask bool // false for a zombie or kernel thread, which have no fs_struct

	Tgid, Pid, PPid, TracerPid int
	Uid, Gid                   [4]uint32 // real, effective, saved, fs
	Groups                     []uint32
	// NSpid and the others list the id in each PID namespace, from the
	// reader's namespace (first) down to the task's own (last).
	NSpid, NStgid, NSpgid, NSsid []int
	Threads                      int

	SigPnd, ShdPnd, SigBlk, SigIgn, SigCgt uint64
	CapInh, CapPrm, CapEff, CapBnd, CapAmb uint64
	NoNewPrivs                             bool
	Seccomp                                int // SECCOMP_MODE_*: 0 none, 1 strict, 2 filter
}

// ParseStatus parses the content of /proc/PID/status or
// /proc/PID/task/TID/status.
func ParseStatus(r io.Reader) (*Status, error) {
	return parseStatus(r, "status")
}

// ReadStatus reads /proc/PID/task/TID/status.
func ReadStatus(pid, tid int) (*Status, error) {
	path := taskFile(pid, tid, "status")
	b, err := readSingle(path)
	if err != nil {
		return nil, err
	}
	return parseStatusText(string(b), path)
}

// statusRequired lists the keys every kernel ctcr supports prints for
// every task, zombies included; a status without them is truncated or not
// a status file. Umask, the NS* lines (CONFIG_PID_NS), Seccomp
// (CONFIG_SECCOMP) and NoNewPrivs may be absent.
var statusRequired = []string{
	"Name", "State", "Tgid", "Pid", "PPid", "TracerPid", "Uid", "Gid",
	"Groups", "Threads", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt",
	"CapInh", "CapPrm", "CapEff", "CapBnd",
}

// maxStatus bounds a status file: its longest line, Groups:, is under
// maxLine.
const maxStatus = 2 * maxLine

func parseStatus(r io.Reader, file string) (*Status, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxStatus+1))
	if err != nil {
		return nil, &ParseError{File: file, Err: fmt.Errorf("reading: %w", err)}
	}
	if len(b) > maxStatus {
		return nil, fileErr(file, "longer than %d bytes", maxStatus)
	}
	return parseStatusText(string(b), file)
}

// parseStatusText parses a whole status file held in text. It cuts the
// lines out of text itself and marks the required keys in a bit set: a
// bufio.Scanner, a string per line and a map of the keys seen were most
// of what a dump allocated per thread of a process of 1,000 threads,
// each page of it a fault on a VM where faults are dear.
func parseStatusText(text, file string) (*Status, error) {
	s := new(Status)
	var seen uint64 // bit i: statusRequired[i] was seen
	for n := 1; text != ""; n++ {
		line := text
		if i := strings.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i], text[i+1:]
		} else {
			text = ""
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			return nil, lineErr(file, n, "no ':' in %q", line)
		}
		val = strings.TrimPrefix(val, "\t")
		if key != "Name" {
			val = strings.TrimSpace(val)
		}
		if err := s.set(key, val); err != nil {
			return nil, lineErr(file, n, "%s: %w", key, err)
		}
		if k := slices.Index(statusRequired, key); k >= 0 {
			seen |= 1 << k
		}
	}
	for k, name := range statusRequired {
		if seen&(1<<k) == 0 {
			return nil, fileErr(file, "no %s: line", name)
		}
	}
	return s, nil
}

func (s *Status) set(key, val string) error {
	var err error
	switch key {
	case "Name":
		s.Name = unescapeComm(val)
	case "State":
		// "R (running)"
		if val == "" {
			return fmt.Errorf("empty")
		}
		s.State = val[0]
	case "Umask":
		u, err := strconv.ParseUint(val, 8, 32)
		if err != nil {
			return err
		}
		s.Umask, s.HasUmask = uint32(u), true
	case "Tgid":
		s.Tgid, err = strconv.Atoi(val)
	case "Pid":
		s.Pid, err = strconv.Atoi(val)
	case "PPid":
		s.PPid, err = strconv.Atoi(val)
	case "TracerPid":
		s.TracerPid, err = strconv.Atoi(val)
	case "Uid":
		err = parseIDs4(val, &s.Uid)
	case "Gid":
		err = parseIDs4(val, &s.Gid)
	case "Groups":
		s.Groups, err = parseGroups(val)
	case "NSpid":
		s.NSpid, err = parseInts(val)
	case "NStgid":
		s.NStgid, err = parseInts(val)
	case "NSpgid":
		s.NSpgid, err = parseInts(val)
	case "NSsid":
		s.NSsid, err = parseInts(val)
	case "Threads":
		s.Threads, err = strconv.Atoi(val)
	case "SigPnd":
		s.SigPnd, err = strconv.ParseUint(val, 16, 64)
	case "ShdPnd":
		s.ShdPnd, err = strconv.ParseUint(val, 16, 64)
	case "SigBlk":
		s.SigBlk, err = strconv.ParseUint(val, 16, 64)
	case "SigIgn":
		s.SigIgn, err = strconv.ParseUint(val, 16, 64)
	case "SigCgt":
		s.SigCgt, err = strconv.ParseUint(val, 16, 64)
	case "CapInh":
		s.CapInh, err = strconv.ParseUint(val, 16, 64)
	case "CapPrm":
		s.CapPrm, err = strconv.ParseUint(val, 16, 64)
	case "CapEff":
		s.CapEff, err = strconv.ParseUint(val, 16, 64)
	case "CapBnd":
		s.CapBnd, err = strconv.ParseUint(val, 16, 64)
	case "CapAmb":
		s.CapAmb, err = strconv.ParseUint(val, 16, 64)
	case "NoNewPrivs":
		switch val {
		case "0":
			s.NoNewPrivs = false
		case "1":
			s.NoNewPrivs = true
		default:
			return fmt.Errorf("want 0 or 1, got %q", val)
		}
	case "Seccomp":
		s.Seccomp, err = strconv.Atoi(val)
	}
	return err
}

// unescapeComm undoes proc_task_name's escaping, which turns only '\n'
// and '\\' into `\n` and `\\` (seq_escape_str with "\n\\"); every other
// byte, tabs and control characters included, is printed raw.
func unescapeComm(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			switch s[i+1] {
			case 'n':
				b.WriteByte('\n')
				i++
				continue
			case '\\':
				b.WriteByte('\\')
				i++
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func parseIDs4(val string, ids *[4]uint32) error {
	f := strings.Fields(val)
	if len(f) != 4 {
		return fmt.Errorf("want 4 ids, got %d", len(f))
	}
	for i, s := range f {
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return err
		}
		ids[i] = uint32(v)
	}
	return nil
}

func parseGroups(val string) ([]uint32, error) {
	f := strings.Fields(val)
	if len(f) == 0 {
		return nil, nil
	}
	gs := make([]uint32, len(f))
	for i, s := range f {
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return nil, err
		}
		gs[i] = uint32(v)
	}
	return gs, nil
}

func parseInts(val string) ([]int, error) {
	f := strings.Fields(val)
	if len(f) == 0 {
		return nil, fmt.Errorf("empty")
	}
	ns := make([]int, len(f))
	for i, s := range f {
		v, err := strconv.Atoi(s)
		if err != nil {
			return nil, err
		}
		ns[i] = v
	}
	return ns, nil
}
