package criu

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/creds"
	criucore "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	criusa "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-sa"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/rlimit"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/siginfo"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/timer"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/kernel"
	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/criu/ptrace"
)

// What a task can only tell about itself is asked with remote syscalls
// (dump side) and given back the same way (restore side, restore.go).

// dumpSigactions reads the disposition of every signal.
func dumpSigactions(c *taskCtl) ([]*criusa.SaEntry, error) {
	var out []*criusa.SaEntry
	for sig := 1; sig <= kernel.NSIG; sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		if _, err := c.call(unix.SYS_RT_SIGACTION, uint64(sig), 0, c.scratch, 8); err != nil {
			return nil, fmt.Errorf("signal %d: %w", sig, err)
		}
		var sa kernel.Sigaction
		if err := c.get(0, &sa); err != nil {
			return nil, err
		}
		out = append(out, &criusa.SaEntry{
			Sigaction: proto.Uint64(sa.Handler), Flags: proto.Uint64(sa.Flags),
			Restorer: proto.Uint64(sa.Restorer), Mask: proto.Uint64(sa.Mask),
		})
	}
	return out, nil
}

func dumpItimers(c *taskCtl) (*timer.TaskTimersEntry, error) {
	var t [3]*timer.ItimerEntry
	for which := 0; which < 3; which++ {
		if _, err := c.call(unix.SYS_GETITIMER, uint64(which), c.scratch); err != nil {
			return nil, err
		}
		var v kernel.Itimerval
		if err := c.get(0, &v); err != nil {
			return nil, err
		}
		t[which] = &timer.ItimerEntry{
			Isec: proto.Uint64(uint64(v.IntervalSec)), Iusec: proto.Uint64(uint64(v.IntervalUsec)),
			Vsec: proto.Uint64(uint64(v.ValueSec)), Vusec: proto.Uint64(uint64(v.ValueUsec)),
		}
	}
	return &timer.TaskTimersEntry{Real: t[0], Virt: t[1], Prof: t[2]}, nil
}

func dumpSigaltstack(c *taskCtl) (*criucore.ThreadSasEntry, error) {
	if _, err := c.call(unix.SYS_SIGALTSTACK, 0, c.scratch); err != nil {
		return nil, err
	}
	var ss kernel.StackT
	if err := c.get(0, &ss); err != nil {
		return nil, err
	}
	return &criucore.ThreadSasEntry{SsSp: proto.Uint64(ss.Sp), SsSize: proto.Uint64(ss.Size), SsFlags: proto.Uint32(uint32(ss.Flags))}, nil
}

// prctlGetInt runs prctl(op, &int) and returns the int.
func prctlGetInt(c *taskCtl, op int) (int32, error) {
	if _, err := c.call(unix.SYS_PRCTL, uint64(op), c.scratch); err != nil {
		return 0, err
	}
	var v int32
	err := c.get(0, &v)
	return v, err
}

func signalQueue(sis []ptrace.Siginfo) *siginfo.SignalQueueEntry {
	q := &siginfo.SignalQueueEntry{}
	for i := range sis {
		q.Signals = append(q.Signals, &siginfo.SiginfoEntry{Siginfo: append([]byte(nil), sis[i][:]...)})
	}
	return q
}

func capWords(v uint64) []uint32 { return []uint32{uint32(v), uint32(v >> 32)} }

func capValue(w []uint32) uint64 {
	var v uint64
	if len(w) > 0 {
		v = uint64(w[0])
	}
	if len(w) > 1 {
		v |= uint64(w[1]) << 32
	}
	return v
}

// noNewPrivsBit marks no_new_privs in CredsEntry.secbits. Securebits use
// the low byte only; CRIU's creds entry has no field for the flag.
const noNewPrivsBit = 1 << 31

func dumpCreds(st *proc.Status, secbits uint32) *creds.CredsEntry {
	if st.NoNewPrivs {
		secbits |= noNewPrivsBit
	}
	return &creds.CredsEntry{
		Uid: proto.Uint32(st.Uid[0]), Euid: proto.Uint32(st.Uid[1]), Suid: proto.Uint32(st.Uid[2]), Fsuid: proto.Uint32(st.Uid[3]),
		Gid: proto.Uint32(st.Gid[0]), Egid: proto.Uint32(st.Gid[1]), Sgid: proto.Uint32(st.Gid[2]), Fsgid: proto.Uint32(st.Gid[3]),
		CapInh: capWords(st.CapInh), CapPrm: capWords(st.CapPrm), CapEff: capWords(st.CapEff), CapBnd: capWords(st.CapBnd),
		Secbits: proto.Uint32(secbits), Groups: st.Groups,
	}
}

func dumpRlimits(pid int) (*criucore.TaskRlimitsEntry, error) {
	lims, err := proc.ReadLimits(pid)
	if err != nil {
		return nil, err
	}
	out := &criucore.TaskRlimitsEntry{}
	for _, l := range lims {
		out.Rlimits = append(out.Rlimits, &rlimit.RlimitEntry{Cur: proto.Uint64(l.Soft), Max: proto.Uint64(l.Hard)})
	}
	return out, nil
}
