package criu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/criu/ptrace"
)

// The splice write path of a stopped dump. The task itself vmsplices
// its pages into pipes (batched remote calls: one ptrace round trip
// moves a pipe group's worth), which puts references to its pages in
// the pipes and copies nothing; ctcr splices each pipe into the pages
// image at the right offset, which copies every page once, in the
// kernel, as dd's write does. process_vm_readv + pwrite copies twice
// and through ctcr's cache, and measured 0.55 of dd here.
//
//	task (stopped, runs a batch)         ctcr
//	  vmsplice(w0, iovecs of load 0) ─▶ pipe 0 ─▶ splice(r0, image@off) ─┐
//	  vmsplice(w1, iovecs of load 1) ─▶ pipe 1 ─▶ splice(r1, image@off) ─┤
//	  (then the next batch fills group 1 while ctcr empties group 0)     ▼
//	                                        CRC32C goroutine: pread the
//	                                        written window back from the
//	                                        page cache, in file order
//
// The pages stay consistent while they sit in a pipe because the whole
// tree is stopped until the dump ends. Runs read through /proc/PID/mem
// (unread: PROT_NONE, or pages mapped more than once, which a page
// reference would not break) go through ctcr as in the copy path.
//
// The pipes are the task's own: no call puts an fd into another
// process's table, and a task in a container cannot open ctcr's
// /proc/PID/fd. One batch makes them with pipe2, moves both ends to
// fds from spliceFdBase up with F_DUPFD_CLOEXEC and closes the ones
// pipe2 took; ctcr takes the read ends with pidfd_getfd. The task keeps
// its read ends so that a pipe never loses its last reader while the
// task may vmsplice into it: ctcr dying mid-batch would otherwise have
// the kernel send the task SIGPIPE. The last batch closes them all.
//
// Residue if ctcr is killed between those two batches: 2*spliceGroupPipes*
// spliceGroups fds of the task, numbered from spliceFdBase (or the task's
// RLIMIT_NOFILE less that many, if lower) up, close-on-exec, the two ends
// of pipes that hold at most spliceGroupPipes*spliceGroups*splicePipeSize
// bytes of references to the task's own pages. Nothing else: the task
// runs on with its registers, memory and signal mask (the runner's
// ctcr-death path), and the next dump of it saves the fds as pipes.

const (
	// splicePipeSize is what F_SETPIPE_SZ gives without CAP_SYS_RESOURCE
	// (fs.pipe-max-size's default); ctcr does not change the sysctl.
	splicePipeSize = 1 << 20
	// spliceGroups groups of pipes: the task fills one while ctcr
	// empties the other.
	spliceGroups = 2
	// spliceFdBase is the lowest fd the task's pipe ends go to: far from
	// the ones a program uses, not so far that its fd table grows much.
	spliceFdBase = 1000
	// spliceMinBytes: smaller images keep the copy path, for which the
	// two batches that make and close the pipes cost more than they save.
	spliceMinBytes = 4 << 20
)

// spliceGroupPipes pipes are filled by one batch: CTCR_SPLICE_PIPES, a
// dev knob for the bench, from 1 to 8.
var spliceGroupPipes = func() int {
	if n, err := strconv.Atoi(os.Getenv("CTCR_SPLICE_PIPES")); err == nil && n >= 1 && n <= 8 {
		return n
	}
	return 2
}()

// pagePath returns the dump's page write path: "copy" (the default:
// process_vm_readv into ctcr's buffers, pagesink.go) or "splice". A dev
// knob, CTCR_PAGE_PATH, for benchmarks and tests. The copy path stays
// the default: side by side the splice path measured no faster (the
// CRC32C read-back is its second copy), and a ctcr killed mid-splice
// leaves pipe fds in the task, the copy path nothing.
func pagePath() string {
	if os.Getenv("CTCR_PAGE_PATH") == "splice" {
		return "splice"
	}
	return "copy"
}

