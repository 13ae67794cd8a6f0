package kernel

import "golang.org/x/sys/unix"

// include/uapi/linux/sem.h and include/uapi/linux/msg.h

const (
	GETPID   = 11
	GETALL   = 13
	SETALL   = 17
	MSG_COPY = 040000 // msgrcv: copy the message at an index, leave it queued
)

// MsqidDs is struct msqid64_ds on x86-64.
type MsqidDs struct {
	Perm                 unix.SysvIpcPerm
	Stime, Rtime, Ctime  int64
	Cbytes, Qnum, Qbytes uint64
	Lspid, Lrpid         int32
	_                    [2]uint64
}
