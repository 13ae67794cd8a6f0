package kernel

// include/uapi/linux/udp.h: UDP-Lite checksum coverage (level
// IPPROTO_UDPLITE).
const (
	UDPLITE_SEND_CSCOV = 10
	UDPLITE_RECV_CSCOV = 11
)

// include/uapi/linux/inet_diag.h.
const (
	// SizeofInetDiagReqV2 is struct inet_diag_req_v2: family, protocol,
	// ext, pad (1 byte each), states (u32), then struct inet_diag_sockid.
	SizeofInetDiagReqV2 = 56
	// SizeofInetDiagMsg is struct inet_diag_msg: family, state, timer,
	// retrans (1 byte each), inet_diag_sockid (48), expires, rqueue,
	// wqueue, uid, inode (u32 each).
	SizeofInetDiagMsg = 72
	// InetDiagMsgInodeOffset is the offset of idiag_inode in it;
	// InetDiagMsgSockidOffset that of its inet_diag_sockid: sport and
	// dport (__be16 each), src and dst (__be32[4] each: an IPv4
	// address in the first word).
	InetDiagMsgSockidOffset = 4
	InetDiagMsgInodeOffset  = 68
	// INET_DIAG_SHUTDOWN is the attribute holding sk_shutdown (u8),
	// sent for every socket whatever idiag_ext asks.
	INET_DIAG_SHUTDOWN = 8
)
