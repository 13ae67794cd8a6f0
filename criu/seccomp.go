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

// seccompChain returns the filters of a thread in filter mode, oldest
// first, by their indices in filters.
func seccompChain(tc *criucore.ThreadCoreEntry, filters []*seccompimg.SeccompFilter) ([]uint32, error) {
	var chain []uint32
	for i, n := tc.GetSeccompFilter(), 0; ; n++ {
		if int(i) >= len(filters) || n > len(filters) {
			return nil, corruptf(images.Seccomp.FileName(), "seccomp filter %d is not in it", i)
		}
		chain = append([]uint32{i}, chain...)
		f := filters[i]
		if f.Prev == nil {
			return chain, nil
		}
		i = f.GetPrev()
	}
}

// sharedSeccompPrefix returns the filters every thread of a process has
// at the start of its chain (by index: the image keeps one entry for a
// filter threads share). Installed in the main thread before the other
// threads are cloned, they are one filter object shared by all, as they
// were: a filter installed before pthread_create, or synchronised with
// SECCOMP_FILTER_FLAG_TSYNC. (Copies per thread would filter the same,
// but a later TSYNC then fails: the kernel accepts it only if every
// thread's filter is an ancestor of the caller's.)
func sharedSeccompPrefix(threads []*criucore.CoreEntry, filters []*seccompimg.SeccompFilter) ([]uint32, error) {
	var prefix []uint32
	for i, c := range threads {
		tc := c.GetThreadCore()
		if tc.GetSeccompMode() != criucore.SeccompMode_filter {
			return nil, nil
		}
		chain, err := seccompChain(tc, filters)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			prefix = chain
			continue
		}
		n := 0
		for n < len(prefix) && n < len(chain) && prefix[n] == chain[n] {
			n++
		}
		prefix = prefix[:n]
	}
	return prefix, nil
}

// installSharedSeccomp installs, in the main thread of t, the seccomp
// filters all its threads share, before they are cloned (see
// sharedSeccompPrefix); threadStateBatch adds each thread's own after.
// Remote calls are not filtered: ctcr traces the tasks with
// PTRACE_O_SUSPEND_SECCOMP.
//
// Preconditions: runs on the tracer thread; t has no thread but its main
// one yet.
func (t *restoringTask) installSharedSeccomp() error {
	if t.img.threads[0].GetThreadCore().GetSeccompMode() != criucore.SeccompMode_filter {
		return nil
	}
	filters, err := t.tree.seccompFilters()
	if err != nil {
		return err
	}
	prefix, err := sharedSeccompPrefix(t.img.threads, filters)
	if err != nil || len(prefix) == 0 {
		return err
	}
	b := t.ctl.newBatch()
	what := map[int]string{}
	if err := addSeccompFilters(b, what, filters, prefix); err != nil {
		return err
	}
	if res, err := b.run(); err != nil {
		return fmt.Errorf("%s: filters its threads share: %s: %w", t.where(), what[len(res)], err)
	}
	t.seccompShared = len(prefix)
	return nil
}

// addSeccompFilters queues in b the installation of the filters of
// chain (indices into filters), oldest first.
func addSeccompFilters(b *batch, what map[int]string, filters []*seccompimg.SeccompFilter, chain []uint32) error {
	const seccompSetModeFilter = 1
	for i, idx := range chain {
		f := filters[idx]
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

// restoreSeccomp queues in b the installation of a thread's seccomp
// state: strict mode, or its chain of filters, oldest first, but for the
// first skip ones, which the thread got from its main thread at clone
// (installSharedSeccomp).
func restoreSeccomp(b *batch, what map[int]string, tc *criucore.ThreadCoreEntry, filters []*seccompimg.SeccompFilter, skip int) error {
	const seccompSetModeStrict = 0
	switch tc.GetSeccompMode() {
	case criucore.SeccompMode_disabled:
		return nil
	case criucore.SeccompMode_strict:
		what[b.add(unix.SYS_SECCOMP, seccompSetModeStrict, 0, 0)] = "seccomp strict mode"
		return nil
	}
	chain, err := seccompChain(tc, filters)
	if err != nil {
		return err
	}
	if skip > len(chain) {
		return fmt.Errorf("thread shares %d seccomp filters but has %d", skip, len(chain))
	}
	return addSeccompFilters(b, what, filters, chain[skip:])
}
