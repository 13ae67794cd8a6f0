package kernel

// include/uapi/linux/userfaultfd.h

const (
	// UFFD_USER_MODE_ONLY lets a task without CAP_SYS_PTRACE make a
	// userfaultfd when vm.unprivileged_userfaultfd is 0. Async
	// write-protection never hands a fault to user space, so the limit
	// to user-mode faults changes nothing for it.
	UFFD_USER_MODE_ONLY = 1

	UFFD_API = 0xaa

	// UFFD_FEATURE_WP_ASYNC (Linux 6.7): a write to a write-protected
	// page only clears its protection bit; the kernel resolves the fault
	// itself and PAGEMAP_SCAN reports the page as written.
	UFFD_FEATURE_WP_ASYNC = 1 << 15
	// UFFD_FEATURE_INITIALIZED (fs/userfaultfd.c, not uapi): set in a
	// userfaultfd's features, as its fdinfo shows them, once its
	// UFFDIO_API handshake is done.
	UFFD_FEATURE_INITIALIZED = 1 << 31

	// Features of a synchronous write-protect snapshot
	// (criu/snapshot_uffd.go): write-protect faults reach user space,
	// and so do the non-cooperative events that take pages away from
	// under it (madvise MADV_DONTNEED/MADV_REMOVE, munmap, mremap).
	UFFD_FEATURE_PAGEFAULT_FLAG_WP = 1 << 0
	UFFD_FEATURE_EVENT_REMAP       = 1 << 2
	UFFD_FEATURE_EVENT_REMOVE      = 1 << 3
	UFFD_FEATURE_EVENT_UNMAP       = 1 << 6

	UFFDIO_REGISTER_MODE_WP = 1 << 1

	// UFFDIO_WRITEPROTECT modes: set the protection (else clear it),
	// and do not wake the threads waiting on the range.
	UFFDIO_WRITEPROTECT_MODE_WP       = 1 << 0
	UFFDIO_WRITEPROTECT_MODE_DONTWAKE = 1 << 1

	// struct uffd_msg events, and the flags of a page fault's.
	UFFD_EVENT_PAGEFAULT      = 0x12
	UFFD_EVENT_FORK           = 0x13
	UFFD_EVENT_REMAP          = 0x14
	UFFD_EVENT_REMOVE         = 0x15
	UFFD_EVENT_UNMAP          = 0x16
	UFFD_PAGEFAULT_FLAG_WRITE = 1 << 0
	UFFD_PAGEFAULT_FLAG_WP    = 1 << 1
	// UffdMsgSize is sizeof(struct uffd_msg): a read returns whole
	// messages. Its layout: event (u8) at 0; then at 8 the union:
	// pagefault {flags u64, address u64, ptid u32}, remap {from, to,
	// len u64}, remove/unmap {start, end u64}.
	UffdMsgSize = 32

	UFFDIO_API        = 0xc018aa3f // _IOWR(UFFDIO, 0x3F, struct uffdio_api)
	UFFDIO_REGISTER   = 0xc020aa00 // _IOWR(UFFDIO, 0x00, struct uffdio_register)
	UFFDIO_UNREGISTER = 0x8010aa01 // _IOR(UFFDIO, 0x01, struct uffdio_range)
	// UFFDIO_WRITEPROTECT is _IOWR(UFFDIO, 0x06, struct uffdio_writeprotect).
	UFFDIO_WRITEPROTECT = 0xc018aa06
)

// UffdioAPI is struct uffdio_api.
type UffdioAPI struct {
	API, Features, Ioctls uint64
}

// UffdioRange is struct uffdio_range.
type UffdioRange struct {
	Start, Len uint64
}

// UffdioRegister is struct uffdio_register.
type UffdioRegister struct {
	Range  UffdioRange
	Mode   uint64
	Ioctls uint64
}

// UffdioWriteprotect is struct uffdio_writeprotect.
type UffdioWriteprotect struct {
	Range UffdioRange
	Mode  uint64
}