// spliceWorth reports whether p's pages image at path, total bytes,
// goes through the splice path: a raw image in a file (a compressed or
// streamed one goes through ctcr's buffers anyway) of a process whose
// scratch area and runner are still there (a killing dump keeps them,
// keepScratch).
func spliceWorth(p *dumpProc, total uint64, path string) bool {
	if pagePath() != "splice" || total < spliceMinBytes || strings.HasSuffix(path, zstdSuffix) || pageStreamFor(path) != nil {
		return false
	}
	c := p.leader().ctl
	return c != nil && c.runner != 0 && c.r.Own != nil && c.size/2/16/uint64(spliceGroupPipes) >= 64
}

// dumpPages writes the pages image of p, stopped, at path: through the
// splice path when spliceWorth says so, else through writePages. It
// returns the pagemap entries and the bytes of the image.
func (p *dumpProc) dumpPages(tr *ptrace.Tracer, runs []pageRun, path string, pr *progress, logf func(string, ...any)) ([]*pagemap.PagemapEntry, uint64, error) {
	entries, total := pagemapEntries(runs)
	if !spliceWorth(p, total, path) {
		return writePages(p.pid, runs, path, pr)
	}
	start := time.Now()
	if err := writePagesSplice(tr, p, runs, path, pr); err != nil {
		var se *spliceSetupError
		if !errors.As(err, &se) {
			return nil, 0, err
		}
		// No pipes (the task's fd limit, say): the copy path needs none.
		logf("task %d: pages through ctcr's buffers: %v", p.pid, err)
		return writePages(p.pid, runs, path, pr)
	}
	logf("task %d: %d bytes of pages spliced in %v", p.pid, total, time.Since(start))
	return entries, total, nil
}

// spliceSetupError says that the task could not be given its pipes;
// nothing was written, and the copy path can go instead.
type spliceSetupError struct{ err error }

func (e *spliceSetupError) Error() string { return e.err.Error() }
func (e *spliceSetupError) Unwrap() error { return e.err }

// spliceSeg is a piece of the image: n bytes at off in the file, from
// addr in the task.
type spliceSeg struct {
	addr uint64
	off  int64
	n    uint64
}

// spliceLoad is what one vmsplice puts in one pipe (segs), or, with
// mem, a piece ctcr reads through /proc/PID/mem itself.
type spliceLoad struct {
	segs []spliceSeg
	mem  bool
}

// planSplice cuts runs (in image order, from offset 0) into loads of at
// most pipeSize bytes.
func planSplice(runs []pageRun, pipeSize uint64, maxSegs int) []spliceLoad {
	var loads []spliceLoad
	var off int64
	fill := pipeSize // bytes in the last pipe load
	for _, r := range runs {
		addr, left := r.addr, r.npages*pageSize
		if r.unread {
			loads = append(loads, spliceLoad{mem: true, segs: []spliceSeg{{addr: addr, off: off, n: left}}})
			off += int64(left)
			fill = pipeSize
			continue
		}
		for left > 0 {
			if fill == pipeSize || len(loads[len(loads)-1].segs) == maxSegs {
				loads = append(loads, spliceLoad{})
				fill = 0
			}
			l := &loads[len(loads)-1]
			k := min(left, pipeSize-fill)
			l.segs = append(l.segs, spliceSeg{addr: addr, off: off, n: k})
			fill += k
			addr, off, left = addr+k, off+int64(k), left-k
		}
	}
	return loads
}

// taskPipes are the pipes of one splice dump: ctcr's read ends, and the
// task's fds (both ends of each, see the package comment).
type taskPipes struct {
	ours  []int // read ends, ctcr's
	write []int // write ends, the task's
	read  []int // read ends, the task's
	size  uint64
}

