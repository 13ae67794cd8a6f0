package kernel

// arch/x86/include/uapi/asm/signal.h and include/linux/errno.h.

// Restart codes a task interrupted in a syscall holds in rax
// (include/linux/errno.h; never seen by user space).
const (
	ERESTARTSYS           = 512
	ERESTARTNOINTR        = 513
	ERESTARTNOHAND        = 514
	ERESTART_RESTARTBLOCK = 516
)

// NSIG is the number of signals (_NSIG).
const NSIG = 64

// Sigaction is struct sigaction as the rt_sigaction syscall takes it on
// x86-64 (kernel_sigaction: handler, flags, restorer, mask).
type Sigaction struct {
	Handler  uint64
	Flags    uint64
	Restorer uint64
	Mask     uint64
}

// SS_ONSTACK is reported by sigaltstack while the task runs on it.
const SS_ONSTACK = 1

// StackT is stack_t (sigaltstack).
type StackT struct {
	Sp    uint64
	Flags int32
	_     int32
	Size  uint64
}

// Itimerval is struct itimerval with 64-bit fields.
type Itimerval struct {
	IntervalSec, IntervalUsec int64
	ValueSec, ValueUsec       int64
}

// POSIX timers (include/uapi/asm-generic/siginfo.h, linux/time.h,
// linux/prctl.h).
const (
	SIGEV_SIGNAL    = 0
	SIGEV_NONE      = 1
	SIGEV_THREAD    = 2
	SIGEV_THREAD_ID = 4

	// PR_TIMER_CREATE_RESTORE_IDS (Linux 6.17): while on, timer_create
	// takes the id the caller asks for in *created_timer_id.
	PR_TIMER_CREATE_RESTORE_IDS     = 77
	PR_TIMER_CREATE_RESTORE_IDS_OFF = 0
	PR_TIMER_CREATE_RESTORE_IDS_ON  = 1
)

// Sigevent is struct sigevent as timer_create reads it: 64 bytes.
type Sigevent struct {
	Value  uint64 // sigev_value
	Signo  int32
	Notify int32
	Tid    int32 // _sigev_un._tid, for SIGEV_THREAD_ID
	_      [44]byte
}

// Itimerspec is struct itimerspec (__kernel_itimerspec).
type Itimerspec struct {
	IntervalSec, IntervalNsec int64
	ValueSec, ValueNsec       int64
}
