package criu

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/eventfd"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/signalfd"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/timerfd"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// Event fds: eventfd, signalfd and timerfd. Each is an anonymous inode
// whose whole state the kernel prints in /proc/PID/fdinfo; like CRIU
// (criu/eventfd.c, signalfd.c, timerfd.c) ctcr keeps it in the file's
// entry of files.img and recreates the file in ctcr at restore.

var eventfdFiles = fileKind{
	name:   "eventfd",
	fdType: fdinfo.FdTypes_EVENTFD,
	dump:   dumpEventfd,
	open:   openEventfd,
}

var signalfdFiles = fileKind{
	name:   "signalfd",
	fdType: fdinfo.FdTypes_SIGNALFD,
	dump:   dumpSignalfd,
	open:   openSignalfd,
}

var timerfdFiles = fileKind{
	name:   "timerfd",
	fdType: fdinfo.FdTypes_TIMERFD,
	dump:   dumpTimerfd,
	open:   openTimerfd,
}

// efdSemaphore marks an EFD_SEMAPHORE eventfd in the entry's flags. The
// kernel keeps the mode out of f_flags (an eventfd is always O_RDWR), so
// its bit, O_WRONLY, is free there; CRIU restores flags with F_SETFL,
// which ignores the access mode, so the mark is harmless to it.
const efdSemaphore = unix.EFD_SEMAPHORE

// zeroFown is the owner entry of a file without F_SETOWN.
func zeroFown() *fown.FownEntry {
	return &fown.FownEntry{Uid: proto.Uint32(0), Euid: proto.Uint32(0), Signum: proto.Uint32(0), PidType: proto.Uint32(0), Pid: proto.Uint32(0)}
}

