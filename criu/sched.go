package criu

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	criucore "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/kernel"
	"github.com/ctcr/ctcr/criu/proc"
)

// Scheduling state CRIU's images have no field for, read and set by ctcr
// from outside the tasks: each thread's CPU affinity and I/O priority,
// and each process's timer slack. It goes beside the images:
//
//	sched.json: {"threads": {"VTID": {"cpus": [0, 2], "ioprio": 16390}},
//	             "timerslack_ns": {"VPID": 50000},
//	             "membarrier": {"VPID": 16},
//	             "xcomp_perm": {"VPID": 262144}}
//
// membarrier is a process's membarrier registrations, the REGISTER_*
// commands it issued (MEMBARRIER_CMD_GET_REGISTRATIONS); restore issues
// them again in the process. xcomp_perm is, on a CPU with AMX, the
// dynamic XSAVE features a process was given (ARCH_GET_XCOMP_PERM less
// the ones every process has: 1<<18, AMX's tile data); restore asks for
// them again (ARCH_REQ_XCOMP_PERM), or the process's next AMX
// instruction would kill it with SIGILL.
//
// A thread keeps only the CPUs the restoring machine (and its cgroup's
// cpuset) lets it use; if none of them, it may run on any and the
// restore log says so.

const schedFile = "sched.json"

type schedThread struct {
	CPUs   []int `json:"cpus"`
	Ioprio int   `json:"ioprio"`
}

type schedImage struct {
	Threads    map[string]schedThread `json:"threads"`
	TimerSlack map[string]uint64      `json:"timerslack_ns,omitempty"`
	Membarrier map[string]uint64      `json:"membarrier,omitempty"`
	XcompPerm  map[string]uint64      `json:"xcomp_perm,omitempty"`
}

// dumpSched reads the scheduling state of every thread of the tree.
func (d *dumpTree) dumpSched() (*schedImage, error) {
	img := &schedImage{Threads: map[string]schedThread{}, TimerSlack: map[string]uint64{}, Membarrier: map[string]uint64{}, XcompPerm: map[string]uint64{}}
	for _, p := range d.procs {
		if p.zombie {
			continue
		}
		if p.membarrier != 0 {
			img.Membarrier[strconv.Itoa(p.vpid)] = p.membarrier
		}
		if p.xcompPerm != 0 {
			img.XcompPerm[strconv.Itoa(p.vpid)] = p.xcompPerm
		}
		for _, th := range p.threads {
			var set unix.CPUSet
			if err := unix.SchedGetaffinity(th.tid, &set); err != nil {
				return nil, fmt.Errorf("task %d thread %d: CPU affinity: %w", p.pid, th.tid, err)
			}
			var cpus []int
			for c := 0; c < len(set)*64; c++ {
				if set.IsSet(c) {
					cpus = append(cpus, c)
				}
			}
			prio, _, errno := unix.Syscall(unix.SYS_IOPRIO_GET, 1 /* IOPRIO_WHO_PROCESS */, uintptr(th.tid), 0)
			if errno != 0 {
				return nil, fmt.Errorf("task %d thread %d: I/O priority: %w", p.pid, th.tid, errno)
			}
			img.Threads[strconv.Itoa(th.vtid)] = schedThread{CPUs: cpus, Ioprio: int(prio)}
		}
		b, err := proc.ReadFile(fmt.Sprintf("/proc/%d/timerslack_ns", p.pid))
		if err == nil {
			if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
				img.TimerSlack[strconv.Itoa(p.vpid)] = v
			}
		}
	}
	return img, nil
}

func writeSched(path string, img *schedImage) error {
	b, err := json.Marshal(img)
	if err != nil {
		return err
	}
	return images.WriteNewFile(path, b)
}

// readSched reads sched.json; a checkpoint without one keeps nothing.
func readSched(dir string) (*schedImage, error) {
	b, err := os.ReadFile(filepath.Join(dir, schedFile))
	if errors.Is(err, os.ErrNotExist) {
		return &schedImage{}, nil
	}
	if err != nil {
		return nil, err
	}
	var img schedImage
	if err := json.Unmarshal(b, &img); err != nil {
		return nil, corruptf(schedFile, "%v", err)
	}
	return &img, nil
}

