package ptrace

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Remote executes system calls inside a stopped task: it loads the
// arguments into the task's registers, points the instruction pointer at
// a syscall instruction in the task's memory and single-steps over it.
// The kernel reports the single-step trap right after the syscall
// returns, before the next instruction is fetched, so the instruction
// after it never runs (which is what lets the last call unmap the page
// the instruction is in).
//
// Preconditions: all methods run on the tracer thread (inside Tracer.Do)
// while the task is in a ptrace stop.
type Remote struct {
	Tid int
	// IP is the address of a syscall instruction (0f 05) in the task.
	IP uint64
	// Base is the register set each call starts from; its stack pointer
	// stays valid for the task.
	Base Regs
	// Stolen collects signals the task dequeued while running calls:
	// they were suppressed and belong in the image (or queued again).
	Stolen []Siginfo
	// Events collects the PTRACE_GETEVENTMSG values of event stops
	// (PTRACE_EVENT_CLONE: the new task's id) met during the last call.
	Events []uint
	// Own, when set, keeps the thread its own between calls (a thread
	// being dumped, which must run on if ctcr dies at any instant).
	// Nil for the puppets of a restore, which die with ctcr anyway.
	Own *OwnState
	// NoTrap makes a puppet's (Own == nil) lone calls stop at syscall
	// stops instead of being single-stepped, so they force no SIGTRAP
	// on the task: a restore sets it before queueing a SIGTRAP that was
	// pending at the dump. Needs PTRACE_O_TRACESYSGOOD.
	NoTrap bool
}

// OwnState is what a dumped thread needs so that ctcr may vanish at any
// instant without harming it.
//
// Between two calls the thread holds its own registers (Remote.Base) and
// its own signal mask (Mask), and sits in an interrupt stop or in a
// signal-delivery-stop that ctcr has already waited for: when a tracer
// dies the kernel detaches its tracees and a waited stop has no signal
// left to deliver (wait4 zeroes exit_code), so the thread simply runs on.
//
// During a call it runs ctcr's code, and it must come back by itself if
// ctcr dies meanwhile:
//   - code run with RunCode ends by raising Sig at itself (tgkill with
//     TgkillArgs), which stops it at Stop while it is traced, then
//     executes rt_sigreturn through a frame holding its own registers,
//     mask and FPU state. Sig is one the thread ignores (or, failing
//     that, SIGURG, which runtimes such as Go's must tolerate unasked),
//     so once untraced the signal is dropped and the frame returns it to
//     itself; a breakpoint (int3) there would kill it with SIGTRAP.
//   - a lone call (Syscall) runs from a syscall instruction of the
//     vDSO to its syscall-exit stop, where the thread gets its own
//     registers back. It is used only to map and unmap the area the
//     runner lives in (and, in a pre-copy, to have the task make a
//     userfaultfd). With LoneSP set, a thread whose tracer dies
//     meanwhile comes back to itself too: IP is a syscall instruction
//     followed only by xors of registers and a ret, and the call runs
//     with rsp at LoneSP, where ctcr has put the address of an
//     rt_sigreturn sequence of the task's own code followed by a
//     signal frame of the thread's registers, mask and FPU state. So
//     the syscall returns through the ret into rt_sigreturn, as a
//     signal handler would. Without LoneSP (no such instructions, no
//     room for the frame) a tracer dying then leaves the thread in
//     ctcr's registers.
type OwnState struct {
	Mask       uint64      // the thread's own blocked signals
	Sig        unix.Signal // the signal RunCode's code raises to stop
	TgkillArgs [2]uint64   // the thread's process and thread id in its own PID namespace
	Stop       uint64      // the address at which that signal stops it
	FrameSP    uint64      // rsp for the closing rt_sigreturn (its frame + 8)
	LoneSP     uint64      // rsp for lone calls: the sigreturn address, then a frame (0: none)
}

// siTkill is SI_TKILL (include/uapi/asm-generic/siginfo.h), the si_code
// of a signal sent with tgkill.
const siTkill = -6

// Code returns si_code.
func (si *Siginfo) Code() int {
	return int(int32(uint32(si[8]) | uint32(si[9])<<8 | uint32(si[10])<<16 | uint32(si[11])<<24))
}

