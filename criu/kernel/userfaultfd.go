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

	UFFDIO_REGISTER_MODE_WP = 1 << 1

	UFFDIO_API        = 0xc018aa3f // _IOWR(UFFDIO, 0x3F, struct uffdio_api)
	UFFDIO_REGISTER   = 0xc020aa00 // _IOWR(UFFDIO, 0x00, struct uffdio_register)
	UFFDIO_UNREGISTER = 0x8010aa01 // _IOR(UFFDIO, 0x01, struct uffdio_range)
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
