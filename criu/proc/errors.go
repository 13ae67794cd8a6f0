package proc

import (
	"fmt"
	"strconv"
)

// ParseError reports malformed content in a /proc file. Line is 1-based;
// it is 0 for binary files, where Offset says where the problem starts.
type ParseError struct {
	File   string // "/proc/123/maps", or the bare file name when parsing a reader
	Line   int
	Offset int64
	Err    error
}

func (e *ParseError) Error() string {
	switch {
	case e.Line > 0:
		return e.File + " line " + strconv.Itoa(e.Line) + ": " + e.Err.Error()
	case e.Offset > 0:
		return e.File + " offset " + strconv.FormatInt(e.Offset, 10) + ": " + e.Err.Error()
	}
	return e.File + ": " + e.Err.Error()
}

func (e *ParseError) Unwrap() error { return e.Err }

func lineErr(file string, line int, format string, args ...any) error {
	return &ParseError{File: file, Line: line, Err: fmt.Errorf(format, args...)}
}

func fileErr(file string, format string, args ...any) error {
	return &ParseError{File: file, Err: fmt.Errorf(format, args...)}
}
