package ptrace

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The requests below must run on the tracer thread: call them inside
// Tracer.Do.

// Stop describes what wait4 reported for a tracee.
type Stop struct {
	Status unix.WaitStatus
}

// Exited reports whether the task is gone (exited or killed).
func (s Stop) Exited() bool { return s.Status.Exited() || s.Status.Signaled() }

// Event returns the PTRACE_EVENT_* of an event stop, or 0.
func (s Stop) Event() int {
	if !s.Status.Stopped() {
		return 0
	}
	return int(s.Status) >> 16
}

// Signal returns the stop signal; for a signal-delivery-stop that is the
// signal about to be delivered.
func (s Stop) Signal() unix.Signal { return s.Status.StopSignal() }

// SignalDelivery reports a signal-delivery-stop: the task dequeued a real
// signal and ctcr decides whether it is delivered.
func (s Stop) SignalDelivery() bool {
	return s.Status.Stopped() && s.Event() == 0 && s.Signal() != unix.SIGTRAP
}

func (s Stop) String() string {
	switch {
	case s.Status.Exited():
		return fmt.Sprintf("exited with status %d", s.Status.ExitStatus())
	case s.Status.Signaled():
		// SignalName: the %v of a unix.Signal is strsignal's text
		// ("killed"), which made "killed by killed".
		return fmt.Sprintf("killed by %s", unix.SignalName(s.Status.Signal()))
	case s.Event() != 0:
		return fmt.Sprintf("event stop %d (%v)", s.Event(), s.Signal())
	case s.Status.Stopped():
		return fmt.Sprintf("stopped by %s", unix.SignalName(s.Signal()))
	}
	return fmt.Sprintf("wait status %#x", uint32(s.Status))
}

// Wait waits for the next state change of tid, for at most waitDeadline
// (then it fails with ErrWaitTimeout).
//
// A group leader's exit is reported only once every other thread of its
// group is released, and a traced thread that died stays a zombie until
// its tracer collects it: when a process ctcr holds dies (exit_group
// from a thread it had not seized yet, a SIGKILL), a wait for the leader
// alone would wait forever on its seized threads. While such a wait
// lasts, a watchdog collects those threads (reapPeers); their statuses
// are kept for the Wait that asks for them later.
func Wait(tid int) (Stop, error) {
	return waitFor(tid, waitDeadline)
}

// waitDeadline bounds Wait. What ctcr waits for comes in microseconds (a
// stop it asked for, a remote call's end, the death of a task it
// killed); the slowest single waits are remote calls that move memory
// (a preadv of one run of pages, a populate), which at the 1-2 GB/s of
// these machines fill tens of GiB in this time. A wait this long is on a
// task asleep in the kernel (a remote call that blocks, a frozen cgroup)
// that nothing else will wake.
const waitDeadline = 60 * time.Second

// waitFor is Wait with deadline d (0: none, for a caller that bounds the
// wait itself, as CodeRun does).
//
// The wait blocks in wait4 (polling would cost every remote call on
// the hot path); its watchdog, a timer that costs nothing until it
// fires, ends it at d by sending the task SIGSTOP from another thread,
// which wakes an interruptible sleep into a signal-delivery-stop that
// wait4 reports: that stop is returned with ErrWaitTimeout, and the
// SIGSTOP, consumed by the stop, is never delivered. (A task in an
// uninterruptible sleep stops only when the sleep ends.)
func waitFor(tid int, d time.Duration) (Stop, error) {
	if ws, ok := takeReaped(tid); ok {
		return Stop{Status: ws}, nil
	}
	w := startPeerReaper(tid, d)
	defer w.stop()
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(tid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err == unix.ECHILD {
			if ws, ok := takeReaped(tid); ok {
				return Stop{Status: ws}, nil
			}
		}
		if err != nil {
			return Stop{}, os.NewSyscallError(fmt.Sprintf("wait4 %d", tid), err)
		}
		st := Stop{Status: ws}
		if fired, asleep := w.expired(); fired && st.SignalDelivery() && st.Signal() == unix.SIGSTOP {
			return st, fmt.Errorf("%s: no stop within %v (asleep in %s): %w", taskName(tid), d, asleep, ErrWaitTimeout)
		}
		return st, nil
	}
}

