package criu

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/creds"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/kernel"
)

// capUserHeader and capUserData are the capget/capset ABI, version 3
// (include/uapi/linux/capability.h).
type capUserHeader struct {
	Version uint32
	Pid     int32
}

type capUserData struct {
	Effective, Permitted, Inheritable uint32
}

const capVersion3 = 0x20080522

// addCreds adds to b the calls that give a thread its credentials c.
// They run last among the thread's state: after them the thread may
// lack the privilege the earlier steps need. Order matters: the bounding
// set and securebits need CAP_SETPCAP, so they go while the thread is
// still root; keep-caps carries the permitted set across the uid change;
// capset then sets the three sets exactly.
//
// pdeathsig, which a change of credentials clears, is set at the end of
// the same batch.
//
// ambient, the thread's ambient capabilities, are raised after capset.
// what names each call.
func addCreds(b *batch, what map[int]string, c *creds.CredsEntry, ambient uint64, pdeathsig uint32) error {
	if c == nil {
		what[b.add(unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uint64(pdeathsig))] = "pdeathsig"
		return nil
	}
	groups := c.GetGroups()
	if len(groups) > 65536 {
		return corruptf("core image", "%d supplementary groups", len(groups))
	}
	gaddr := uint64(0)
	if len(groups) > 0 {
		var err error
		if gaddr, err = b.put(groups); err != nil {
			return err
		}
	}
	what[b.add(unix.SYS_SETGROUPS, uint64(len(groups)), gaddr)] = "setgroups"
	what[b.add(unix.SYS_SETRESGID, uint64(c.GetGid()), uint64(c.GetEgid()), uint64(c.GetSgid()))] = "setresgid"
	what[b.add(unix.SYS_SETFSGID, uint64(c.GetFsgid()))] = "setfsgid"
	bnd := capValue(c.GetCapBnd())
	for capNo := uint64(0); capNo <= lastCap(); capNo++ {
		if bnd&(1<<capNo) == 0 {
			what[b.add(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, capNo)] = fmt.Sprintf("drop capability %d from the bounding set", capNo)
		}
	}
	secbits := c.GetSecbits() &^ noNewPrivsBit
	what[b.add(unix.SYS_PRCTL, unix.PR_SET_SECUREBITS, uint64(secbits|kernel.SECBIT_KEEP_CAPS))] = "securebits"
	what[b.add(unix.SYS_SETRESUID, uint64(c.GetUid()), uint64(c.GetEuid()), uint64(c.GetSuid()))] = "setresuid"
	what[b.add(unix.SYS_SETFSUID, uint64(c.GetFsuid()))] = "setfsuid"
	eff, prm, inh := capValue(c.GetCapEff()), capValue(c.GetCapPrm()), capValue(c.GetCapInh())
	h, err := b.put(&capUserHeader{Version: capVersion3})
	if err != nil {
		return err
	}
	d, err := b.put(&[2]capUserData{
		{uint32(eff), uint32(prm), uint32(inh)},
		{uint32(eff >> 32), uint32(prm >> 32), uint32(inh >> 32)},
	})
	if err != nil {
		return err
	}
	what[b.add(unix.SYS_CAPSET, h, d)] = fmt.Sprintf("capset (effective %#x permitted %#x inheritable %#x)", eff, prm, inh)
	raiseAmbient(b, what, ambient)
	if secbits&kernel.SECBIT_KEEP_CAPS == 0 {
		what[b.add(unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 0)] = "clear keep-caps"
	}
	if c.GetSecbits()&noNewPrivsBit != 0 {
		what[b.add(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)] = "no_new_privs"
	}
	what[b.add(unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uint64(pdeathsig))] = "pdeathsig"
	return nil
}
