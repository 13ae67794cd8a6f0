package kernel

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// include/uapi/linux/bpf.h: the leading fields of struct bpf_prog_info
// and struct bpf_map_info that ctcr reads. The kernel takes an info_len
// shorter than its own struct and fills only that much, so these
// prefixes are enough.

// BPFProgInfo is the start of struct bpf_prog_info (through name).
type BPFProgInfo struct {
	Type            uint32
	ID              uint32
	Tag             [8]byte
	JitedProgLen    uint32
	XlatedProgLen   uint32
	JitedProgInsns  uint64
	XlatedProgInsns uint64
	LoadTime        uint64
	CreatedByUID    uint32
	NrMapIDs        uint32
	MapIDs          uint64
	Name            [16]byte
}

// BPFMapInfo is the start of struct bpf_map_info (through name).
type BPFMapInfo struct {
	Type       uint32
	ID         uint32
	KeySize    uint32
	ValueSize  uint32
	MaxEntries uint32
	MapFlags   uint32
	Name       [16]byte
}

// bpfInfoAttr is the info member of union bpf_attr (BPF_OBJ_GET_INFO_BY_FD).
type bpfInfoAttr struct {
	fd      uint32
	infoLen uint32
	info    unsafe.Pointer // a pointer the garbage collector sees, as cilium/ebpf's sys.Pointer
}

// bpfQueryAttr is the query member of union bpf_attr (BPF_PROG_QUERY).
type bpfQueryAttr struct {
	targetFd    uint32
	attachType  uint32
	queryFlags  uint32
	attachFlags uint32
	progIDs     unsafe.Pointer
	progCnt     uint32
}

// bpf runs one bpf(2) command, EINTR retried.
func bpf(cmd int, attr unsafe.Pointer, size uintptr) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(attr), size)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}

// BPFProgInfoByFd asks BPF_OBJ_GET_INFO_BY_FD about the program fd holds.
func BPFProgInfoByFd(fd int) (BPFProgInfo, error) {
	var info BPFProgInfo
	attr := bpfInfoAttr{fd: uint32(fd), infoLen: uint32(unsafe.Sizeof(info)), info: unsafe.Pointer(&info)}
	err := bpf(unix.BPF_OBJ_GET_INFO_BY_FD, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	return info, err
}

// BPFMapInfoByFd asks BPF_OBJ_GET_INFO_BY_FD about the map fd holds.
func BPFMapInfoByFd(fd int) (BPFMapInfo, error) {
	var info BPFMapInfo
	attr := bpfInfoAttr{fd: uint32(fd), infoLen: uint32(unsafe.Sizeof(info)), info: unsafe.Pointer(&info)}
	err := bpf(unix.BPF_OBJ_GET_INFO_BY_FD, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	return info, err
}

// BPFProgQuery returns the ids of the programs attached to the cgroup
// cgfd for attachType (BPF_PROG_QUERY), at most 64 of them.
func BPFProgQuery(cgfd int, attachType uint32) ([]uint32, error) {
	ids := make([]uint32, 64)
	attr := bpfQueryAttr{targetFd: uint32(cgfd), attachType: attachType, progIDs: unsafe.Pointer(&ids[0]), progCnt: uint32(len(ids))}
	if err := bpf(unix.BPF_PROG_QUERY, unsafe.Pointer(&attr), unsafe.Sizeof(attr)); err != nil {
		return nil, err
	}
	return ids[:min(attr.progCnt, uint32(len(ids)))], nil
}
