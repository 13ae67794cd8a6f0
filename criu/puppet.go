package criu

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/criu/ptrace"
)

// PuppetEnv is set in the environment of a puppet process; ctcr's main
// checks it so a puppet that somehow ran would exit at once.
const PuppetEnv = "CTCR_PUPPET"

// puppetTransportFd is where a puppet holds its end of the socket that
// carries fds from ctcr (SCM_RIGHTS).
const puppetTransportFd = 3

// ctlSize is the size of the control area mapped in every task being
// restored: a syscall instruction at its start, then scratch space for
// arguments (clone_args, iovec arrays, control messages, strings).
const ctlSize = 1 << 20

// runnerOffset is where the syscall runner sits in the control area's
// first page, after the lone syscall instruction.
const runnerOffset = 64

// puppet is a traced process that exists only to clone the restored
// task with its original PID.
type puppet struct {
	pid  int
	sock *os.File // ctcr's end of the fd transport
	ctl  *taskCtl
	dead bool
}

// startPuppet execs ctcr's own binary stopped at its first instruction
// under PTRACE_TRACEME, with one end of a socketpair as fd 3.
//
// Preconditions: runs on the tracer thread (the thread that forks a
// PTRACE_TRACEME child becomes its tracer).
func startPuppet() (*puppet, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "ctcr-transport")
	theirs := os.NewFile(uintptr(fds[1]), "puppet-transport")
	defer theirs.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		ours.Close()
		return nil, err
	}
	defer devnull.Close()
	exe, err := os.Executable()
	if err != nil {
		ours.Close()
		return nil, err
	}
	pid, err := syscall.ForkExec(exe, []string{"ctcr-puppet"}, &syscall.ProcAttr{
		Env:   []string{PuppetEnv + "=1"},
		Files: []uintptr{devnull.Fd(), devnull.Fd(), devnull.Fd(), theirs.Fd()},
		Sys:   &syscall.SysProcAttr{Ptrace: true, Pdeathsig: syscall.SIGKILL},
	})
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("start puppet %s: %w", exe, err)
	}
	p := &puppet{pid: pid, sock: ours}
	st, err := ptrace.Wait(pid)
	if err != nil {
		p.kill()
		return nil, err
	}
	if !st.Status.Stopped() || st.Signal() != unix.SIGTRAP {
		p.kill()
		return nil, fmt.Errorf("puppet %d: %v at exec, want a SIGTRAP stop", pid, st)
	}
	// Every task the puppet's descendants create is traced from birth
	// (the options are inherited); EXITKILL: if ctcr dies, every task it
	// was building dies with it.
	if err := ptrace.SetOptions(pid, unix.PTRACE_O_TRACECLONE|unix.PTRACE_O_TRACEFORK|unix.PTRACE_O_TRACEVFORK|unix.PTRACE_O_EXITKILL|unix.PTRACE_O_SUSPEND_SECCOMP|unix.PTRACE_O_TRACESYSGOOD); err != nil {
		p.kill()
		return nil, err
	}
	return p, nil
}

// kill ends the puppet and reaps it.
//
// Preconditions: runs on the tracer thread.
func (p *puppet) kill() {
	if p.dead {
		return
	}
	p.dead = true
	unix.Kill(p.pid, unix.SIGKILL)
	for {
		st, err := ptrace.Wait(p.pid)
		if err != nil || st.Exited() {
			break
		}
	}
	if p.ctl != nil {
		p.ctl.mem.Close()
	}
}

// span is a range of addresses [start, end).
type span struct{ start, end uint64 }

// pickControlArea returns an address for a ctlSize area that overlaps
// neither the puppet's mappings nor any mapping of the image.
func pickControlArea(busy []span) (uint64, error) {
	sort.Slice(busy, func(i, j int) bool { return busy[i].start < busy[j].start })
	// Search down from high addresses, below where mmap puts libraries,
	// keeping a guard page on each side.
	const guard = pageSize
	top := uint64(taskSize - 1<<32)
	for cand := top - ctlSize - guard; cand > 1<<32; {
		ok := true
		for _, b := range busy {
			if b.start < cand+ctlSize+guard && cand < b.end+guard {
				ok = false
				cand = (b.start - ctlSize - 2*guard) &^ (pageSize - 1)
				break
			}
		}
		if ok {
			return cand, nil
		}
	}
	return 0, errors.New("no free address range for the control area")
}

// prepare installs the control area in the stopped puppet.
//
// Preconditions: runs on the tracer thread.
func (p *puppet) prepare(imageSpans []span) error {
	regs, err := ptrace.GetRegs(p.pid)
	if err != nil {
		return err
	}
	mem, err := ptrace.OpenMem(p.pid)
	if err != nil {
		return fmt.Errorf("puppet %d: %w", p.pid, err)
	}
	// The puppet stopped at exec before its first instruction: put a
	// syscall instruction there (a private copy-on-write page of its
	// text; /proc/PID/mem may write it) and run the first mmap from it.
	if err := mem.WriteAt([]byte{0x0f, 0x05}, regs.Rip); err != nil {
		mem.Close()
		return err
	}
	p.ctl = &taskCtl{tid: p.pid, mem: mem, r: &ptrace.Remote{Tid: p.pid, IP: regs.Rip, Base: regs}}
	maps, err := proc.Maps(p.pid)
	if err != nil {
		return err
	}
	busy := append([]span(nil), imageSpans...)
	for _, m := range maps {
		busy = append(busy, span{m.Start, m.End})
	}
	addr, err := pickControlArea(busy)
	if err != nil {
		return err
	}
	got, err := p.ctl.mmap(addr, ctlSize, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, -1, 0)
	if err != nil {
		return fmt.Errorf("puppet %d: control area: %w", p.pid, err)
	}
	if got != addr {
		return fmt.Errorf("puppet %d: control area mapped at %#x, asked %#x", p.pid, got, addr)
	}
	if err := mem.WriteAt([]byte{0x0f, 0x05}, addr); err != nil {
		return err
	}
	p.ctl.r.IP = addr
	p.ctl.scratch, p.ctl.size = addr+pageSize, ctlSize-pageSize
	return p.ctl.installRunner(addr + runnerOffset)
}