// Syscall runs syscall nr with up to six arguments in the task and
// returns its result. A negative result in the errno range is returned
// as a syscall.Errno wrapped with the call's name.
func (r *Remote) Syscall(nr uintptr, args ...uint64) (uint64, error) {
	regs := r.Base
	regs.Rip = r.IP
	regs.Rax = uint64(nr)
	// orig_rax = -1 tells the kernel's signal code that the task is not
	// inside a syscall, so it never applies -ERESTART* handling to our
	// registers.
	regs.Orig_rax = ^uint64(0)
	var a [6]uint64
	copy(a[:], args)
	regs.Rdi, regs.Rsi, regs.Rdx, regs.R10, regs.R8, regs.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	if r.Own != nil && r.Own.LoneSP != 0 {
		regs.Rsp = r.Own.LoneSP
	}
	if err := SetRegs(r.Tid, &regs); err != nil {
		return 0, err
	}
	if r.Own == nil {
		if r.NoTrap {
			return r.syscallStops(nr)
		}
		return r.step(nr, &regs)
	}
	// Registers first, mask second: whichever of the two a dying ctcr
	// left, the thread is no worse off than with the call's registers.
	if err := SetSigmask(r.Tid, ^uint64(0)); err != nil {
		return 0, err
	}
	testKillInLone(r.Tid, "regs")
	ret, err := r.syscallStops(nr)
	testKillInLone(r.Tid, "exit")
	if gerr := r.giveBack(); gerr != nil && (err == nil || errors.Is(gerr, ErrExited)) {
		return ret, gerr
	}
	return ret, err
}

// syscallStops runs the syscall the registers hold from the syscall
// instruction at IP to its syscall-exit stop, for a thread being
// dumped. Unlike a single step it makes the kernel queue no SIGTRAP: a
// forced SIGTRAP resets the task's own SIGTRAP handler to SIG_DFL when
// the signal is blocked or ignored (force_sig_info_to_task), and a trap
// flag left set kills a task whose tracer died. A syscall stop
// (PTRACE_O_TRACESYSGOOD: SIGTRAP|0x80) delivers nothing when the task
// is let go, and the kernel restarts the task's own interrupted syscall
// from there once its registers are back.
//
// Preconditions: the task was seized with PTRACE_O_TRACESYSGOOD.
func (r *Remote) syscallStops(nr uintptr) (uint64, error) {
	r.Events = r.Events[:0]
	for stops := 0; stops < 2; {
		if err := ptrace(unix.PTRACE_SYSCALL, r.Tid, 0, 0); err != nil {
			return 0, os.NewSyscallError(fmt.Sprintf("ptrace(SYSCALL) of task %d", r.Tid), err)
		}
		st, err := Wait(r.Tid)
		if err != nil {
			return 0, fmt.Errorf("remote %s in task %d: %w", SyscallName(nr), r.Tid, err)
		}
		switch {
		case st.Exited():
			return 0, fmt.Errorf("task %d %v during remote %s: %w", r.Tid, st, SyscallName(nr), ErrExited)
		case st.Status.Stopped() && st.Status.StopSignal() == unix.SIGTRAP|0x80:
			stops++ // entry, then exit
			if stops == 1 && r.Own != nil {
				testKillInLone(r.Tid, "entry")
			}
		case st.Event() != 0:
			msg, err := EventMsg(r.Tid)
			if err != nil {
				return 0, err
			}
			r.Events = append(r.Events, msg)
		case st.Status.Stopped():
			// A signal-delivery-stop: with every signal blocked, only a
			// SIGSTOP. Keep anything else for the task.
			si, err := GetSiginfo(r.Tid)
			if err != nil {
				return 0, err
			}
			if si.Signo() != int(unix.SIGSTOP) {
				r.Stolen = append(r.Stolen, si)
			}
		}
	}
	out, err := GetRegs(r.Tid)
	if err != nil {
		return 0, err
	}
	if out.Rip != r.IP+2 {
		return 0, fmt.Errorf("task %d: remote %s stopped at %#x, want %#x", r.Tid, SyscallName(nr), out.Rip, r.IP+2)
	}
	ret := out.Rax
	if int64(ret) < 0 && int64(ret) > -4096 {
		return ret, fmt.Errorf("remote %s in task %d: %w", SyscallName(nr), r.Tid, syscall.Errno(-int64(ret)))
	}
	return ret, nil
}

