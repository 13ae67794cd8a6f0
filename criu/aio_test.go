package criu

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/ctcr/ctcr/criu/kernel"
)

// kernelAioRingNr is the number of events of the ring io_setup(nrReq)
// makes on a machine of ncpu possible CPUs (fs/aio.c ioctx_alloc and
// aio_setup_ring).
func kernelAioRingNr(nrReq, ncpu uint32) uint32 {
	n := max(nrReq, ncpu*4)*2 + 2
	pages := (kernel.AioRingHeaderSize + kernel.IoEventSize*n + pageSize - 1) / pageSize
	return (pages*pageSize - kernel.AioRingHeaderSize) / kernel.IoEventSize
}

func TestAioNrReqMakesTheSameRing(t *testing.T) {
	for ncpu := uint32(1); ncpu <= 64; ncpu *= 2 {
		for nrReq := uint32(1); nrReq <= 5000; nrReq++ {
			nr := kernelAioRingNr(nrReq, ncpu)
			if got := kernelAioRingNr(aioNrReq(nr), ncpu); got != nr {
				t.Fatalf("io_setup(%d) on %d CPUs makes a ring of %d events; io_setup(aioNrReq = %d) makes %d", nrReq, ncpu, nr, aioNrReq(nr), got)
			}
		}
	}
}

func TestAioRingHeaderChecks(t *testing.T) {
	header := func(nr, head, tail, magic, hlen uint32) []byte {
		b := make([]byte, kernel.AioRingHeaderSize)
		for i, v := range []uint32{7, nr, head, tail, magic, 1, 0, hlen} {
			binary.LittleEndian.PutUint32(b[4*i:], v)
		}
		return b
	}
	const size = pageSize // 127 events
	for _, c := range []struct {
		name string
		b    []byte
		err  string
	}{
		{"a ring with events wrapping around is good", header(127, 120, 3, kernel.AIO_RING_MAGIC, 32), ""},
		{"a bad magic is refused", header(127, 0, 0, 0xdeadbeef, 32), "magic"},
		{"a header of another length is refused", header(127, 0, 0, kernel.AIO_RING_MAGIC, 64), "header of 64 bytes"},
		{"a count of events the mapping cannot hold is refused", header(200, 0, 0, kernel.AIO_RING_MAGIC, 32), "200 events"},
		{"a head past the events is refused", header(127, 127, 0, kernel.AIO_RING_MAGIC, 32), "head 127"},
		{"a tail past the events is refused", header(127, 0, 1000, kernel.AIO_RING_MAGIC, 32), "tail 1000"},
		{"a short header is refused", header(127, 0, 0, kernel.AIO_RING_MAGIC, 32)[:16], "16 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, err := aioRingHeader(c.b, size)
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("error %v, want none", err)
			case c.err == "" && (h.Nr != 127 || h.Head != 120 || h.Tail != 3):
				t.Fatalf("parsed %+v", h)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
				t.Fatalf("error %v, want one saying %q", err, c.err)
			}
		})
	}
}