// openTaskPipes has p's main thread make n pipes and takes their read
// ends.
//
// Preconditions: runs on the tracer thread; p's scratch area is mapped.
func openTaskPipes(p *dumpProc, n int) (*taskPipes, error) {
	c := p.leader().ctl
	// pipe2 takes the lowest free fds, which the listing of the stopped
	// fd table (every task sharing it is stopped) tells in advance, so
	// that one batch can move them up and close them: a ctcr that dies
	// leaves no fd at a number the program may expect free.
	fds, err := proc.Fds(p.pid)
	if err != nil {
		return nil, fmt.Errorf("task %d: %w", p.pid, err)
	}
	var lim unix.Rlimit
	if err := unix.Prlimit(p.pid, unix.RLIMIT_NOFILE, nil, &lim); err != nil {
		return nil, fmt.Errorf("task %d: RLIMIT_NOFILE: %w", p.pid, err)
	}
	var low []int
	for fd, i := 0, 0; len(low) < 2*n; fd++ {
		for i < len(fds) && fds[i] < fd {
			i++
		}
		if i < len(fds) && fds[i] == fd {
			continue
		}
		low = append(low, fd)
	}
	base := int(min(lim.Cur, spliceFdBase+uint64(2*n))) - 2*n
	if base <= low[len(low)-1] {
		return nil, &spliceSetupError{fmt.Errorf("task %d: RLIMIT_NOFILE %d leaves no room for %d pipe fds", p.pid, lim.Cur, 2*n)}
	}
	b := c.newBatch()
	at, err := b.space(uint64(8 * n))
	if err != nil {
		return nil, err
	}
	for i := range n {
		b.add(unix.SYS_PIPE2, at+uint64(8*i), unix.O_CLOEXEC)
	}
	for _, fd := range low {
		b.add(unix.SYS_FCNTL, uint64(fd), unix.F_DUPFD_CLOEXEC, uint64(base))
	}
	for _, fd := range low {
		b.add(unix.SYS_CLOSE, uint64(fd))
	}
	res, err := b.run()
	tp := &taskPipes{}
	if err != nil {
		// Close what the batch made before it stopped: the pipes still
		// at the fds pipe2 took, and the ends it moved up.
		cb := c.newBatch()
		for j := max(0, len(res)-3*n); j < 2*min(n, len(res)); j++ {
			cb.add(unix.SYS_CLOSE, uint64(low[j]))
		}
		for j := range min(2*n, max(0, len(res)-n)) {
			cb.add(unix.SYS_CLOSE, res[n+j])
		}
		if _, cerr := cb.run(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, &spliceSetupError{fmt.Errorf("task %d: make pipes for its pages: %w", p.pid, err)}
	}
	// What the batch moved up before it stopped, the task's to close.
	for j := range min(len(low), max(0, len(res)-n)) {
		if j%2 == 0 {
			tp.read = append(tp.read, int(res[n+j]))
		} else {
			tp.write = append(tp.write, int(res[n+j]))
		}
	}
	got, err := b.readBack()
	if err != nil {
		return tp, err
	}
	for i := range 2 * n {
		if fd := int(int32(binary.LittleEndian.Uint32(got[at-c.scratch+uint64(4*i):]))); fd != low[i] {
			// Cannot be while the fd table is stopped; the closes then
			// hit fds of the task's: say so loudly.
			return tp, fmt.Errorf("task %d: pipe2 took fd %d, not %d as its fd table said: the fd table changed under ctcr", p.pid, fd, low[i])
		}
	}
	pidfd, err := unix.PidfdOpen(p.pid, 0)
	if err != nil {
		return tp, fmt.Errorf("task %d: pidfd_open: %w", p.pid, err)
	}
	defer unix.Close(pidfd)
	tp.size = splicePipeSize
	for _, fd := range tp.read {
		ours, err := unix.PidfdGetfd(pidfd, fd, 0)
		if err != nil {
			return tp, fmt.Errorf("task %d fd %d: pidfd_getfd: %w", p.pid, fd, err)
		}
		unix.CloseOnExec(ours)
		tp.ours = append(tp.ours, ours)
		// Done by ctcr, whose CAP_SYS_ADMIN lifts the per-user pipe
		// limits the task's user may be over; the kernel rounds up to
		// a power of two of pages, never above pipe-max-size.
		sz, err := unix.FcntlInt(uintptr(ours), unix.F_SETPIPE_SZ, splicePipeSize)
		if err != nil {
			if sz, err = unix.FcntlInt(uintptr(ours), unix.F_GETPIPE_SZ, 0); err != nil {
				return tp, fmt.Errorf("task %d fd %d: F_GETPIPE_SZ: %w", p.pid, fd, err)
			}
		}
		tp.size = min(tp.size, uint64(sz))
	}
	return tp, nil
}

// close closes ctcr's read ends and has the task close its fds.
//
// Preconditions: runs on the tracer thread; p's scratch area is mapped.
func (tp *taskPipes) close(p *dumpProc) error {
	if tp == nil {
		return nil
	}
	for _, fd := range tp.ours {
		unix.Close(fd)
	}
	tp.ours = nil
	b := p.leader().ctl.newBatch()
	for _, fd := range append(tp.read, tp.write...) {
		b.add(unix.SYS_CLOSE, uint64(fd))
	}
	tp.read, tp.write = nil, nil
	if _, err := b.run(); err != nil {
		return fmt.Errorf("task %d: close the pipes of its pages: %w", p.pid, err)
	}
	return nil
}

// spliceJob is a batch's pipe loads for the splicer (group g), or one
// mem load.
type spliceJob struct {
	g     int
	loads []spliceLoad
}

// writePagesSplice writes the pages image at path from p's runs that
// are not left to a parent image, through pipes p fills (see the
// package comment).
func writePagesSplice(tr *ptrace.Tracer, p *dumpProc, runs []pageRun, path string, pr *progress) error {
	var copied []pageRun
	for _, r := range runs {
		if !r.inParent && !r.preCopied {
			copied = append(copied, r)
		}
	}
	dir, name := filepath.Dir(path), filepath.Base(path)
	f, err := images.CreateFile(path, os.O_RDWR)
	if err != nil {
		return images.WriteError(dir, name, err)
	}
	sp := &splicer{f: f, dir: dir, name: name, pid: p.pid}
	err = tr.Do(func() error { return sp.run(p, copied, pr) })
	if err == nil {
		err = sp.err()
	}
	if err == nil {
		if err = f.Truncate(sp.size); err != nil {
			err = images.WriteError(dir, name, err)
		}
	}
	if err == nil {
		err = images.RecordSum(f, sp.crc)
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = images.WriteError(dir, name, cerr)
	}
	if err != nil {
		// The copy path may go next and creates the image anew.
		os.Remove(path)
	}
	return err
}

// splicer moves one image's pages.
type splicer struct {
	f         *os.File
	dir, name string // for messages; immutable
	pid       int    // immutable
	size      int64  // of the image, set by run
	crc       uint32 // of the image, the CRC goroutine's until run returns

	mu     sync.Mutex
	failed error // the splicer's or CRC goroutine's first error; guarded by mu
	stop   atomic.Bool
}

func (sp *splicer) setErr(err error) {
	sp.mu.Lock()
	if sp.failed == nil {
		sp.failed = err
	}
	sp.mu.Unlock()
	sp.stop.Store(true)
}

func (sp *splicer) err() error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.failed
}

