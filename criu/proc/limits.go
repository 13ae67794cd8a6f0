package proc

import (
	"io"
	"strconv"
	"strings"
)

// RlimInfinity is RLIM_INFINITY, printed as "unlimited".
const RlimInfinity = ^uint64(0)

// Rlimit is one resource limit, as struct rlimit64.
type Rlimit struct{ Soft, Hard uint64 }

// limitNames are the row names of /proc/PID/limits (lnames in
// fs/proc/base.c), indexed by RLIMIT_*.
var limitNames = [16]string{
	"Max cpu time",          // RLIMIT_CPU
	"Max file size",         // RLIMIT_FSIZE
	"Max data size",         // RLIMIT_DATA
	"Max stack size",        // RLIMIT_STACK
	"Max core file size",    // RLIMIT_CORE
	"Max resident set",      // RLIMIT_RSS
	"Max processes",         // RLIMIT_NPROC
	"Max open files",        // RLIMIT_NOFILE
	"Max locked memory",     // RLIMIT_MEMLOCK
	"Max address space",     // RLIMIT_AS
	"Max file locks",        // RLIMIT_LOCKS
	"Max pending signals",   // RLIMIT_SIGPENDING
	"Max msgqueue size",     // RLIMIT_MSGQUEUE
	"Max nice priority",     // RLIMIT_NICE
	"Max realtime priority", // RLIMIT_RTPRIO
	"Max realtime timeout",  // RLIMIT_RTTIME
}

// ParseLimits parses /proc/PID/limits ("unlimited" -> RlimInfinity) into
// the kernel's RLIMIT_* order (index 0 = RLIMIT_CPU ... 15 =
// RLIMIT_RTTIME), matching rows by their name column ("Max cpu time",
// ...). Every one of the 16 rows must be present; rows with other names,
// which a later kernel could add, are skipped.
func ParseLimits(r io.Reader) ([16]Rlimit, error) {
	return parseLimits(r, "limits")
}

// ReadLimits reads /proc/PID/limits. The kernel takes the values under
// the task's lock, so they are consistent; prlimit(2) would give the same
// values but needs permission to change them too.
func ReadLimits(pid int) ([16]Rlimit, error) {
	path := pidFile(pid, "limits")
	t, err := readText(path, true)
	if err != nil {
		return [16]Rlimit{}, err
	}
	return parseLimits(t, path)
}

func parseLimits(r io.Reader, file string) ([16]Rlimit, error) {
	var lims [16]Rlimit
	var seen [16]bool
	l := newLines(r, file)
	for {
		line, ok := l.next()
		if !ok {
			break
		}
		if l.n == 1 && strings.HasPrefix(line, "Limit ") {
			continue // the header
		}
		f := strings.Fields(line)
		// The name is every word before the first value; names hold no
		// digits, values are digits or "unlimited".
		i := 0
		for i < len(f) && !isLimitValue(f[i]) {
			i++
		}
		if i+2 > len(f) {
			return lims, l.errorf("want a name, a soft and a hard limit in %q", line)
		}
		name := strings.Join(f[:i], " ")
		idx := -1
		for j, n := range limitNames {
			if n == name {
				idx = j
				break
			}
		}
		if idx < 0 {
			continue
		}
		if seen[idx] {
			return lims, l.errorf("second %q row", name)
		}
		soft, err := parseLimitValue(f[i])
		if err != nil {
			return lims, l.errorf("%s soft limit: %w", name, err)
		}
		hard, err := parseLimitValue(f[i+1])
		if err != nil {
			return lims, l.errorf("%s hard limit: %w", name, err)
		}
		lims[idx], seen[idx] = Rlimit{Soft: soft, Hard: hard}, true
	}
	if err := l.err(); err != nil {
		return lims, err
	}
	for i, ok := range seen {
		if !ok {
			return lims, fileErr(file, "no %q row", limitNames[i])
		}
	}
	return lims, nil
}

func isLimitValue(s string) bool {
	return s == "unlimited" || s[0] >= '0' && s[0] <= '9'
}

func parseLimitValue(s string) (uint64, error) {
	if s == "unlimited" {
		return RlimInfinity, nil
	}
	return strconv.ParseUint(s, 10, 64)
}
