package kernel

// include/uapi/linux/prctl.h

const (
	PR_SET_MM     = 35
	PR_SET_MM_MAP = 14

	PR_GET_TID_ADDRESS = 40
)

// PrctlMmMap is struct prctl_mm_map, the argument of
// prctl(PR_SET_MM, PR_SET_MM_MAP).
type PrctlMmMap struct {
	StartCode, EndCode uint64
	StartData, EndData uint64
	StartBrk, Brk      uint64
	StartStack         uint64
	ArgStart, ArgEnd   uint64
	EnvStart, EnvEnd   uint64
	Auxv               uint64
	AuxvSize           uint32
	ExeFd              uint32
}

// PrctlMmMapSize is sizeof(struct prctl_mm_map).
const PrctlMmMapSize = 104
