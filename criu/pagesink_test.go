package criu

import (
	"bytes"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/images"
)

// TestCopyRunsOwnMemory copies runs of this process's own memory, some
// through process_vm_readv, some through /proc/PID/mem and some from a
// file of pages saved earlier, across several buffers, with one copier
// (the reader and writer pipeline) and with several at once, and checks
// the image and its checksum byte for byte: the images are identical
// whoever wrote which chunk.
func TestCopyRunsOwnMemory(t *testing.T) {
	const n = 9*pageBufSize/pageSize + 3 // pages: more than the buffers hold
	mem, err := unix.Mmap(-1, 0, n*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	for i := range mem {
		mem[i] = byte(i*131 + i/pageSize)
	}
	base := uint64(uintptr(unsafe.Pointer(&mem[0])))
	runs := []pageRun{
		{addr: base, npages: 1},
		{addr: base + 2*pageSize, npages: 300, unread: true},
		{addr: base + 302*pageSize, npages: 700},
		// Saved while "stopped": the file holds other bytes than the
		// memory, and the image must hold the file's.
		{addr: base + 1002*pageSize, npages: 400, noFork: true},
		{addr: base + 1402*pageSize, npages: 1},
		{addr: base + 1404*pageSize, npages: 300, noFork: true},
		{addr: base + 1704*pageSize, npages: n - 1704 - 1},
	}
	saved, err := os.Create(filepath.Join(t.TempDir(), "saved"))
	if err != nil {
		t.Fatal(err)
	}
	defer saved.Close()
	var want []byte
	for _, r := range runs {
		off := r.addr - base
		b := mem[off : off+r.npages*pageSize]
		if r.noFork {
			b = bytes.Repeat([]byte{byte(r.addr / pageSize), 0x5a}, len(b)/2)
			if _, err := saved.Write(b); err != nil {
				t.Fatal(err)
			}
		}
		want = append(want, b...)
	}
	for _, copiers := range []string{"1", "2", "3", "4"} {
		t.Run(copiers+" copiers", func(t *testing.T) {
			t.Setenv("CTCR_PAGE_COPIERS", copiers)
			path := filepath.Join(t.TempDir(), "pages-1.img")
			s, err := newPageSink(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := copyRunsFrom(pageSource{pid: os.Getpid(), saved: saved}, runs, s, nil); err != nil {
				s.abort()
				t.Fatal(err)
			}
			if err := s.close(); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				at := 0
				for at < min(len(got), len(want)) && got[at] == want[at] {
					at++
				}
				t.Fatalf("the image (%d bytes) differs from the memory (%d bytes) from byte %d on", len(got), len(want), at)
			}
			if s.crc != crc32.Checksum(want, images.Castagnoli) {
				t.Errorf("checksum %08x, want %08x", s.crc, crc32.Checksum(want, images.Castagnoli))
			}
			if len(pageBufPool.bufs) != pageBufPool.made {
				t.Errorf("%d of %d page buffers are back in the pool", len(pageBufPool.bufs), pageBufPool.made)
			}
		})
	}
}

// TestPageSinkFullDisk: a write error stops the copy at once, with the
// errno, and every buffer comes back.
func TestPageSinkFullDisk(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	mem := make([]byte, 8<<20)
	runs := []pageRun{{addr: uint64(uintptr(unsafe.Pointer(&mem[0])))&^(pageSize-1) + pageSize, npages: uint64(len(mem))/pageSize - 1}}
	for _, how := range []string{"process_vm_readv", "copyRunning"} {
		path := filepath.Join(dir, "pages-1.img")
		var err error
		if how == "copyRunning" {
			_, _, _, err = copyRunning(os.Getpid(), runs, path, nil)
		} else {
			_, _, err = writePages(os.Getpid(), runs, path, nil)
		}
		if !errors.Is(err, unix.ENOSPC) {
			t.Errorf("%s: error %v, want ENOSPC", how, err)
		}
		if len(pageBufPool.bufs) != pageBufPool.made {
			t.Errorf("%s: %d of %d page buffers are back in the pool", how, len(pageBufPool.bufs), pageBufPool.made)
		}
		os.Remove(path)
	}
}

// BenchmarkPageCopy copies 256 MiB of this process's memory into a
// pages image in /dev/shm with each variant of the write path, and
// writes as much with plain pwrite from a zero buffer (dd's work), all
// in the same iteration, so a busy machine slows them alike; it reports
// each variant's time as a ratio of dd's (>= 1 is slower than dd). Run
// with: go test -run - -bench PageCopy -benchtime 10x ./criu/
func BenchmarkPageCopy(b *testing.B) {
	const size = 256 << 20
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Munmap(mem)
	for i := 0; i < len(mem); i += 8 {
		mem[i] = byte(i >> 12)
	}
	dir, err := os.MkdirTemp("/dev/shm", "ctcr-bench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	runs := []pageRun{{addr: uint64(uintptr(unsafe.Pointer(&mem[0]))), npages: size / pageSize}}
	path := filepath.Join(dir, "pages-1.img")
	variants := []struct{ name, copiers, writer string }{
		{"pipeline", "1", ""},
		{"readers+writer", "", ""},
		{"self-writers", "", "self"},
	}
	sums := make([]float64, len(variants))
	var ddSum float64
	zero := make([]byte, pageBufSize)
	for it := 0; it < b.N; it++ {
		start := time.Now()
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		for off := int64(0); off < size; off += pageBufSize {
			if err := pwriteAll(f, zero, off); err != nil {
				b.Fatal(err)
			}
		}
		f.Close()
		os.Remove(path)
		dd := time.Since(start).Seconds()
		ddSum += dd
		for k, v := range variants {
			b.Setenv("CTCR_PAGE_COPIERS", v.copiers)
			b.Setenv("CTCR_PAGE_WRITER", v.writer)
			start := time.Now()
			s, err := newPageSink(path)
			if err != nil {
				b.Fatal(err)
			}
			if err := copyRunsFrom(pageSource{pid: os.Getpid()}, runs, s, nil); err != nil {
				s.abort()
				b.Fatal(err)
			}
			if err := s.close(); err != nil {
				b.Fatal(err)
			}
			os.Remove(path)
			sums[k] += time.Since(start).Seconds() / dd
		}
	}
	b.ReportMetric(float64(size)*float64(b.N)/ddSum/1e9, "dd-GB/s")
	for k, v := range variants {
		b.ReportMetric(sums[k]/float64(b.N), v.name+"/dd")
	}
}