// taskName names thread tid for messages: "task PID (thread TID)", or
// "task TID" for a main thread (or one gone).
func taskName(tid int) string {
	if tg := threadGroup(tid); tg != 0 && tg != tid {
		return fmt.Sprintf("task %d (thread %d)", tg, tid)
	}
	return fmt.Sprintf("task %d", tid)
}

// wchan names the kernel function tid sleeps in, for messages.
func wchan(tid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", tid))
	if err != nil || len(b) == 0 || string(b) == "0" {
		return "?"
	}
	return string(b)
}

// Siginfo is the kernel's siginfo_t, 128 bytes, kept raw: ctcr stores it
// in images and queues it again without interpreting it.
type Siginfo [128]byte

// Signo returns si_signo.
func (si *Siginfo) Signo() int {
	return int(int32(uint32(si[0]) | uint32(si[1])<<8 | uint32(si[2])<<16 | uint32(si[3])<<24))
}

// Seize attaches to tid with PTRACE_SEIZE and brings it to a ptrace stop
// with PTRACE_INTERRUPT. A task may dequeue a signal on its way to the
// stop; such signals are returned so the caller can keep them (in the
// image, or queued again when the task is resumed): they are never lost
// and never delivered while ctcr holds the task.
func Seize(tid int, options int) ([]Siginfo, error) {
	if err := Attach(tid, options); err != nil {
		return nil, err
	}
	return WaitSeized(tid)
}

// Attach seizes tid and asks it to stop, without waiting: a task frozen
// by its cgroup stops only once thawed (WaitSeized).
func Attach(tid int, options int) error {
	forgetReaped(tid)
	if err := ptrace(unix.PTRACE_SEIZE, tid, 0, uintptr(options)); err != nil {
		return os.NewSyscallError(fmt.Sprintf("ptrace(SEIZE) of task %d", tid), err)
	}
	if err := ptrace(unix.PTRACE_INTERRUPT, tid, 0, 0); err != nil {
		return os.NewSyscallError(fmt.Sprintf("ptrace(INTERRUPT) of task %d", tid), err)
	}
	return nil
}

// seizeDeadline bounds how long an attached task may take to reach its
// interrupt stop. It stops as soon as it is scheduled or its current
// syscall is interrupted: within milliseconds even for the last of
// thousands of threads attached at once on a loaded machine. A task that
// has not stopped by then sleeps where no signal reaches it (state D: a
// stuck file system, a device), and would hold the whole dump.
const seizeDeadline = 10 * time.Second

// WaitSeized waits for an attached task to reach its interrupt stop,
// keeping the signals it dequeues on the way (see Seize). A task that
// does not stop within seizeDeadline fails it with ErrWaitTimeout; it
// stays attached until the tracer thread ends (Tracer.Close), which
// detaches it with its interrupt pending no more.
//
// Polled (WaitTimeout), unlike Wait: the watchdog's SIGSTOP cannot stop
// a task that an interrupt cannot stop either. Each thread is waited
// for once per dump and is usually stopped already when asked.
func WaitSeized(tid int) ([]Siginfo, error) {
	return waitSeized(tid, seizeDeadline)
}

// waitSeized is WaitSeized with deadline d.
func waitSeized(tid int, d time.Duration) ([]Siginfo, error) {
	var stolen []Siginfo
	deadline := time.Now().Add(d)
	for {
		st, err := WaitTimeout(tid, time.Until(deadline))
		if errors.Is(err, ErrWaitTimeout) {
			return stolen, fmt.Errorf("%s: no stop within %v while being seized (asleep in %s): %w", taskName(tid), d, wchan(tid), ErrWaitTimeout)
		}
		if err != nil {
			return stolen, err
		}
		switch {
		case st.Exited():
			return stolen, fmt.Errorf("task %d %v while being seized: %w", tid, st, ErrExited)
		case st.Event() == unix.PTRACE_EVENT_STOP:
			// SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU here mean a group-stop:
			// the task was stopped by job control. It stays in our
			// hands like any other; its stopped state is not restored.
			return stolen, nil
		case st.SignalDelivery():
			si, err := GetSiginfo(tid)
			if err != nil {
				return stolen, err
			}
			stolen = append(stolen, si)
			// Resume without the signal: the pending INTERRUPT then
			// brings the task to the event stop we wait for.
			if err := ptrace(unix.PTRACE_CONT, tid, 0, 0); err != nil {
				return stolen, os.NewSyscallError(fmt.Sprintf("ptrace(CONT) of task %d", tid), err)
			}
		default:
			if err := ptrace(unix.PTRACE_CONT, tid, 0, 0); err != nil {
				return stolen, os.NewSyscallError(fmt.Sprintf("ptrace(CONT) of task %d", tid), err)
			}
		}
	}
}

