package proc

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// PosixTimer is one timer of /proc/PID/timers (timer_create).
type PosixTimer struct {
	ID     int32
	Signo  int
	Value  uint64 // sigev_value, as a pointer
	Notify string // "signal", "none" or "thread"
	// ToThread: the signal goes to thread Target (SIGEV_THREAD_ID),
	// else to process Target; ids as the reader's PID namespace sees them.
	ToThread bool
	Target   int
	Clock    int
}

// ParseTimers parses the content of /proc/PID/timers: per timer the
// lines "ID: n", "signal: signo/value", "notify: kind/pid.n" or
// "kind/tid.n", "ClockID: n".
func ParseTimers(r io.Reader) ([]PosixTimer, error) { return parseTimers(r, "timers") }

// ReadTimers reads /proc/PID/timers.
func ReadTimers(pid int) ([]PosixTimer, error) {
	path := pidFile(pid, "timers")
	b, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return parseTimers(bytes.NewReader(b), path)
}

func parseTimers(r io.Reader, file string) ([]PosixTimer, error) {
	var out []PosixTimer
	sc := bufio.NewScanner(io.LimitReader(r, 16<<20))
	line := 0
	bad := func(format string, args ...any) error {
		return &ParseError{File: file, Line: line, Err: fmt.Errorf(format, args...)}
	}
	for sc.Scan() {
		line++
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			return nil, bad("no key in %q", sc.Text())
		}
		v = strings.TrimSpace(v)
		if k == "ID" {
			id, err := strconv.ParseInt(v, 10, 32)
			if err != nil {
				return nil, bad("ID %q", v)
			}
			out = append(out, PosixTimer{ID: int32(id)})
			continue
		}
		if len(out) == 0 {
			return nil, bad("%s before any ID", k)
		}
		t := &out[len(out)-1]
		switch k {
		case "signal":
			signo, value, ok := strings.Cut(v, "/")
			n, err := strconv.Atoi(signo)
			val, err2 := strconv.ParseUint(value, 16, 64)
			if !ok || err != nil || err2 != nil || n < 0 || n > 64 {
				return nil, bad("signal %q", v)
			}
			t.Signo, t.Value = n, val
		case "notify":
			kind, target, ok := strings.Cut(v, "/")
			who, id, ok2 := strings.Cut(target, ".")
			n, err := strconv.Atoi(id)
			if !ok || !ok2 || err != nil || (who != "pid" && who != "tid") || (kind != "signal" && kind != "none" && kind != "thread") {
				return nil, bad("notify %q", v)
			}
			t.Notify, t.ToThread, t.Target = kind, who == "tid", n
		case "ClockID":
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, bad("ClockID %q", v)
			}
			t.Clock = n
		}
	}
	if err := sc.Err(); err != nil {
		return nil, &ParseError{File: file, Err: err}
	}
	return out, nil
}
