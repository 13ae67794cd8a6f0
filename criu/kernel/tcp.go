package kernel

// TCP states (include/net/tcp_states.h) of half-closed connections and
// of a connection still being opened.
const (
	TCP_SYN_SENT   = 2
	TCP_FIN_WAIT1  = 4
	TCP_FIN_WAIT2  = 5
	TCP_CLOSE_WAIT = 8
	TCP_LAST_ACK   = 9
	TCP_CLOSING    = 11
)

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

// Packet sockets' sock_diag (include/uapi/linux/packet_diag.h).
const (
	PACKET_SHOW_INFO     = 1 << 0
	PACKET_SHOW_MCLIST   = 1 << 1
	PACKET_SHOW_RING_CFG = 1 << 2
	PACKET_SHOW_FANOUT   = 1 << 3

	PACKET_DIAG_INFO    = 0
	PACKET_DIAG_MCLIST  = 1
	PACKET_DIAG_RX_RING = 2
	PACKET_DIAG_TX_RING = 3
	PACKET_DIAG_FANOUT  = 4

	// pdi_flags of struct packet_diag_info.
	PDI_AUXDATA = 0x2
	PDI_ORIGDEV = 0x4
	PDI_VNETHDR = 0x8
	PDI_LOSS    = 0x10

	SizeofPacketDiagReq    = 20
	SizeofPacketDiagMsg    = 16
	SizeofPacketDiagInfo   = 24
	SizeofPacketDiagMclist = 44
	// struct packet_diag_ring: block size and count, frame size and
	// count, retire timeout, sizeof_priv, features (7 __u32).
	SizeofPacketDiagRing = 28
)
