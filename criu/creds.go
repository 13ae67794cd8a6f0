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

// restoreCreds gives the task its credentials. It runs last among the
// task's state: after it the task may lack the privilege the earlier
// steps need. Order matters: the bounding set and securebits need
// CAP_SETPCAP, so they go while the task is still root; keep-caps carries
// the permitted set across the uid change; capset then sets the three
// sets exactly.
func (t *restoringTask) restoreCreds() error {
	c := t.img.core.ThreadCore.GetCreds()
	if c == nil {
		return nil
	}
	where := t.where()
	call := func(what string, nr uintptr, args ...uint64) error {
		if _, err := t.ctl.call(nr, args...); err != nil {
			return fmt.Errorf("%s: %s: %w", where, what, err)
		}
		return nil
	}
	groups := c.GetGroups()
	gaddr := uint64(0)
	if len(groups) > 0 {
		if len(groups) > 65536 {
			return fmt.Errorf("%s: %w", where, corruptf("core image", "%d supplementary groups", len(groups)))
		}
		var err error
		if gaddr, err = t.ctl.put(0, groups); err != nil {
			return err
		}
	}
	if err := call("setgroups", unix.SYS_SETGROUPS, uint64(len(groups)), gaddr); err != nil {
		return err
	}
	if err := call("setresgid", unix.SYS_SETRESGID, uint64(c.GetGid()), uint64(c.GetEgid()), uint64(c.GetSgid())); err != nil {
		return err
	}
	if _, err := t.ctl.call(unix.SYS_SETFSGID, uint64(c.GetFsgid())); err != nil {
		return fmt.Errorf("%s: setfsgid: %w", where, err)
	}
	bnd := capValue(c.GetCapBnd())
	for capNo := uint64(0); capNo < 64; capNo++ {
		if bnd&(1<<capNo) != 0 {
			continue
		}
		if _, err := t.ctl.call(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, capNo); err != nil {
			if capNo > lastCap() {
				continue // not a capability of this kernel (EINVAL)
			}
			return fmt.Errorf("%s: drop capability %d from the bounding set: %w", where, capNo, err)
		}
	}
	secbits := c.GetSecbits() &^ noNewPrivsBit
	if err := call("securebits", unix.SYS_PRCTL, unix.PR_SET_SECUREBITS, uint64(secbits|kernel.SECBIT_KEEP_CAPS)); err != nil {
		return err
	}
	if err := call("setresuid", unix.SYS_SETRESUID, uint64(c.GetUid()), uint64(c.GetEuid()), uint64(c.GetSuid())); err != nil {
		return err
	}
	if _, err := t.ctl.call(unix.SYS_SETFSUID, uint64(c.GetFsuid())); err != nil {
		return fmt.Errorf("%s: setfsuid: %w", where, err)
	}
	if err := t.capset(c); err != nil {
		return err
	}
	if secbits&kernel.SECBIT_KEEP_CAPS == 0 {
		if err := call("clear keep-caps", unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 0); err != nil {
			return err
		}
	}
	if c.GetSecbits()&noNewPrivsBit != 0 {
		if err := call("no_new_privs", unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return err
		}
	}
	return nil
}

func (t *restoringTask) capset(c *creds.CredsEntry) error {
	eff, prm, inh := capValue(c.GetCapEff()), capValue(c.GetCapPrm()), capValue(c.GetCapInh())
	hdr := capUserHeader{Version: capVersion3}
	data := [2]capUserData{
		{uint32(eff), uint32(prm), uint32(inh)},
		{uint32(eff >> 32), uint32(prm >> 32), uint32(inh >> 32)},
	}
	h, err := t.ctl.put(0, &hdr)
	if err != nil {
		return err
	}
	d, err := t.ctl.put(64, &data)
	if err != nil {
		return err
	}
	if _, err := t.ctl.call(unix.SYS_CAPSET, h, d); err != nil {
		return fmt.Errorf("%s: capset (effective %#x permitted %#x inheritable %#x): %w", t.where(), eff, prm, inh, err)
	}
	return nil
}