// restoreSched gives thread tid (vtid in the image) its affinity and I/O
// priority; a process's main thread also its timer slack.
func restoreSched(img *schedImage, tid, vtid int, main bool, warnf func(string, ...any)) error {
	if st, ok := img.Threads[strconv.Itoa(vtid)]; ok {
		// What the thread may use now: the machine's CPUs, within its
		// cgroup's cpuset.
		var have, want unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &have); err != nil {
			return fmt.Errorf("thread %d: CPU affinity: %w", vtid, err)
		}
		for _, c := range st.CPUs {
			if c >= 0 && c < len(want)*64 && have.IsSet(c) {
				want.Set(c)
			}
		}
		if want.Count() == 0 {
			warnf("thread %d ran on CPUs %v, none of which this machine lets it use: it may run on any", vtid, st.CPUs)
		} else if err := unix.SchedSetaffinity(tid, &want); err != nil {
			return fmt.Errorf("thread %d: CPU affinity %v: %w", vtid, st.CPUs, err)
		}
		if _, _, errno := unix.Syscall(unix.SYS_IOPRIO_SET, 1 /* IOPRIO_WHO_PROCESS */, uintptr(tid), uintptr(st.Ioprio)); errno != 0 {
			return fmt.Errorf("thread %d: I/O priority %#x: %w", vtid, st.Ioprio, errno)
		}
	}
	if v, ok := img.TimerSlack[strconv.Itoa(vtid)]; ok && main {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/timerslack_ns", tid), []byte(strconv.FormatUint(v, 10)), 0); err != nil {
			return fmt.Errorf("task %d: timer slack %d ns: %w", vtid, v, err)
		}
	}
	return nil
}

// schedPolicyToImage is a thread's policy as CRIU's core keeps it in
// thread_core.sched_policy: what sched_getscheduler returns, the policy
// with SCHED_RESET_ON_FORK or'ed in (sched_getattr reports that flag
// apart, in SCHED_FLAG_RESET_ON_FORK).
func schedPolicyToImage(attr *unix.SchedAttr) uint32 {
	p := attr.Policy
	if attr.Flags&unix.SCHED_FLAG_RESET_ON_FORK != 0 {
		p |= unix.SCHED_RESET_ON_FORK
	}
	return p
}

// schedAttrFromImage is the sched_setattr argument that gives a thread
// back its policy, priority, nice value and reset-on-fork flag.
func schedAttrFromImage(tc *criucore.ThreadCoreEntry) unix.SchedAttr {
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: tc.GetSchedPolicy(), Nice: tc.GetSchedNice(), Priority: tc.GetSchedPrio()}
	if attr.Policy&unix.SCHED_RESET_ON_FORK != 0 {
		attr.Policy &^= unix.SCHED_RESET_ON_FORK
		attr.Flags |= unix.SCHED_FLAG_RESET_ON_FORK
	}
	return attr
}

// restoreMembarrier adds to b the calls that register process vpid for
// membarrier again as it was.
func restoreMembarrier(img *schedImage, b *batch, what map[int]string, vpid int) error {
	mask, ok := img.Membarrier[strconv.Itoa(vpid)]
	if !ok {
		return nil
	}
	if mask&^kernel.MembarrierRegistrations != 0 {
		return corruptf(schedFile, "task %d: membarrier registrations %#x", vpid, mask)
	}
	for bit := uint64(1); bit <= mask; bit <<= 1 {
		if mask&bit != 0 {
			what[b.add(unix.SYS_MEMBARRIER, bit, 0, 0)] = fmt.Sprintf("membarrier registration %#x", bit)
		}
	}
	return nil
}

// restoreXcompPerm adds to b the call that gives process vpid the
// dynamic XSAVE features it had (AMX's tile data).
func restoreXcompPerm(img *schedImage, b *batch, what map[int]string, vpid int) error {
	perm, ok := img.XcompPerm[strconv.Itoa(vpid)]
	if !ok {
		return nil
	}
	if perm&^xcompDynamic != 0 || perm == 0 {
		return corruptf(schedFile, "task %d: dynamic XSAVE features %#x", vpid, perm)
	}
	if cpuXsave().supported&perm != perm {
		return fmt.Errorf("task %d was given AMX's tile data (ARCH_REQ_XCOMP_PERM), which this CPU does not have", vpid)
	}
	what[b.add(unix.SYS_ARCH_PRCTL, archReqXcompPerm, xfeatureTileData)] = "the permission to use AMX's tile data (ARCH_REQ_XCOMP_PERM)"
	return nil
}