// run makes the pipes, has the task fill a group per batch while a
// goroutine splices the other group's into the image, and another
// checksums what is written, then closes the pipes.
//
// Preconditions: runs on the tracer thread; p's scratch area is mapped.
func (sp *splicer) run(p *dumpProc, runs []pageRun, pr *progress) (err error) {
	npipes := spliceGroupPipes * spliceGroups
	tp, err := openTaskPipes(p, npipes)
	defer func() {
		if cerr := tp.close(p); err == nil {
			err = cerr
		}
	}()
	if err != nil {
		return err
	}
	// A batch's iovecs share the data half of the scratch area.
	loads := planSplice(runs, tp.size, int(p.leader().ctl.size/2)/16/spliceGroupPipes-4)
	for _, l := range loads {
		for _, s := range l.segs {
			sp.size = max(sp.size, s.off+int64(s.n))
		}
	}
	jobs := make(chan spliceJob, spliceGroups)
	free := make(chan int, spliceGroups)
	for g := range spliceGroups {
		free <- g
	}
	written := make(chan spliceSeg, 64)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer close(written)
		sp.spliceAll(tp, jobs, free, written)
	}()
	go func() {
		defer wg.Done()
		sp.checksum(written)
	}()
	err = sp.feed(p, tp, loads, jobs, free, pr)
	close(jobs)
	wg.Wait()
	// The image's error first: a full disk stops the splicer, whose
	// pipes then stay full and fail the task's next vmsplice.
	if serr := sp.err(); serr != nil {
		return serr
	}
	return err
}