// fdinfoField returns the value of the "key:" line among the fdinfo
// lines a kind reads (proc.Fdinfo.Extra), trimmed.
func fdinfoField(extra []string, key string) (string, bool) {
	for _, l := range extra {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// fdinfoNum parses the "key:" line as a number in base (0: with prefix).
func (d *fdDump) fdinfoNum(key string, base int) (uint64, error) {
	v, ok := fdinfoField(d.info.Extra, key)
	if !ok {
		return 0, fmt.Errorf("%s (%s): fdinfo has no %q line", d.where, d.link, key)
	}
	n, err := strconv.ParseUint(v, base, 64)
	if err != nil {
		return 0, fmt.Errorf("%s (%s): fdinfo %s %q: %w", d.where, d.link, key, v, err)
	}
	return n, nil
}

// isAnon reports whether d is the anonymous inode name: the kernel links
// most as "anon_inode:[eventfd]", inotify as "anon_inode:inotify".
func isAnon(d *fdDump, name string) bool {
	return d.link == "anon_inode:["+name+"]" || d.link == "anon_inode:"+name
}

// setFileFlags gives f the status flags of the dumped file that F_SETFL
// can set (O_NONBLOCK, O_APPEND, O_ASYNC, ...).
func setFileFlags(f *os.File, flags uint32) error {
	const settable = unix.O_APPEND | unix.O_NONBLOCK | unix.O_ASYNC | unix.O_DIRECT | unix.O_NOATIME
	if flags&settable == 0 {
		return nil
	}
	cur, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	_, err = unix.FcntlInt(f.Fd(), unix.F_SETFL, (cur&^settable)|int(flags&settable))
	return err
}

// newFd wraps a fresh fd, setting the dumped file's status flags.
func newFd(fd int, name string, flags uint32) (*os.File, error) {
	f := os.NewFile(uintptr(fd), name)
	if err := setFileFlags(f, flags); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: set flags %#o: %w", name, flags, err)
	}
	return f, nil
}

func dumpEventfd(d *fdDump) (*fdinfo.FileEntry, error) {
	if !isAnon(d, "eventfd") {
		return nil, nil
	}
	count, err := d.fdinfoNum("eventfd-count", 16)
	if err != nil {
		return nil, err
	}
	flags := d.flags
	if v, ok := fdinfoField(d.info.Extra, "eventfd-semaphore"); ok && v == "1" {
		flags |= efdSemaphore
	}
	id := d.files.nextID()
	return &fdinfo.FileEntry{Id: proto.Uint32(id), Efd: &eventfd.EventfdFileEntry{
		Id: proto.Uint32(id), Flags: proto.Uint32(flags), Fown: zeroFown(), Counter: proto.Uint64(count),
	}}, nil
}

func openEventfd(r *fileRestore, e *fdinfo.FileEntry) (*os.File, error) {
	efd := e.GetEfd()
	if efd == nil {
		return nil, corruptf("files.img", "eventfd id %d without its entry", e.GetId())
	}
	flags := unix.EFD_CLOEXEC
	if efd.GetFlags()&efdSemaphore != 0 {
		flags |= unix.EFD_SEMAPHORE
	}
	fd, err := unix.Eventfd(0, flags)
	if err != nil {
		return nil, fmt.Errorf("eventfd id %d: %w", e.GetId(), err)
	}
	f, err := newFd(fd, "eventfd", efd.GetFlags()&^efdSemaphore)
	if err != nil {
		return nil, err
	}
	// eventfd2 takes a 32-bit initial value; a write adds all 64 bits.
	if c := efd.GetCounter(); c != 0 {
		if c == ^uint64(0) {
			f.Close()
			return nil, corruptf("files.img", "eventfd id %d: count %#x", e.GetId(), c)
		}
		var b [8]byte
		binary.NativeEndian.PutUint64(b[:], c)
		if _, err := unix.Write(fd, b[:]); err != nil {
			f.Close()
			return nil, fmt.Errorf("eventfd id %d: set count %d: %w", e.GetId(), c, err)
		}
	}
	return f, nil
}

func dumpSignalfd(d *fdDump) (*fdinfo.FileEntry, error) {
	if !isAnon(d, "signalfd") {
		return nil, nil
	}
	mask, err := d.fdinfoNum("sigmask", 16)
	if err != nil {
		return nil, err
	}
	id := d.files.nextID()
	return &fdinfo.FileEntry{Id: proto.Uint32(id), Sgfd: &signalfd.SignalfdEntry{
		Id: proto.Uint32(id), Flags: proto.Uint32(d.flags), Fown: zeroFown(), Sigmask: proto.Uint64(mask),
	}}, nil
}

func openSignalfd(r *fileRestore, e *fdinfo.FileEntry) (*os.File, error) {
	sg := e.GetSgfd()
	if sg == nil {
		return nil, corruptf("files.img", "signalfd id %d without its entry", e.GetId())
	}
	mask := unix.Sigset_t{Val: [16]uint64{sg.GetSigmask()}}
	fd, err := unix.Signalfd(-1, &mask, unix.SFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("signalfd id %d (mask %#x): %w", e.GetId(), sg.GetSigmask(), err)
	}
	return newFd(fd, "signalfd", sg.GetFlags())
}

// parseTimespecPair parses the "(sec, nsec)" of a timerfd fdinfo line.
func parseTimespecPair(v string) (sec, nsec uint64, err error) {
	v = strings.TrimSpace(v)
	if !strings.HasPrefix(v, "(") || !strings.HasSuffix(v, ")") {
		return 0, 0, fmt.Errorf("not (sec, nsec): %q", v)
	}
	a, b, ok := strings.Cut(v[1:len(v)-1], ",")
	if !ok {
		return 0, 0, fmt.Errorf("not (sec, nsec): %q", v)
	}
	if sec, err = strconv.ParseUint(strings.TrimSpace(a), 10, 64); err != nil {
		return 0, 0, err
	}
	if nsec, err = strconv.ParseUint(strings.TrimSpace(b), 10, 64); err != nil {
		return 0, 0, err
	}
	return sec, nsec, nil
}

// dumpTimerfd records the clock, the settime flags, the interval and
// the time left to the next expiry (the kernel prints it relative even
// for a TFD_TIMER_ABSTIME timer), and the expirations not yet read.
func dumpTimerfd(d *fdDump) (*fdinfo.FileEntry, error) {
	if !isAnon(d, "timerfd") {
		return nil, nil
	}
	clock, err := d.fdinfoNum("clockid", 10)
	if err != nil {
		return nil, err
	}
	ticks, err := d.fdinfoNum("ticks", 10)
	if err != nil {
		return nil, err
	}
	stFlags, err := d.fdinfoNum("settime flags", 8)
	if err != nil {
		return nil, err
	}
	var vals [2][2]uint64
	for i, key := range []string{"it_value", "it_interval"} {
		v, ok := fdinfoField(d.info.Extra, key)
		if !ok {
			return nil, fmt.Errorf("%s (%s): fdinfo has no %q line", d.where, d.link, key)
		}
		if vals[i][0], vals[i][1], err = parseTimespecPair(v); err != nil {
			return nil, fmt.Errorf("%s (%s): fdinfo %s: %w", d.where, d.link, key, err)
		}
	}
	id := d.files.nextID()
	return &fdinfo.FileEntry{Id: proto.Uint32(id), Tfd: &timerfd.TimerfdEntry{
		Id: proto.Uint32(id), Flags: proto.Uint32(d.flags), Fown: zeroFown(),
		Clockid: proto.Uint32(uint32(clock)), Ticks: proto.Uint64(ticks), SettimeFlags: proto.Uint32(uint32(stFlags)),
		Vsec: proto.Uint64(vals[0][0]), Vnsec: proto.Uint64(vals[0][1]), Isec: proto.Uint64(vals[1][0]), Insec: proto.Uint64(vals[1][1]),
	}}, nil
}

// addTimespecSaturating returns a+b (both valid and not negative),
// with seconds that stay at the largest time_t instead of wrapping: the
// kernel takes any such value and caps the timer at KTIME_MAX. systemd
// watches for clock changes with an absolute CLOCK_REALTIME timer set
// to TIME_T_MAX, which fdinfo shows as some 7e9 s left: now + that, in
// nanoseconds, wraps below zero (EINVAL).
func addTimespecSaturating(a, b unix.Timespec) unix.Timespec {
	sec, nsec := a.Sec+b.Sec, a.Nsec+b.Nsec
	if nsec >= 1e9 {
		sec, nsec = sec+1, nsec-1e9
	}
	if sec < a.Sec || sec < b.Sec {
		return unix.Timespec{Sec: math.MaxInt64}
	}
	return unix.Timespec{Sec: sec, Nsec: nsec}
}

// tfdIocSetTicks is TFD_IOC_SET_TICKS (include/uapi/linux/timerfd.h):
// _IOW('T', 0, __u64). Kernels without CONFIG_CHECKPOINT_RESTORE answer
// ENOTTY.
const tfdIocSetTicks = 0x40085400

// openTimerfd arms a new timer with the time that was left at dump, as
// CRIU does: a relative timer fires that long after restore, and an
// absolute one (TFD_TIMER_ABSTIME) is given now + the time left, so that
// it keeps the same distance to its expiry on the restored clock.
func openTimerfd(r *fileRestore, e *fdinfo.FileEntry) (*os.File, error) {
	t := e.GetTfd()
	if t == nil {
		return nil, corruptf("files.img", "timerfd id %d without its entry", e.GetId())
	}
	if t.GetVnsec() >= 1e9 || t.GetInsec() >= 1e9 || t.GetVsec() > 1<<62 || t.GetIsec() > 1<<62 {
		return nil, corruptf("files.img", "timerfd id %d: time out of range", e.GetId())
	}
	clock := int(t.GetClockid())
	fd, err := unix.TimerfdCreate(clock, unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("timerfd id %d: clock %d: %w", e.GetId(), clock, err)
	}
	f, err := newFd(fd, "timerfd", t.GetFlags())
	if err != nil {
		return nil, err
	}
	spec := unix.ItimerSpec{
		Value:    unix.Timespec{Sec: int64(t.GetVsec()), Nsec: int64(t.GetVnsec())},
		Interval: unix.Timespec{Sec: int64(t.GetIsec()), Nsec: int64(t.GetInsec())},
	}
	flags := int(t.GetSettimeFlags())
	if spec.Value == (unix.Timespec{}) && spec.Interval != (unix.Timespec{}) && t.GetTicks() != 0 {
		// A periodic timer that expired and was not read since: the
		// kernel re-arms it only in read(2) (fs/timerfd.c
		// timerfd_read), so fdinfo shows it_value 0, and settime with
		// 0 would switch it off. Its next expiry is at most one
		// interval away: arm it for one interval, and give the unread
		// expirations back with TFD_IOC_SET_TICKS below (settime
		// zeroes them: timerfd_setup).
		spec.Value = spec.Interval
	}
	if spec.Value != (unix.Timespec{}) && flags&unix.TFD_TIMER_ABSTIME != 0 {
		var now unix.Timespec
		if err := unix.ClockGettime(int32(clock), &now); err != nil {
			f.Close()
			return nil, fmt.Errorf("timerfd id %d: clock %d: %w", e.GetId(), clock, err)
		}
		spec.Value = addTimespecSaturating(now, spec.Value)
	}
	if err := unix.TimerfdSettime(fd, flags, &spec, nil); err != nil {
		f.Close()
		return nil, fmt.Errorf("timerfd id %d: settime: %w", e.GetId(), err)
	}
	if ticks := t.GetTicks(); ticks != 0 {
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), tfdIocSetTicks, uintptr(unsafe.Pointer(&ticks))); errno != 0 {
			f.Close()
			return nil, fmt.Errorf("timerfd id %d: %d unread expirations (TFD_IOC_SET_TICKS): %w", e.GetId(), ticks, errno)
		}
	}
	return f, nil
}
