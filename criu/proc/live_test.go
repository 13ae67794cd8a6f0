package proc

import (
	"cmp"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// liveVar is a Go variable whose address must fall inside a mapping of
// the test process.
var liveVar [4096]byte

// These tests read the test process's own files, which every user may
// read, so they run as root and as non-root.
func TestReadSelf(t *testing.T) {
	pid := os.Getpid()

	t.Run("status names this process", func(t *testing.T) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid := syscall.Gettid()
		s, err := ReadStatus(pid, tid)
		if err != nil {
			t.Fatal(err)
		}
		eq(t, "Tgid", s.Tgid, pid)
		eq(t, "Pid", s.Pid, tid)
		eq(t, "PPid", s.PPid, os.Getppid())
		eq(t, "real uid", s.Uid[0], uint32(os.Getuid()))
		eq(t, "effective gid", s.Gid[1], uint32(os.Getegid()))
		eq(t, "own pid namespace id", s.NSpid[len(s.NSpid)-1], tid)
		if s.Threads < 1 {
			t.Errorf("Threads = %d", s.Threads)
		}
	})

	t.Run("stat agrees with status", func(t *testing.T) {
		st, err := ReadStat(pid, pid)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ReadStatus(pid, pid)
		if err != nil {
			t.Fatal(err)
		}
		eq(t, "Pid", st.Pid, pid)
		eq(t, "PPid", st.PPid, os.Getppid())
		eq(t, "Comm", st.Comm, s.Name)
		pgrp, _ := syscall.Getpgid(0)
		eq(t, "Pgrp", st.Pgrp, pgrp)
		eq(t, "exit signal of a leader", st.ExitSignal, int(syscall.SIGCHLD))
	})

	t.Run("maps holds the address of a Go variable", func(t *testing.T) {
		ms, err := Maps(pid)
		if err != nil {
			t.Fatal(err)
		}
		addr := uint64(uintptr(unsafe.Pointer(&liveVar)))
		i := slices.IndexFunc(ms, func(m Mapping) bool { return m.Start <= addr && addr < m.End })
		if i < 0 {
			t.Fatalf("no mapping holds %#x", addr)
		}
		if m := ms[i]; !m.Read || !m.Write || m.Shared {
			t.Errorf("mapping of a global variable is %+v, want private read-write", m)
		}
		if !slices.IsSortedFunc(ms, func(a, b Mapping) int { return cmp.Compare(a.Start, b.Start) }) {
			t.Error("mappings are not in address order")
		}
	})

	t.Run("an opened file appears in Fds and its fdinfo has its position", func(t *testing.T) {
		f, err := os.Open("/proc/self/status")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Read(make([]byte, 7)); err != nil {
			t.Fatal(err)
		}
		fd := int(f.Fd())
		fds, err := Fds(pid)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(fds, fd) || !slices.IsSorted(fds) {
			t.Errorf("fds %v: want %d in a sorted list", fds, fd)
		}
		fi, err := ReadFdinfo(pid, fd)
		if err != nil {
			t.Fatal(err)
		}
		eq(t, "Pos", fi.Pos, 7)
		eq(t, "access mode and O_CLOEXEC", fi.Flags&(syscall.O_ACCMODE|syscall.O_CLOEXEC), syscall.O_RDONLY|syscall.O_CLOEXEC)
	})

	t.Run("this goroutine's thread is listed", func(t *testing.T) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tids, err := Threads(pid)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(tids, syscall.Gettid()) || !slices.Contains(tids, pid) || !slices.IsSorted(tids) {
			t.Errorf("threads %v: want %d and %d in a sorted list", tids, pid, syscall.Gettid())
		}
	})

	t.Run("limits agree with getrlimit", func(t *testing.T) {
		lims, err := ReadLimits(pid)
		if err != nil {
			t.Fatal(err)
		}
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			t.Fatal(err)
		}
		eq(t, "RLIMIT_NOFILE", lims[syscall.RLIMIT_NOFILE], Rlimit{rl.Cur, rl.Max})
	})

	t.Run("auxv holds the page size", func(t *testing.T) {
		words, err := ReadAuxv(pid)
		if err != nil {
			t.Fatal(err)
		}
		const atPagesz = 6
		for i := 0; i < len(words); i += 2 {
			if words[i] == atPagesz {
				eq(t, "AT_PAGESZ", words[i+1], uint64(os.Getpagesize()))
				return
			}
		}
		t.Errorf("no AT_PAGESZ in %v", words)
	})

	t.Run("personality agrees with personality(0xffffffff)", func(t *testing.T) {
		p, err := ReadPersonality(pid)
		if err != nil {
			t.Fatal(err)
		}
		want, _, errno := syscall.Syscall(syscall.SYS_PERSONALITY, 0xffffffff, 0, 0)
		if errno != 0 {
			t.Fatal(errno)
		}
		eq(t, "personality", p, uint32(want))
	})

	t.Run("pagemap shows a touched page present and an untouched guard absent", func(t *testing.T) {
		ps := os.Getpagesize()
		mem, err := syscall.Mmap(-1, 0, 3*ps, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Munmap(mem)
		// A transparent huge page would make the untouched page present.
		if err := syscall.Madvise(mem, syscall.MADV_NOHUGEPAGE); err != nil {
			t.Fatal(err)
		}
		mem[0] = 1
		start := uint64(uintptr(unsafe.Pointer(&mem[0])))
		r, err := OpenPagemap(pid)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		buf := make([]uint64, 0, 8)
		got, err := r.Read(start, start+3*uint64(ps), buf)
		if err != nil {
			t.Fatal(err)
		}
		eq(t, "entries", len(got), 3)
		if &got[0] != &buf[:1][0] {
			t.Error("Read did not reuse a buffer that was big enough")
		}
		if got[0]&PagemapPresent == 0 || got[0]&PagemapExclusive == 0 {
			t.Errorf("written page entry %#x: want present and exclusive", got[0])
		}
		if got[2]&(PagemapPresent|PagemapSwapped) != 0 {
			t.Errorf("untouched page entry %#x: want neither present nor swapped", got[2])
		}
		if _, err := r.Read(start+1, start+uint64(ps), nil); err == nil {
			t.Error("an unaligned start was accepted")
		}
	})

	t.Run("a read of many chunks returns one entry per page", func(t *testing.T) {
		r, err := OpenPagemap(pid)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		// An inaccessible reservation costs no memory and spans more
		// than two chunks, the last one partial.
		ps := os.Getpagesize()
		n := 2*pagemapChunk + 3
		mem, err := syscall.Mmap(-1, 0, n*ps, syscall.PROT_NONE, syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Munmap(mem)
		start := uint64(uintptr(unsafe.Pointer(&mem[0])))
		got, err := r.Read(start, start+uint64(n*ps), nil)
		if err != nil {
			t.Fatal(err)
		}
		eq(t, "entries", len(got), n)
		for i, e := range got {
			if e&(PagemapPresent|PagemapSwapped) != 0 {
				t.Fatalf("entry %d of an untouched reservation is %#x", i, e)
			}
		}
	})
}

func TestReadGoneProcess(t *testing.T) {
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Skip("cannot run /bin/true:", err)
	}
	gone := cmd.Process.Pid
	for _, tt := range []struct {
		name string
		read func() error
	}{
		{"maps of a reaped process is not found", func() error { _, err := Maps(gone); return err }},
		{"status of a reaped process is not found", func() error { _, err := ReadStatus(gone, gone); return err }},
		{"stat of a reaped process is not found", func() error { _, err := ReadStat(gone, gone); return err }},
		{"fdinfo of a reaped process is not found", func() error { _, err := ReadFdinfo(gone, 0); return err }},
		{"limits of a reaped process is not found", func() error { _, err := ReadLimits(gone); return err }},
		{"auxv of a reaped process is not found", func() error { _, err := ReadAuxv(gone); return err }},
		{"personality of a reaped process is not found", func() error { _, err := ReadPersonality(gone); return err }},
		{"pagemap of a reaped process is not found", func() error { _, err := OpenPagemap(gone); return err }},
		{"threads of a reaped process is not found", func() error { _, err := Threads(gone); return err }},
		{"fds of a reaped process is not found", func() error { _, err := Fds(gone); return err }},
		{"fdinfo of a closed fd is not found", func() error { _, err := ReadFdinfo(os.Getpid(), 1<<20); return err }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.read(); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("got %v, want an error that is os.ErrNotExist", err)
			}
		})
	}
}

