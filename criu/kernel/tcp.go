package kernel

// TCP repair mode (include/uapi/linux/tcp.h).
const (
	TCP_RECV_QUEUE = 1 // TCP_REPAIR_QUEUE values
	TCP_SEND_QUEUE = 2

	// tcpi_options bits of struct tcp_info.
	TCPI_OPT_TIMESTAMPS = 1
	TCPI_OPT_SACK       = 2
	TCPI_OPT_WSCALE     = 4

	// Offset in struct tcp_info of the byte holding tcpi_snd_wscale (low
	// nibble) and tcpi_rcv_wscale (high nibble), which
	// golang.org/x/sys/unix.TCPInfo leaves out as padding.
	TCPInfoWscaleOffset = 6
	TCPInfoSize         = 232 // enough for every field this ABI has had
)

// TCPRepairWindow is struct tcp_repair_window.
type TCPRepairWindow struct {
	SndWl1    uint32
	SndWnd    uint32
	MaxWindow uint32
	RcvWnd    uint32
	RcvWup    uint32
}

// TCPRepairOpt is struct tcp_repair_opt, one of TCP_REPAIR_OPTIONS.
type TCPRepairOpt struct {
	Code uint32
	Val  uint32
}

// SO_BUF_LOCK (Linux 5.14; include/uapi/asm-generic/socket.h) reads and
// sets which of the buffer sizes the user fixed (SOCK_SNDBUF_LOCK 1,
// SOCK_RCVBUF_LOCK 2); the kernel tunes the others itself.
const SO_BUF_LOCK = 72
