package criurpc

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ParseSize reads a byte count with an optional K, M or G suffix (k, m, g
// too; powers of 1024), as CRIU's --ghost-limit takes it.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	shift := 0
	if t != "" {
		switch t[len(t)-1] {
		case 'k', 'K':
			shift = 10
		case 'm', 'M':
			shift = 20
		case 'g', 'G':
			shift = 30
		}
		if shift != 0 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseUint(t, 10, 63)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size (bytes, or a number with K, M or G)", s)
	}
	if n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("%q is too large a size", s)
	}
	return int64(n) << shift, nil
}