// Interrupt asks a seized tid for an interrupt stop (PTRACE_INTERRUPT).
func Interrupt(tid int) error {
	if err := ptrace(unix.PTRACE_INTERRUPT, tid, 0, 0); err != nil {
		return os.NewSyscallError(fmt.Sprintf("ptrace(INTERRUPT) of task %d", tid), err)
	}
	return nil
}

// Detach lets tid run again.
func Detach(tid int) error {
	if err := ptrace(unix.PTRACE_DETACH, tid, 0, 0); err != nil {
		return os.NewSyscallError(fmt.Sprintf("ptrace(DETACH) of task %d", tid), err)
	}
	return nil
}

// SetOptions sets PTRACE_O_* options.
func SetOptions(tid int, options int) error {
	if err := ptrace(unix.PTRACE_SETOPTIONS, tid, 0, uintptr(options)); err != nil {
		return os.NewSyscallError(fmt.Sprintf("ptrace(SETOPTIONS) of task %d", tid), err)
	}
	return nil
}

// Cont resumes tid, delivering sig if it is not zero.
func Cont(tid int, sig unix.Signal) error {
	if err := ptrace(unix.PTRACE_CONT, tid, 0, uintptr(sig)); err != nil {
		return os.NewSyscallError(fmt.Sprintf("ptrace(CONT) of task %d", tid), err)
	}
	return nil
}

// EventMsg returns PTRACE_GETEVENTMSG, the new task's id after a clone event.
func EventMsg(tid int) (uint, error) {
	msg, err := unix.PtraceGetEventMsg(tid)
	if err != nil {
		return 0, os.NewSyscallError(fmt.Sprintf("ptrace(GETEVENTMSG) of task %d", tid), err)
	}
	return msg, nil
}

// GetRegs reads the general purpose registers (NT_PRSTATUS), fs_base and
// gs_base included.
func GetRegs(tid int) (Regs, error) {
	var r Regs
	if err := unix.PtraceGetRegs(tid, &r); err != nil {
		return r, os.NewSyscallError(fmt.Sprintf("ptrace(GETREGSET NT_PRSTATUS) of task %d", tid), err)
	}
	return r, nil
}

// SetRegs writes the general purpose registers.
func SetRegs(tid int, r *Regs) error {
	if err := unix.PtraceSetRegs(tid, r); err != nil {
		return os.NewSyscallError(fmt.Sprintf("ptrace(SETREGSET NT_PRSTATUS) of task %d", tid), err)
	}
	return nil
}

// GetSigmask returns the task's blocked signal mask.
func GetSigmask(tid int) (uint64, error) {
	var mask uint64
	if err := ptracePtr(unix.PTRACE_GETSIGMASK, tid, 8, ptrOf(&mask)); err != nil {
		return 0, os.NewSyscallError(fmt.Sprintf("ptrace(GETSIGMASK) of task %d", tid), err)
	}
	return mask, nil
}

// SetSigmask sets the task's blocked signal mask. The kernel silently
// keeps SIGKILL and SIGSTOP unblocked.
func SetSigmask(tid int, mask uint64) error {
	if err := ptracePtr(unix.PTRACE_SETSIGMASK, tid, 8, ptrOf(&mask)); err != nil {
		return os.NewSyscallError(fmt.Sprintf("ptrace(SETSIGMASK) of task %d", tid), err)
	}
	return nil
}

// GetSiginfo returns the siginfo of the signal that caused the current stop.
func GetSiginfo(tid int) (Siginfo, error) {
	var si Siginfo
	if err := ptracePtr(unix.PTRACE_GETSIGINFO, tid, 0, ptrOf(&si[0])); err != nil {
		return si, os.NewSyscallError(fmt.Sprintf("ptrace(GETSIGINFO) of task %d", tid), err)
	}
	return si, nil
}

