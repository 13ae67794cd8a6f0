package criu

import (
	"errors"
	"fmt"
	"os"

	criucore "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	seccompimg "github.com/checkpoint-restore/go-criu/v7/crit/images/seccomp"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/criu/ptrace"
)

// Seccomp: a thread's mode (strict or filter) and, in filter mode, its
// chain of BPF filters, oldest first, as ptrace reads them
// (PTRACE_SECCOMP_GET_FILTER). The images are CRIU's:
//
//	seccomp.img:  SeccompEntry{seccomp_filters: every distinct filter,
//	              each with the index of the one before it in its chain
//	              (prev, absent for the oldest)}
//	core-TID.img: thread_core.seccomp_mode, and seccomp_filter: the index
//	              of the thread's newest filter
//
// Threads that share a chain (filters installed before they were made,
// or with SECCOMP_FILTER_FLAG_TSYNC) share its entries.
//
// ctcr never runs under a task's filters: dump and restore trace the
// tasks with PTRACE_O_SUSPEND_SECCOMP, so the remote syscalls they run
// in a task are not filtered. Restore installs each thread's chain
// before it sets the thread's credentials (the restored task still has
// the capabilities installing a filter without no_new_privs needs); the
// filters apply once ctcr lets the tasks go.

// seccompTable collects the filters of a dump.
type seccompTable struct {
	filters []*seccompimg.SeccompFilter
	index   map[string]uint32 // prev index and program -> index
}

// chainOf reads thread tid's filter chain into t and returns the index
// of its newest filter. The thread must be stopped.
func (t *seccompTable) chainOf(tid int) (uint32, error) {
	var progs [][]byte
	for i := 0; ; i++ {
		p, err := ptrace.SeccompFilter(tid, i)
		if errors.Is(err, unix.ENOENT) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("thread %d: seccomp filter %d: %w", tid, i, err)
		}
		progs = append(progs, p)
	}
	if len(progs) == 0 {
		return 0, fmt.Errorf("thread %d: in seccomp filter mode without a filter", tid)
	}
	if t.index == nil {
		t.index = map[string]uint32{}
	}
	var prev *uint32
	var at uint32
	for i := len(progs) - 1; i >= 0; i-- { // oldest first
		key := fmt.Sprintf("%v:%x", prev != nil, progs[i])
		if prev != nil {
			key = fmt.Sprintf("%d:%x", *prev, progs[i])
		}
		idx, ok := t.index[key]
		if !ok {
			idx = uint32(len(t.filters))
			t.filters = append(t.filters, &seccompimg.SeccompFilter{Filter: progs[i], Prev: prev, Flags: proto.Uint32(0)})
			t.index[key] = idx
		}
		at = idx
		prev = proto.Uint32(idx)
	}
	return at, nil
}

// dumpSeccomp fills the seccomp fields of thread tid's core.
func (t *seccompTable) dumpSeccomp(st *proc.Status, tid int, tc *criucore.ThreadCoreEntry) error {
	switch st.Seccomp {
	case 0:
		return nil
	case 1:
		tc.SeccompMode = criucore.SeccompMode_strict.Enum()
	case 2:
		at, err := t.chainOf(tid)
		if err != nil {
			return err
		}
		tc.SeccompMode, tc.SeccompFilter = criucore.SeccompMode_filter.Enum(), proto.Uint32(at)
	default:
		return fmt.Errorf("thread %d: seccomp mode %d: %w", tid, st.Seccomp, ErrUnsupported)
	}
	return nil
}

// seccompChains reads seccomp.img (absent: no filters) for restore.
func seccompFilters(dir string) ([]*seccompimg.SeccompFilter, error) {
	e := &seccompimg.SeccompEntry{}
	err := images.ReadOne(dir+"/"+images.Seccomp.FileName(), images.Seccomp, e)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	for i, f := range e.GetSeccompFilters() {
		if len(f.GetFilter()) == 0 || len(f.GetFilter())%8 != 0 || len(f.GetFilter()) > 4096*8 || (f.Prev != nil && f.GetPrev() >= uint32(i)) {
			return nil, corruptf(images.Seccomp.FileName(), "filter %d: %d bytes, prev %v", i, len(f.GetFilter()), f.Prev)
		}
	}
	return e.GetSeccompFilters(), nil
}

// restoreSeccomp queues in b the installation of a thread's seccomp
// state: strict mode, or its chain of filters, oldest first.
func restoreSeccomp(b *batch, what map[int]string, tc *criucore.ThreadCoreEntry, filters []*seccompimg.SeccompFilter) error {
	const (
		seccompSetModeStrict = 0
		seccompSetModeFilter = 1
	)
	switch tc.GetSeccompMode() {
	case criucore.SeccompMode_disabled:
		return nil
	case criucore.SeccompMode_strict:
		what[b.add(unix.SYS_SECCOMP, seccompSetModeStrict, 0, 0)] = "seccomp strict mode"
		return nil
	}
	var chain []*seccompimg.SeccompFilter
	for i, n := tc.GetSeccompFilter(), 0; ; n++ {
		if int(i) >= len(filters) || n > len(filters) {
			return corruptf(images.Seccomp.FileName(), "seccomp filter %d is not in it", i)
		}
		f := filters[i]
		chain = append([]*seccompimg.SeccompFilter{f}, chain...)
		if f.Prev == nil {
			break
		}
		i = f.GetPrev()
	}
	for i, f := range chain {
		prog, err := b.put(f.GetFilter())
		if err != nil {
			return err
		}
		// struct sock_fprog: unsigned short len, pad, the filter's address.
		var fprog [16]byte
		n := len(f.GetFilter()) / 8
		fprog[0], fprog[1] = byte(n), byte(n>>8)
		for j := 0; j < 8; j++ {
			fprog[8+j] = byte(prog >> (8 * j))
		}
		fp, err := b.put(fprog[:])
		if err != nil {
			return err
		}
		what[b.add(unix.SYS_SECCOMP, seccompSetModeFilter, uint64(f.GetFlags()), fp)] = fmt.Sprintf("seccomp filter %d of %d", i+1, len(chain))
	}
	return nil
}