// A task that exits between open and read makes read fail with ESRCH; the
// open *os.File here stands in for the open inside a Read function.
func TestExitBetweenOpenAndReadIsESRCH(t *testing.T) {
	cmd := exec.Command("/bin/sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skip("cannot run /bin/sleep:", err)
	}
	f, err := os.Open(pidFile(cmd.Process.Pid, "stat"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd.Process.Kill()
	cmd.Wait()
	_, err = parseStat(f, f.Name())
	if !errors.Is(err, syscall.ESRCH) {
		t.Errorf("got %v, want an error that is ESRCH", err)
	}
}

// TestReadVmFlagsOfSelf reads this process's smaps: a mapping with
// MADV_DONTFORK and MADV_WIPEONFORK shows both.
func TestReadVmFlagsOfSelf(t *testing.T) {
	m, err := unix.Mmap(-1, 0, 3*4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	// Only the middle page: the mapping is split in three.
	mid := m[4096 : 2*4096]
	if err := unix.Madvise(mid, unix.MADV_DONTFORK); err != nil {
		t.Fatal(err)
	}
	if err := unix.Madvise(mid, unix.MADV_WIPEONFORK); err != nil {
		t.Fatal(err)
	}
	flags, err := ReadVmFlags(unix.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	addr := func(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }
	if f := flags[addr(mid)]; !slices.Contains(f, "dc") || !slices.Contains(f, "wf") {
		t.Errorf("VmFlags of the middle page %v, want dc and wf", f)
	}
	// The first page may be part of a mapping below it; the last starts
	// where the middle one ends.
	if f, ok := flags[addr(m[2*4096:])]; !ok || slices.Contains(f, "dc") {
		t.Errorf("VmFlags of the last page %v (found %v), want it without dc", f, ok)
	}
}
