package kernel

// include/uapi/linux/sched.h

// CloneArgs is struct clone_args of clone3(2), version 2 (with set_tid
// and cgroup).
type CloneArgs struct {
	Flags      uint64
	Pidfd      uint64
	ChildTid   uint64
	ParentTid  uint64
	ExitSignal uint64
	Stack      uint64
	StackSize  uint64
	TLS        uint64
	SetTid     uint64
	SetTidSize uint64
	Cgroup     uint64
}

// CloneArgsSize is sizeof(struct clone_args) version 2.
const CloneArgsSize = 88