// step single-steps over the syscall instruction with regs loaded.
func (r *Remote) step(nr uintptr, regs *Regs) (uint64, error) {
	r.Events = r.Events[:0]
	for {
		if err := SingleStep(r.Tid); err != nil {
			return 0, err
		}
		st, err := Wait(r.Tid)
		if err != nil {
			return 0, fmt.Errorf("remote %s in task %d: %w", SyscallName(nr), r.Tid, err)
		}
		switch {
		case st.Exited():
			return 0, fmt.Errorf("task %d %v during remote %s: %w", r.Tid, st, SyscallName(nr), ErrExited)
		case st.Event() != 0:
			msg, err := EventMsg(r.Tid)
			if err != nil {
				return 0, err
			}
			r.Events = append(r.Events, msg)
			// The syscall is still in progress; step on to its end.
			continue
		case st.SignalDelivery():
			// A signal arrived before the syscall instruction ran.
			// Keep it and step again without delivering it.
			si, err := GetSiginfo(r.Tid)
			if err != nil {
				return 0, err
			}
			if si.Signo() != int(unix.SIGSTOP) {
				r.Stolen = append(r.Stolen, si)
			}
			if err := SetRegs(r.Tid, regs); err != nil {
				return 0, err
			}
			continue
		}
		out, err := GetRegs(r.Tid)
		if err != nil {
			return 0, err
		}
		if out.Rip != r.IP+2 {
			// A SIGTRAP that is not our single-step (someone sent
			// SIGTRAP): keep it as a signal and step again.
			if out.Rip == r.IP {
				si, err := GetSiginfo(r.Tid)
				if err != nil {
					return 0, err
				}
				r.Stolen = append(r.Stolen, si)
				continue
			}
			return 0, fmt.Errorf("task %d: remote %s stopped at %#x, want %#x", r.Tid, SyscallName(nr), out.Rip, r.IP+2)
		}
		ret := out.Rax
		if int64(ret) < 0 && int64(ret) > -4096 {
			return ret, fmt.Errorf("remote %s in task %d: %w", SyscallName(nr), r.Tid, syscall.Errno(-int64(ret)))
		}
		return ret, nil
	}
}

// Restore puts the task's registers back to Base.
func (r *Remote) Restore() error { return SetRegs(r.Tid, &r.Base) }

// giveBack puts the thread's own mask and registers back after a call,
// in that order (see Syscall).
func (r *Remote) giveBack() error {
	if err := SetSigmask(r.Tid, r.Own.Mask); err != nil {
		return err
	}
	return SetRegs(r.Tid, &r.Base)
}

// Mem is a task's memory, read and written through /proc/PID/mem, which
// (unlike process_vm_writev) can write to pages the task cannot write,
// such as its read-only text.
type Mem struct {
	f   *os.File
	pid int
}

// OpenMem opens /proc/pid/mem for reading and writing.
func OpenMem(pid int) (*Mem, error) {
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", pid), os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return &Mem{f: f, pid: pid}, nil
}

// WriteAt writes b at addr in the task.
func (m *Mem) WriteAt(b []byte, addr uint64) error {
	n, err := m.f.WriteAt(b, int64(addr))
	if err != nil {
		return fmt.Errorf("write %d bytes at %#x in task %d: %w", len(b), addr, m.pid, err)
	}
	if n != len(b) {
		return fmt.Errorf("write %d bytes at %#x in task %d: short write of %d", len(b), addr, m.pid, n)
	}
	return nil
}

// ReadAt reads len(b) bytes at addr in the task.
func (m *Mem) ReadAt(b []byte, addr uint64) error {
	n, err := m.f.ReadAt(b, int64(addr))
	if err != nil {
		return fmt.Errorf("read %d bytes at %#x in task %d: %w", len(b), addr, m.pid, err)
	}
	if n != len(b) {
		return fmt.Errorf("read %d bytes at %#x in task %d: short read of %d", len(b), addr, m.pid, n)
	}
	return nil
}

// Close closes the memory file.
func (m *Mem) Close() error { return m.f.Close() }

// SyscallName names the x86-64 syscalls ctcr runs remotely, for messages.
func SyscallName(nr uintptr) string {
	if s, ok := syscallNames[nr]; ok {
		return s
	}
	return fmt.Sprintf("syscall %d", nr)
}

