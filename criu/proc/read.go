package proc

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

func pidFile(pid int, name string) string {
	return "/proc/" + strconv.Itoa(pid) + "/" + name
}

func taskFile(pid, tid int, name string) string {
	return "/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/" + name
}

// ReadFile reads a whole /proc file that the kernel renders in one go
// (see readSingle), for the engine's own reads of /proc files it has no
// parser for (oom_score_adj, loginuid, attr/current, syscall,
// timerslack_ns): three system calls where os.ReadFile makes nine.
func ReadFile(path string) ([]byte, error) { return readSingle(path) }

// openRead opens path read-only, retrying EINTR, with the error
// os.Open would give.
func openRead(path string, flags int) (int, error) {
	for {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|flags, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return fd, nil
	}
}

// readBufs holds the buffers readFile reads into: a dump reads some 25
// /proc files per task, each read until a read returns 0, and a buffer
// that starts at 4 KiB and doubles took up to 9 reads and as many
// allocations for one smaps.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// readFile reads a whole /proc file. The *os.PathError it returns names
// the file and wraps the errno, so ENOENT (the task is gone before open)
// and ESRCH (it exited between open and read) stay visible to errors.Is.
//
// It uses the system calls directly: os.ReadFile also stats the file and
// tries to add it to the poller (four fcntl and an epoll_ctl that fails),
// nine calls where three do, some 45 times per task of a dump. It reads
// into a pooled 64 KiB buffer, so that a file that fits takes one read
// besides the one that returns 0, and returns a copy of just the bytes.
func readFile(path string) ([]byte, error) { return readWhole(path, false) }

// readSingle reads a whole /proc file that the kernel renders in one go:
// a seq file of one record (single_open: stat, status, fdinfo, limits,
// personality, auxv, syscall, timerslack_ns) or one read from a buffer
// (simple_read_from_buffer: oom_score_adj, loginuid, attr/current). A
// read of such a file copies all there is when the buffer has room for
// it, so a read that leaves room is the last: the read that would
// return 0 is not made, one system call less per file, some 15 per task
// of a dump. A file of many records (maps, smaps, timers, children)
// comes a page or so per read and must be read with readFile.
func readSingle(path string) ([]byte, error) { return readWhole(path, true) }

func readWhole(path string, single bool) ([]byte, error) {
	var out []byte
	err := readInto(path, single, func(b []byte) { out = bytes.Clone(b) })
	return out, err
}

// readText is readWhole for a text file that a parser splits into
// lines: one copy, as a string, which the lines' strings share (see
// lines).
func readText(path string, single bool) (*text, error) {
	var out string
	err := readInto(path, single, func(b []byte) { out = string(b) })
	return &text{s: out}, err
}

// readInto reads the file at path into a pooled buffer and passes its
// content to keep, which must copy what it keeps.
func readInto(path string, single bool, keep func([]byte)) error {
	fd, err := openRead(path, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	buf := (*bp)[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			break
		}
		buf = buf[:len(buf)+n]
		if single && len(buf) < cap(buf) {
			break
		}
	}
	keep(buf)
	if cap(buf) <= 1<<20 {
		*bp = buf[:cap(buf)] // keep a grown buffer, up to a bound
	}
	return nil
}

// maxLine bounds one line of a text /proc file. The longest legitimate
// line is the Groups: line of status, up to NGROUPS_MAX (65536) ids of up
// to 11 bytes each; anything longer is not a /proc file.
const maxLine = 1 << 20

// text is a /proc file already read (readText): newLines splits it
// without copying it again. It is an io.Reader so that the parsers keep
// taking one (their fuzz tests give them others).
type text struct {
	s   string
	off int
}

func (t *text) Read(p []byte) (int, error) {
	if t.off >= len(t.s) {
		return 0, io.EOF
	}
	n := copy(p, t.s[t.off:])
	t.off += n
	return n, nil
}

// lines iterates over the '\n'-separated lines of a text /proc file,
// counting them for error messages. The file is held as one string and
// each line is a piece of it: no allocation per line (a dump parses
// some 60 lines of maps, status, fdinfo and limits per task).
type lines struct {
	rest string // the lines not returned yet
	file string
	n    int
	rerr error // what stopped reading the file, reported by err once its lines are taken
}

func newLines(r io.Reader, file string) *lines {
	if t, ok := r.(*text); ok {
		return &lines{rest: t.s[t.off:], file: file}
	}
	b, err := io.ReadAll(r)
	if err != nil {
		// Only whole lines are taken from a file that could not be read
		// to its end.
		b = b[:bytes.LastIndexByte(b, '\n')+1]
	}
	return &lines{rest: string(b), file: file, rerr: err}
}

// next returns the next line without its '\n' (only '\n' ends a line: a
// '\r' is part of a file name in maps), and false at the end of the
// file, or at a line longer than maxLine, which err then reports.
func (l *lines) next() (string, bool) {
	if l.rest == "" || l.rerr == bufio.ErrTooLong {
		return "", false
	}
	line, rest, _ := strings.Cut(l.rest, "\n")
	if len(line) >= maxLine {
		l.rerr = bufio.ErrTooLong
		return "", false
	}
	l.rest = rest
	l.n++
	return line, true
}

// err returns the read error that stopped next, if any, naming the line
// that could not be read.
func (l *lines) err() error {
	if l.rerr != nil {
		return &ParseError{File: l.file, Line: l.n + 1, Err: fmt.Errorf("reading: %w", l.rerr)}
	}
	return nil
}

func (l *lines) errorf(format string, args ...any) error {
	return lineErr(l.file, l.n, format, args...)
}

// Children lists the children of thread tid of process pid, from
// /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN), sorted ascending.
func Children(pid, tid int) ([]int, error) {
	b, err := readFile(taskFile(pid, tid, "children"))
	if err != nil {
		return nil, err
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fileErr(taskFile(pid, tid, "children"), "bad pid %q", f)
		}
		out = append(out, n)
	}
	sort.Ints(out)
	return out, nil
}
