package proc

import (
	"bytes"
	"io"
	"strconv"
	"strings"
)

// ParsePersonality parses /proc/PID/personality, the persona as "%08x".
func ParsePersonality(r io.Reader) (uint32, error) {
	return parsePersonality(r, "personality")
}

// ReadPersonality reads /proc/PID/personality. The file needs
// PTRACE_MODE_ATTACH, so reading another user's task fails with EACCES.
func ReadPersonality(pid int) (uint32, error) {
	path := pidFile(pid, "personality")
	b, err := readSingle(path)
	if err != nil {
		return 0, err
	}
	return parsePersonality(bytes.NewReader(b), path)
}

func parsePersonality(r io.Reader, file string) (uint32, error) {
	b, err := io.ReadAll(io.LimitReader(r, 64))
	if err != nil {
		return 0, &ParseError{File: file, Err: err}
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 16, 32)
	if err != nil {
		return 0, fileErr(file, "%w", err)
	}
	return uint32(v), nil
}