var syscallNames = map[uintptr]string{
	unix.SYS_MMAP: "mmap", unix.SYS_MUNMAP: "munmap", unix.SYS_MPROTECT: "mprotect",
	unix.SYS_MREMAP: "mremap", unix.SYS_BRK: "brk", unix.SYS_RT_SIGACTION: "rt_sigaction",
	unix.SYS_RT_SIGPROCMASK: "rt_sigprocmask", unix.SYS_GETITIMER: "getitimer",
	unix.SYS_SETITIMER: "setitimer", unix.SYS_SIGALTSTACK: "sigaltstack", unix.SYS_PRCTL: "prctl",
	unix.SYS_GETPID: "getpid", unix.SYS_CLONE3: "clone3", unix.SYS_RECVMSG: "recvmsg",
	unix.SYS_DUP3: "dup3", unix.SYS_CLOSE: "close", unix.SYS_FCNTL: "fcntl", unix.SYS_PREADV: "preadv",
	unix.SYS_PREAD64: "pread64", unix.SYS_CHDIR: "chdir", unix.SYS_FCHDIR: "fchdir", unix.SYS_CHROOT: "chroot",
	unix.SYS_UMASK: "umask", unix.SYS_PRLIMIT64: "prlimit64", unix.SYS_PERSONALITY: "personality",
	unix.SYS_SETRESUID: "setresuid", unix.SYS_SETRESGID: "setresgid", unix.SYS_SETGROUPS: "setgroups",
	unix.SYS_CAPSET: "capset", unix.SYS_RT_SIGQUEUEINFO: "rt_sigqueueinfo",
	unix.SYS_RT_TGSIGQUEUEINFO: "rt_tgsigqueueinfo", unix.SYS_SET_TID_ADDRESS: "set_tid_address",
	unix.SYS_SET_ROBUST_LIST: "set_robust_list", unix.SYS_RSEQ: "rseq", unix.SYS_MADVISE: "madvise",
	unix.SYS_OPENAT: "openat", unix.SYS_LSEEK: "lseek", unix.SYS_EXIT_GROUP: "exit_group",
	unix.SYS_SETPGID: "setpgid", unix.SYS_SETSID: "setsid", unix.SYS_WAIT4: "wait4",
	unix.SYS_PIPE2: "pipe2", unix.SYS_VMSPLICE: "vmsplice", unix.SYS_TGKILL: "tgkill",
}

// RunCode runs the task from entry with the given registers changed
// (keys: "rbx", "r12", ... as set by setup) until it executes an int3,
// and returns the registers at that point. It is how a batch of syscalls
// runs in one ptrace round trip (see the engine's syscall runner).
// Signals that arrive meanwhile are kept in Stolen and not delivered.
//
// With Own set, the code is run the dump's way (see OwnState): setup
// must load the stop signal and its tgkill arguments and the frame's
// stack pointer as the code expects them; the thread runs with every
// signal but Own.Sig blocked, and its own mask and registers are back
// when RunCode returns.
func (r *Remote) RunCode(entry uint64, setup func(*Regs)) (Regs, error) {
	run, err := r.StartCode(entry, setup)
	if err != nil {
		return Regs{}, err
	}
	return run.Finish()
}

// CodeRun is code that StartCode let run in a task and whose end
// Finish collects. Between the two the tracer thread is free to drive
// other tasks, so that several run at once (on every core) instead of
// one after the other: what the task does meanwhile is what RunCode's
// code does, and a dumped thread (Own) comes back by itself whenever
// ctcr dies, its stop collected or not (see OwnState).
//
// Preconditions: Finish is called exactly once, on the tracer thread,
// before anything else is asked of the task.
type CodeRun struct {
	r       *Remote
	regs    Regs
	timer   *time.Timer
	expired atomic.Bool
}

// StartCode sets the task up like RunCode and lets it run; Finish
// waits for it.
func (r *Remote) StartCode(entry uint64, setup func(*Regs)) (*CodeRun, error) {
	regs := r.Base
	regs.Rip = entry
	regs.Orig_rax = ^uint64(0)
	setup(&regs)
	if err := SetRegs(r.Tid, &regs); err != nil {
		return nil, err
	}
	if r.Own != nil {
		if err := SetSigmask(r.Tid, ^uint64(0)&^(1<<(uint(r.Own.Sig)-1))); err != nil {
			return nil, err
		}
		testKillInRun(r.Tid)
	}
	run := &CodeRun{r: r, regs: regs}
	// Code that neither stops nor exits within runDeadline (a call
	// blocked in the task) is stopped with SIGSTOP, which ctcr sends
	// from any thread, and the run fails.
	run.timer = time.AfterFunc(runDeadline, func() {
		run.expired.Store(true)
		unix.Syscall(unix.SYS_TKILL, uintptr(r.Tid), uintptr(unix.SIGSTOP), 0)
	})
	if err := Cont(r.Tid, 0); err != nil {
		run.timer.Stop()
		if r.Own != nil {
			r.giveBack()
		}
		return nil, err
	}
	return run, nil
}

