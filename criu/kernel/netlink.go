package kernel

// include/uapi/linux/veth.h: the one attribute of a veth's
// IFLA_INFO_DATA, the peer's own ifinfomsg followed by its IFLA_*
// attributes (name, namespace, MTU, address).
const VETH_INFO_PEER = 1

// include/uapi/linux/net_namespace.h: the RTM_GETNSID request carries a
// struct rtgenmsg (one byte, padded to NLMSG_ALIGNTO) before its
// NETNSA_* attributes, and so does the RTM_NEWNSID answer.
const SizeofRtgenmsgAligned = 4
