package criu

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/timens"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
)

// A tree in a time namespace of its own sees CLOCK_MONOTONIC and
// CLOCK_BOOTTIME shifted by the namespace's offsets. The dump writes the
// two clocks as the tree saw them at that moment, in CRIU's image:
//
//	timens-2.img: TimensEntry{monotonic, boottime}
//
// and restore makes a new time namespace whose offsets continue both
// clocks from there, as CRIU does: to the tree no time passed while it
// was checkpointed. The puppet unshares it for its children and ctcr
// writes its offsets before the root, its first member, is cloned into
// it (the kernel takes offsets only before anyone enters).

// dumpTimens reads task pid's clocks as its time namespace shows them:
// ctcr's plus the namespace's offsets (/proc/PID/timens_offsets).
func dumpTimens(pid int) (*timens.TimensEntry, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/timens_offsets", pid))
	if err != nil {
		return nil, fmt.Errorf("task %d: %w", pid, err)
	}
	offs := map[string]int64{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("task %d: timens_offsets line %q", pid, line)
		}
		sec, err1 := strconv.ParseInt(f[1], 10, 64)
		nsec, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("task %d: timens_offsets line %q", pid, line)
		}
		offs[f[0]] = sec*1e9 + nsec
	}
	now := func(clock int32, off int64) (*timens.Timespec, error) {
		var ts unix.Timespec
		if err := unix.ClockGettime(clock, &ts); err != nil {
			return nil, err
		}
		v := ts.Nano() + off
		return &timens.Timespec{TvSec: proto.Uint64(uint64(v / 1e9)), TvNsec: proto.Uint64(uint64(v % 1e9))}, nil
	}
	e := &timens.TimensEntry{}
	if e.Monotonic, err = now(unix.CLOCK_MONOTONIC, offs["monotonic"]); err != nil {
		return nil, err
	}
	if e.Boottime, err = now(unix.CLOCK_BOOTTIME, offs["boottime"]); err != nil {
		return nil, err
	}
	return e, nil
}

// prepareTimens makes the puppet's children start in a new time
// namespace whose clocks continue from those of the image in dir.
func prepareTimens(pp *puppet, dir string) error {
	e := &timens.TimensEntry{}
	name := images.Timens.FileName(nsOwn)
	if err := images.ReadOne(filepath.Join(dir, name), images.Timens, e); err != nil {
		return err
	}
	if _, err := pp.ctl.call(unix.SYS_UNSHARE, unix.CLONE_NEWTIME); err != nil {
		return fmt.Errorf("a new time namespace: %w", err)
	}
	var b strings.Builder
	for _, c := range []struct {
		name  string
		clock int32
		ts    *timens.Timespec
	}{{"monotonic", unix.CLOCK_MONOTONIC, e.GetMonotonic()}, {"boottime", unix.CLOCK_BOOTTIME, e.GetBoottime()}} {
		if c.ts == nil || c.ts.GetTvNsec() >= 1e9 || c.ts.GetTvSec() > 1<<40 {
			return corruptf(name, "%s %v", c.name, c.ts)
		}
		var now unix.Timespec
		if err := unix.ClockGettime(c.clock, &now); err != nil {
			return err
		}
		off := int64(c.ts.GetTvSec())*1e9 + int64(c.ts.GetTvNsec()) - now.Nano()
		sec, nsec := off/1e9, off%1e9
		if nsec < 0 {
			sec, nsec = sec-1, nsec+1e9
		}
		fmt.Fprintf(&b, "%s %d %d\n", c.name, sec, nsec)
	}
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/timens_offsets", pp.pid), []byte(b.String()), 0); err != nil {
		return fmt.Errorf("time namespace offsets %q: %w", b.String(), err)
	}
	return nil
}