// Finish waits for the code StartCode let run to end and returns the
// registers at its end; a dumped thread (Own) has its own mask and
// registers back.
func (run *CodeRun) Finish() (Regs, error) {
	r := run.r
	out, err := run.wait()
	run.timer.Stop()
	if r.Own != nil {
		if gerr := r.giveBack(); gerr != nil && err == nil {
			return out, gerr
		}
	}
	return out, err
}

// runDeadline bounds how long injected code may run (see StartCode).
const runDeadline = 60 * time.Second

func (run *CodeRun) wait() (Regs, error) {
	r, regs := run.r, run.regs
	for {
		// runDeadline bounds the whole run (StartCode's timer), with a
		// message that says what ran.
		st, err := waitFor(r.Tid, 0)
		if err != nil {
			return regs, err
		}
		switch {
		case st.Exited():
			return regs, fmt.Errorf("task %d %v while running syscalls: %w", r.Tid, st, ErrExited)
		case st.Event() != 0:
			msg, err := EventMsg(r.Tid)
			if err != nil {
				return regs, err
			}
			r.Events = append(r.Events, msg)
		case st.SignalDelivery():
			si, err := GetSiginfo(r.Tid)
			if err != nil {
				return regs, err
			}
			if r.Own != nil && si.Signo() == int(r.Own.Sig) {
				out, err := GetRegs(r.Tid)
				if err != nil {
					return out, err
				}
				if out.Rip == r.Own.Stop {
					// Our stop. A signal of the same number sent by
					// someone else meanwhile merged with ours: keep it.
					if si.Code() != siTkill {
						r.Stolen = append(r.Stolen, si)
					}
					return out, nil
				}
			}
			if si.Signo() == int(unix.SIGSTOP) && run.expired.Load() {
				return regs, fmt.Errorf("task %d: the system calls ctcr runs in it did not finish within %v", r.Tid, runDeadline)
			}
			if si.Signo() != int(unix.SIGSTOP) {
				r.Stolen = append(r.Stolen, si)
			}
		default:
			// SIGTRAP: our int3, or a fault in the runner.
			return GetRegs(r.Tid)
		}
		// An event or a signal kept for the task: on to the end.
		if err := Cont(r.Tid, 0); err != nil {
			return regs, err
		}
	}
}

// killInRun is a test hook: CTCR_TEST_KILL_IN_RUN=N[:MS] makes ctcr kill
// itself with SIGKILL while a dumped thread runs its Nth batch of calls,
// MS milliseconds (default 0) after letting it go: at 0 the thread is
// still in the batch, later it waits at the batch's stop that ctcr never
// collected. Tests use it to check that a thread abandoned exactly there
// comes back to itself.
var killInRun = struct{ n, ms, runs int }{}

func init() {
	v := os.Getenv("CTCR_TEST_KILL_IN_RUN")
	if v == "" {
		return
	}
	n, ms, _ := strings.Cut(v, ":")
	killInRun.n, _ = strconv.Atoi(n)
	killInRun.ms, _ = strconv.Atoi(ms)
}

func testKillInRun(tid int) {
	if killInRun.n == 0 {
		return
	}
	if killInRun.runs++; killInRun.runs != killInRun.n {
		return
	}
	Cont(tid, 0)
	time.Sleep(time.Duration(killInRun.ms) * time.Millisecond)
	unix.Kill(os.Getpid(), unix.SIGKILL)
	select {}
}

// killInLone is a test hook: CTCR_TEST_KILL_IN_LONE_CALL=N:STAGE makes
// ctcr kill itself with SIGKILL in the Nth lone call of a dumped thread,
// at STAGE: "regs" (the call's registers are set, the thread has not
// run), "entry" (at its syscall-entry stop) or "exit" (at its
// syscall-exit stop, before the thread gets its registers back). Tests
// use it to check that the thread comes back to itself from each.
var killInLone = struct {
	n     int
	stage string
	calls int
}{}

func init() {
	v := os.Getenv("CTCR_TEST_KILL_IN_LONE_CALL")
	if v == "" {
		return
	}
	n, stage, _ := strings.Cut(v, ":")
	killInLone.n, _ = strconv.Atoi(n)
	killInLone.stage = stage
}

func testKillInLone(tid int, stage string) {
	if killInLone.n == 0 {
		return
	}
	if stage == "regs" {
		killInLone.calls++
	}
	if killInLone.calls != killInLone.n || stage != killInLone.stage {
		return
	}
	unix.Kill(os.Getpid(), unix.SIGKILL)
	select {}
}