// feed has the task vmsplice loads into free pipe groups and hands
// each filled group, and each mem load, to the splicer in image order.
//
// Preconditions: runs on the tracer thread.
func (sp *splicer) feed(p *dumpProc, tp *taskPipes, loads []spliceLoad, jobs chan<- spliceJob, free <-chan int, pr *progress) error {
	c := p.leader().ctl
	kill := testKillInSplice()
	batches := 0
	for i := 0; i < len(loads); {
		if err := Interrupted(); err != nil {
			return err
		}
		if sp.stop.Load() {
			return nil // the splicer's error
		}
		if loads[i].mem {
			jobs <- spliceJob{loads: loads[i : i+1]}
			pr.add(loads[i].segs[0].n)
			i++
			continue
		}
		g := <-free
		if sp.stop.Load() {
			return nil // the splicer's error
		}
		b := c.newBatch()
		var group []spliceLoad
		var want []uint64
		for ; i < len(loads) && !loads[i].mem && len(group) < spliceGroupPipes; i++ {
			l := loads[i]
			iov := make([]byte, 16*len(l.segs))
			var n uint64
			for k, s := range l.segs {
				binary.LittleEndian.PutUint64(iov[16*k:], s.addr)
				binary.LittleEndian.PutUint64(iov[16*k+8:], s.n)
				n += s.n
			}
			at, err := b.put(iov)
			if err != nil {
				return err
			}
			// Never blocks: the pipe is empty and the load fits it. A
			// task that lost ctcr mid-batch finds its own read end open,
			// so no SIGPIPE either.
			b.add(unix.SYS_VMSPLICE, uint64(tp.write[g*spliceGroupPipes+len(group)]), at, uint64(len(l.segs)), unix.SPLICE_F_NONBLOCK)
			group = append(group, l)
			want = append(want, n)
		}
		if batches++; batches == kill {
			// A dying ctcr's files are closed before its tracees are
			// detached (exit_files, then exit_notify): the task may run
			// the batch with ctcr's read ends gone. Make it so.
			for _, fd := range tp.ours {
				unix.Close(fd)
			}
		}
		br, err := b.start()
		if err != nil {
			return fmt.Errorf("task %d: %w", p.pid, err)
		}
		if batches == kill {
			unix.Kill(os.Getpid(), unix.SIGKILL)
		}
		res, err := br.wait()
		if err != nil {
			// The pipes of the group may hold pages: the splicer never
			// sees them, close drops them.
			return fmt.Errorf("task %d: vmsplice its pages at %#x: %w", p.pid, group[len(res)].segs[0].addr, err)
		}
		for k, n := range res {
			if n != want[k] {
				return fmt.Errorf("task %d: vmsplice of its pages at %#x moved %d of %d bytes", p.pid, group[k].segs[0].addr, n, want[k])
			}
			pr.add(n)
		}
		jobs <- spliceJob{g: g, loads: group}
	}
	return nil
}

// spliceAll empties each job's pipes into the image at the loads'
// offsets (or reads a mem load through /proc/PID/mem and writes it),
// gives the group back, and reports each written segment in order.
// After an error it only gives groups back.
func (sp *splicer) spliceAll(tp *taskPipes, jobs <-chan spliceJob, free chan<- int, written chan<- spliceSeg) {
	var mem *os.File
	var buf *pageBuf
	defer func() {
		if mem != nil {
			mem.Close()
		}
		if buf != nil {
			putPageBuf(buf)
		}
	}()
	for j := range jobs {
		if !sp.stop.Load() {
			if err := sp.spliceJob(tp, j, &mem, &buf, written); err != nil {
				sp.setErr(err)
			}
		}
		if !j.loads[0].mem {
			free <- j.g
		}
	}
}

