// Package criurpc makes ctcr answer as CRIU to the container runtimes
// that drive CRIU (runc, podman, containerd, CRI-O, and so the kubelet's
// checkpoint API): `criu swrk FD` and CRIU's RPC over a SOCK_SEQPACKET
// socket, `criu check`, `criu --version`, and the dump, pre-dump and
// restore command lines that scripts use.
//
// It owns only the translation: a request's options become the options
// of the engine (criu.Dump, criu.PreDump, criu.Restore) and of the
// namespace savers (ns), and the runtime's notify round trips become the
// engine's phase callbacks. It knows nothing of ptrace or of images.
//
// The wire (CRIU's criu/cr-service.c, rpc.proto of go-criu's rpc
// package): every message is one SOCK_SEQPACKET record holding one
// protobuf message, criu_req from the runtime, criu_resp back.
//
//	runtime                         ctcr (criu swrk N)
//	criu_req{DUMP, opts}     ---->
//	                         <----  criu_resp{NOTIFY, notify{"pre-dump"}}
//	criu_req{NOTIFY, ok}     ---->
//	   ... one round trip per notification ...
//	                         <----  criu_resp{DUMP, success, dump{}}
//	(close)                  ---->  ctcr exits
//
// Notifications that carry an fd (orphan-pts-master) pass it with
// SCM_RIGHTS on the notify record.
package criurpc
