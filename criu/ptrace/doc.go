// Package ptrace owns every ptrace(2) and wait4(2) call of ctcr.
//
// The kernel binds a tracee to the thread that attached it: every later
// request must come from that same OS thread. Tracer runs one goroutine
// locked to its OS thread and executes closures sent to it, the way
// Delve's native backend and gVisor's ptrace platform do. Everything in
// this package that touches a tracee goes through Tracer.Do.
//
// On top of the raw requests it provides what the engine needs of a
// stopped task: seizing with PTRACE_SEIZE+PTRACE_INTERRUPT (remembering
// any signal that was dequeued on the way), registers and the XSAVE area,
// the blocked mask and queued siginfo, and remote system calls: the task
// executes one syscall instruction with arguments loaded by ctcr
// (Remote.Syscall).
package ptrace