func (sp *splicer) spliceJob(tp *taskPipes, j spliceJob, mem **os.File, buf **pageBuf, written chan<- spliceSeg) error {
	if j.loads[0].mem {
		s := j.loads[0].segs[0]
		if *mem == nil {
			m, err := os.Open(fmt.Sprintf("/proc/%d/mem", sp.pid))
			if err != nil {
				return fmt.Errorf("task %d: %w", sp.pid, err)
			}
			*mem = m
		}
		if *buf == nil {
			b, err := getPageBuf()
			if err != nil {
				return err
			}
			if b == nil {
				return errors.New("page buffers all in use")
			}
			*buf = b
		}
		for done := uint64(0); done < s.n; {
			k := min(s.n-done, uint64(len((*buf).b)))
			dst := (*buf).b[:k]
			// /proc/PID/mem reads a PROT_NONE page as ptrace does, and
			// a page mapped twice without breaking its sharing.
			if _, err := (*mem).ReadAt(dst, int64(s.addr+done)); err != nil {
				return fmt.Errorf("task %d: read memory at %#x through /proc/%d/mem: %w", sp.pid, s.addr+done, sp.pid, err)
			}
			if err := pwriteAll(sp.f, dst, s.off+int64(done)); err != nil {
				return images.WriteError(sp.dir, sp.name, err)
			}
			done += k
		}
		written <- s
		return nil
	}
	for k, l := range j.loads {
		r := tp.ours[j.g*spliceGroupPipes+k]
		for _, s := range l.segs {
			off := s.off
			for left := int(s.n); left > 0; {
				n, err := unix.Splice(r, nil, int(sp.f.Fd()), &off, left, unix.SPLICE_F_MOVE)
				if err == unix.EINTR {
					continue
				}
				if err == nil && n == 0 {
					err = errors.New("the pipe ran dry")
				}
				if err != nil {
					return images.WriteError(sp.dir, sp.name, fmt.Errorf("splice at offset %d: %w", off, err))
				}
				left -= int(n)
			}
			written <- s
		}
	}
	return nil
}

// checksum computes the image's CRC32C from the written segments, which
// come in file order, each right after the one before: it reads them
// back from the page cache (no allocation, a copy into a buffer that
// stays in this core's cache) on the core the splicer does not use.
func (sp *splicer) checksum(written <-chan spliceSeg) {
	var buf *pageBuf
	defer func() {
		if buf != nil {
			putPageBuf(buf)
		}
	}()
	for s := range written {
		if sp.stop.Load() {
			continue
		}
		if buf == nil {
			b, err := getPageBuf()
			if err == nil && b == nil {
				err = errors.New("page buffers all in use")
			}
			if err != nil {
				sp.setErr(err)
				continue
			}
			buf = b
		}
		for done := uint64(0); done < s.n; {
			k := min(s.n-done, uint64(len(buf.b)))
			n, err := sp.f.ReadAt(buf.b[:k], s.off+int64(done))
			if err != nil || uint64(n) != k {
				sp.setErr(images.WriteError(sp.dir, sp.name, fmt.Errorf("read back at offset %d: %w", s.off+int64(done), err)))
				break
			}
			sp.crc = crc32.Update(sp.crc, images.Castagnoli, buf.b[:k])
			done += k
		}
	}
}

// testKillInSplice is a test hook: CTCR_TEST_KILL_IN_SPLICE=N makes
// ctcr close its read ends of the pipes, let the task start its Nth
// batch of vmsplice calls and kill itself with SIGKILL, to show that the
// task runs on with its memory and fd table as they were, but for the
// documented residue.
func testKillInSplice() int {
	n, _ := strconv.Atoi(os.Getenv("CTCR_TEST_KILL_IN_SPLICE"))
	return n
}
