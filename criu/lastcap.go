package criu

import (
	"os"
	"strconv"
	"strings"
	"sync"
)

// lastCap is the highest capability this kernel knows.
var lastCap = sync.OnceValue(func() uint64 {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 40
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 40
	}
	return n
})
