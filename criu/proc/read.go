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
)

func pidFile(pid int, name string) string {
	return "/proc/" + strconv.Itoa(pid) + "/" + name
}

func taskFile(pid, tid int, name string) string {
	return "/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/" + name
}

// readFile reads a whole /proc file. The *os.PathError it returns already
// names the file and wraps the errno, so ENOENT (the task is gone before
// open) and ESRCH (it exited between open and read) stay visible to
// errors.Is; it is returned as is.
func readFile(path string) ([]byte, error) {
	return os.ReadFile(path)
}

// maxLine bounds one line of a text /proc file. The longest legitimate
// line is the Groups: line of status, up to NGROUPS_MAX (65536) ids of up
// to 11 bytes each; anything longer is not a /proc file.
const maxLine = 1 << 20

// lines iterates over the '\n'-separated lines of a text /proc file,
// counting them for error messages.
type lines struct {
	s    *bufio.Scanner
	file string
	n    int
}

func newLines(r io.Reader, file string) *lines {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 4096), maxLine)
	// Only '\n' ends a line: bufio.ScanLines would also drop a '\r' that
	// the kernel printed as part of a file name in maps.
	s.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			return i + 1, data[:i], nil
		}
		if atEOF && len(data) > 0 {
			return len(data), data, nil
		}
		return 0, nil, nil
	})
	return &lines{s: s, file: file}
}

func (l *lines) next() (string, bool) {
	if !l.s.Scan() {
		return "", false
	}
	l.n++
	return l.s.Text(), true
}

// err returns the read error that stopped next, if any, naming the line
// that could not be read.
func (l *lines) err() error {
	if err := l.s.Err(); err != nil {
		return &ParseError{File: l.file, Line: l.n + 1, Err: fmt.Errorf("reading: %w", err)}
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