// peekSiginfoArgs is struct ptrace_peeksiginfo_args (uapi/linux/ptrace.h).
type peekSiginfoArgs struct {
	Off   uint64
	Flags uint32
	Nr    int32
}

const peekSiginfoShared = 1 // PTRACE_PEEKSIGINFO_SHARED

// PendingSignals returns the queued signals of tid without dequeuing
// them: the thread's private queue, or with shared the process-wide one.
func PendingSignals(tid int, shared bool) ([]Siginfo, error) {
	var out []Siginfo
	var buf [32]Siginfo
	for {
		args := peekSiginfoArgs{Off: uint64(len(out)), Nr: int32(len(buf))}
		if shared {
			args.Flags = peekSiginfoShared
		}
		n, err := ptraceRet2(unix.PTRACE_PEEKSIGINFO, tid, ptrOf(&args), ptrOf(&buf[0]))
		if err != nil {
			return nil, os.NewSyscallError(fmt.Sprintf("ptrace(PEEKSIGINFO) of task %d", tid), err)
		}
		if n == 0 {
			return out, nil
		}
		out = append(out, buf[:n]...)
	}
}

// GetXState reads the XSAVE area (NT_X86_XSTATE) in the kernel's
// standard (uncompacted) format.
func GetXState(tid int) ([]byte, error) {
	bp := xstateBufs.Get().(*[]byte)
	defer xstateBufs.Put(bp)
	buf := *bp
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	if err := ptracePtr(unix.PTRACE_GETREGSET, tid, unix.NT_X86_XSTATE, ptrOf(&iov)); err != nil {
		return nil, os.NewSyscallError(fmt.Sprintf("ptrace(GETREGSET NT_X86_XSTATE) of task %d", tid), err)
	}
	return bytes.Clone(buf[:iov.Len]), nil
}

// xstateBufs holds the buffers GetXState reads into: room for any XSAVE
// area, of which only what the kernel gave is copied out (2.7 KiB with
// AVX-512, 10.4 KiB with AMX), so that a dump does not allocate 16 KiB
// per thread.
var xstateBufs = sync.Pool{New: func() any { b := make([]byte, 16384); return &b }}

// SetXState writes the XSAVE area.
func SetXState(tid int, xs []byte) error {
	if len(xs) == 0 {
		return errors.New("empty XSAVE area")
	}
	iov := unix.Iovec{Base: &xs[0]}
	iov.SetLen(len(xs))
	if err := ptracePtr(unix.PTRACE_SETREGSET, tid, unix.NT_X86_XSTATE, ptrOf(&iov)); err != nil {
		return os.NewSyscallError(fmt.Sprintf("ptrace(SETREGSET NT_X86_XSTATE) of task %d", tid), err)
	}
	return nil
}

// SingleStep resumes tid for one instruction.
func SingleStep(tid int) error {
	if err := ptrace(unix.PTRACE_SINGLESTEP, tid, 0, 0); err != nil {
		return os.NewSyscallError(fmt.Sprintf("ptrace(SINGLESTEP) of task %d", tid), err)
	}
	return nil
}

// rseqConfiguration is struct ptrace_rseq_configuration.
type rseqConfiguration struct {
	RseqAbiPointer uint64
	RseqAbiSize    uint32
	Signature      uint32
	Flags          uint32
	Pad            uint32
}

// RseqConfig is a thread's rseq registration.
type RseqConfig struct {
	Pointer   uint64
	Size      uint32
	Signature uint32
	Flags     uint32
}

const ptraceGetRseqConfiguration = 0x420f // uapi/linux/ptrace.h

// GetRseq returns the thread's rseq registration (Pointer 0: none).
func GetRseq(tid int) (RseqConfig, error) {
	var c rseqConfiguration
	if _, err := ptraceRet(ptraceGetRseqConfiguration, tid, 24, ptrOf(&c)); err != nil {
		return RseqConfig{}, os.NewSyscallError(fmt.Sprintf("ptrace(GET_RSEQ_CONFIGURATION) of task %d", tid), err)
	}
	return RseqConfig{Pointer: c.RseqAbiPointer, Size: c.RseqAbiSize, Signature: c.Signature, Flags: c.Flags}, nil
}
