package kernel

// include/uapi/linux/aio_abi.h and fs/aio.c

// IOCB_CMD_PWRITE is the opcode of an asynchronous pwrite.
const IOCB_CMD_PWRITE = 1

// Iocb is struct iocb (x86-64, little-endian: aio_key comes before
// aio_rw_flags).
type Iocb struct {
	Data      uint64
	Key       uint32
	RwFlags   uint32
	LioOpcode uint16
	Reqprio   int16
	Fildes    uint32
	Buf       uint64
	Nbytes    uint64
	Offset    int64
	Reserved2 uint64
	Flags     uint32
	Resfd     uint32
}

// IoEventSize is sizeof(struct io_event): data, obj, res, res2.
const IoEventSize = 32

// AioRing is the header of an AIO ring (fs/aio.c struct aio_ring), at
// the start of the [aio] mapping io_setup makes; the io_events follow
// it (AioRingHeaderSize bytes in). io_getevents reads head and tail from
// it; the kernel writes tail from its own copy at each completion.
type AioRing struct {
	ID               uint32 // kernel internal index
	Nr               uint32 // number of io_events
	Head             uint32
	Tail             uint32
	Magic            uint32
	CompatFeatures   uint32
	IncompatFeatures uint32
	HeaderLength     uint32
}

const (
	AioRingHeaderSize = 32
	AIO_RING_MAGIC    = 0xa10a10a1
)
