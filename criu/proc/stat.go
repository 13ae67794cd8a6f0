package proc

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Stat holds the fields of /proc/PID/task/TID/stat that a dump needs,
// numbered as in proc(5).
type Stat struct {
	Pid                        int    // (1)
	Comm                       string // (2) raw task->comm, without the parentheses
	State                      byte   // (3)
	PPid, Pgrp, Session, TtyNr int    // (4)-(7)
	Tpgid                      int    // (8) foreground process group of the tty, -1 if none
	Flags                      uint32 // (9) PF_*
	Nice                       int    // (19)
	NumThreads                 int    // (20)
	StartTime                  uint64 // (22) clock ticks after boot
	ExitSignal, Processor      int    // (38), (39); ExitSignal is -1 for a non-leader thread
	RTPriority, Policy         uint32 // (40), (41)
	// The mm addresses read 0 unless the reader may ptrace the task.
	StartCode, EndCode, StartStack uint64 // (26)-(28)
	StartData, EndData, StartBrk   uint64 // (45)-(47)
	ArgStart, ArgEnd               uint64 // (48), (49)
	EnvStart, EnvEnd               uint64 // (50), (51)
	ExitCode                       int    // (52) wait status of a zombie, as in waitpid
}

// statFields is the number of fields since Linux 3.5 added exit_code;
// newer kernels may append more, which are ignored.
const statFields = 52

// maxStat bounds the stat file: 52 numbers of at most 20 digits and a comm
// of at most 64 bytes stay well under it.
const maxStat = 4096

// ParseStat parses the content of /proc/PID/stat or
// /proc/PID/task/TID/stat.
func ParseStat(r io.Reader) (*Stat, error) {
	return parseStat(r, "stat")
}

// ReadStat reads /proc/PID/task/TID/stat.
func ReadStat(pid, tid int) (*Stat, error) {
	path := taskFile(pid, tid, "stat")
	b, err := readSingle(path)
	if err != nil {
		return nil, err
	}
	return parseStat(bytes.NewReader(b), path)
}

func parseStat(r io.Reader, file string) (*Stat, error) {
	// The file is one line, except that comm is printed raw and may hold
	// a '\n', so it is read whole rather than line by line.
	b, err := io.ReadAll(io.LimitReader(r, maxStat+1))
	if err != nil {
		return nil, &ParseError{File: file, Err: fmt.Errorf("reading: %w", err)}
	}
	if len(b) > maxStat {
		return nil, fileErr(file, "longer than %d bytes", maxStat)
	}
	s := string(b)
	// comm may hold ')' too; the last ')' in the file is the one that
	// closes it, because no later field can contain one.
	open := strings.IndexByte(s, '(')
	end := strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return nil, fileErr(file, "no (comm) in %.40q", s)
	}
	st := new(Stat)
	if st.Pid, err = strconv.Atoi(strings.TrimSuffix(s[:open], " ")); err != nil {
		return nil, fileErr(file, "pid: %w", err)
	}
	st.Comm = s[open+1 : end]

	// fields[0] is field (3), state.
	fields := strings.Fields(s[end+1:])
	if len(fields)+2 < statFields {
		return nil, fileErr(file, "%d fields, want at least %d", len(fields)+2, statFields)
	}
	if len(fields[0]) != 1 {
		return nil, fileErr(file, "state %q is not one character", fields[0])
	}
	st.State = fields[0][0]

	p := statParser{fields: fields}
	st.PPid = p.int(4)
	st.Pgrp = p.int(5)
	st.Session = p.int(6)
	st.TtyNr = p.int(7)
	st.Tpgid = p.int(8)
	st.Flags = uint32(p.uint(9, 32))
	st.Nice = p.int(19)
	st.NumThreads = p.int(20)
	st.StartTime = p.uint(22, 64)
	st.StartCode = p.uint(26, 64)
	st.EndCode = p.uint(27, 64)
	st.StartStack = p.uint(28, 64)
	st.ExitSignal = p.int(38)
	st.Processor = p.int(39)
	st.RTPriority = uint32(p.uint(40, 32))
	st.Policy = uint32(p.uint(41, 32))
	st.StartData = p.uint(45, 64)
	st.EndData = p.uint(46, 64)
	st.StartBrk = p.uint(47, 64)
	st.ArgStart = p.uint(48, 64)
	st.ArgEnd = p.uint(49, 64)
	st.EnvStart = p.uint(50, 64)
	st.EnvEnd = p.uint(51, 64)
	st.ExitCode = p.int(52)
	if p.err != nil {
		return nil, &ParseError{File: file, Err: p.err}
	}
	return st, nil
}

// statParser converts fields by their proc(5) number and keeps the first
// error, so parseStat reads as a list of assignments.
type statParser struct {
	fields []string // fields[0] is field (3)
	err    error
}

func (p *statParser) field(n int) string { return p.fields[n-3] }

func (p *statParser) int(n int) int {
	v, err := strconv.Atoi(p.field(n))
	p.fail(n, err)
	return v
}

func (p *statParser) uint(n, bits int) uint64 {
	v, err := strconv.ParseUint(p.field(n), 10, bits)
	p.fail(n, err)
	return v
}

func (p *statParser) fail(n int, err error) {
	if err != nil && p.err == nil {
		p.err = fmt.Errorf("field %d: %w", n, err)
	}
}
