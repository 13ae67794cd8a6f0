package criu

import (
	"math"
	"testing"

	"golang.org/x/sys/unix"
)

// systemd's clock-change timer, restored at now + the ~7e9 s left
// until KTIME_MAX, stays valid: nanoseconds would wrap.
func TestAddTimespecSaturating(t *testing.T) {
	now := unix.Timespec{Sec: 1_765_000_000, Nsec: 900_000_000}
	left := unix.Timespec{Sec: 7_458_000_000, Nsec: 200_000_000}
	got := addTimespecSaturating(now, left)
	if got != (unix.Timespec{Sec: 9_223_000_001, Nsec: 100_000_000}) {
		t.Errorf("now + left = %+v", got)
	}
	if got := addTimespecSaturating(now, unix.Timespec{Sec: math.MaxInt64 - 10}); got.Sec != math.MaxInt64 || got.Nsec != 0 {
		t.Errorf("now + TIME_T_MAX-10 = %+v, want TIME_T_MAX", got)
	}
}
