package criu

import (
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/kernel"
	"github.com/ctcr/ctcr/criu/proc"
)

// Feature is one kernel interface ctcr uses, probed on this machine.
type Feature struct {
	Name     string `json:"name"`
	Present  bool   `json:"present"`
	Required bool   `json:"required"` // dump or restore cannot work without it
	Detail   string `json:"detail,omitempty"`
}

// Features probes the kernel once and returns the table (CRIU's kerndat).
var Features = sync.OnceValue(probeFeatures)

// MissingFeatureError names a required kernel feature that is absent.
type MissingFeatureError struct{ Feature Feature }

func (e *MissingFeatureError) Error() string {
	return fmt.Sprintf("kernel feature %s is missing: %s", e.Feature.Name, e.Feature.Detail)
}

func (e *MissingFeatureError) Unwrap() error { return ErrUnsupported }

// CheckFeatures returns an error for the first required feature absent.
func CheckFeatures() error {
	for _, f := range Features() {
		if f.Required && !f.Present {
			return &MissingFeatureError{f}
		}
	}
	return nil
}

func probeFeatures() []Feature {
	var out []Feature
	add := func(name string, required bool, err error, okDetail string) {
		f := Feature{Name: name, Required: required, Present: err == nil, Detail: okDetail}
		if err != nil {
			f.Detail = err.Error()
		}
		out = append(out, f)
	}
	add("process_vm_readv", true, probeProcessVMReadv(), "copies a task's memory into the pages image")
	add("kcmp", true, errnoErr(unix.Syscall6(unix.SYS_KCMP, uintptr(os.Getpid()), uintptr(os.Getpid()), kcmpVM, 0, 0, 0)), "tells shared open files apart")
	add("prctl PR_GET_TID_ADDRESS (CONFIG_CHECKPOINT_RESTORE)", true, probeTidAddress(), "reads clear_child_tid")
	add("prctl PR_SET_MM_MAP", true, probeSetMmMap(), "restores mm fields and the executable link")
	add("clone3 with set_tid", true, probeClone3(), "creates tasks with their original PIDs")
	add("pidfd_open and pidfd_getfd", true, probePidfd(), "duplicates a task's pipes, sockets and event fds into ctcr to read them")
	add("prctl PR_TIMER_CREATE_RESTORE_IDS (Linux 6.17)", false, errnoErr(unix.Syscall6(unix.SYS_PRCTL, kernel.PR_TIMER_CREATE_RESTORE_IDS, 2, 0, 0, 0, 0)), "restores POSIX timers with their ids (without it a task with timers fails the restore)")
	add("TCP repair mode", false, probeTCPRepair(), "moves established TCP connections (without it only --tcp-close dumps them)")
	add("unix sock_diag", false, probeUnixDiag(), "finds the peers and queues of unix sockets (without it a unix socket fails the dump)")
	add("userfaultfd write tracking (Linux 6.7)", false, probeWriteTracking(), "tracks the pages written during --pre-copy and after a pre-dump (without it both fail)")
	add("vDSO", true, probeVdso(), "runs remote syscalls without writing into the task")
	add("XSAVE", true, probeXsave(), "saves AVX and AVX-512 registers")
	softDirty := fmt.Errorf("CONFIG_MEM_SOFT_DIRTY is off (not needed: --pre-copy and pre-dump track writes with userfaultfd)")
	if probeSoftDirty() {
		softDirty = nil
	}
	add("soft-dirty bit", false, softDirty, "present, but not used: --pre-copy and pre-dump track writes with userfaultfd")
	return out
}

func errnoErr(_, _ uintptr, e unix.Errno) error {
	if e != 0 {
		return e
	}
	return nil
}

func probeProcessVMReadv() error {
	var src, dst [8]byte
	src[0] = 1
	l := []unix.Iovec{{Base: &dst[0], Len: 8}}
	r := []unix.RemoteIovec{{Base: uintptr(unsafe.Pointer(&src[0])), Len: 8}}
	_, err := unix.ProcessVMReadv(os.Getpid(), l, r, 0)
	return err
}

func probeTidAddress() error {
	var addr uint64
	_, _, e := unix.Syscall(unix.SYS_PRCTL, kernel.PR_GET_TID_ADDRESS, uintptr(unsafe.Pointer(&addr)), 0)
	return errnoErr(0, 0, e)
}

func probeSetMmMap() error {
	var size uint32
	// PR_SET_MM_MAP_SIZE (15) reports the size of struct prctl_mm_map.
	_, _, e := unix.Syscall6(unix.SYS_PRCTL, kernel.PR_SET_MM, 15, uintptr(unsafe.Pointer(&size)), 0, 0, 0)
	if e != 0 {
		return e
	}
	if size != kernel.PrctlMmMapSize {
		return fmt.Errorf("struct prctl_mm_map is %d bytes, ctcr knows %d", size, kernel.PrctlMmMapSize)
	}
	return nil
}

func probeClone3() error {
	// clone3 with a too-small size answers EINVAL where it exists and
	// ENOSYS where it does not, without creating anything.
	_, _, e := unix.Syscall(unix.SYS_CLONE3, 0, 0, 0)
	if e == unix.ENOSYS {
		return fmt.Errorf("clone3: %w", e)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("set_tid needs CAP_SYS_ADMIN (run as root)")
	}
	return nil
}

func probePidfd() error {
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	nfd, err := unix.PidfdGetfd(fd, 0, 0)
	if err != nil {
		return err
	}
	unix.Close(nfd)
	return nil
}

func probeTCPRepair() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1); err != nil {
		return fmt.Errorf("TCP_REPAIR: %w (needs CAP_NET_ADMIN)", err)
	}
	return nil
}

func probeUnixDiag() error {
	_, err := unixDiagAll(os.Getpid())
	return err
}

// CanTrackWrites says whether this kernel tracks the writes of a task
// as pre-dumps need (userfaultfd write-protect with PAGEMAP_SCAN): nil
// if so. It probes once.
func CanTrackWrites() error { return writeTracking() }

var writeTracking = sync.OnceValue(probeWriteTracking)

// probeWriteTracking tracks a write to a page of ctcr's own, as the
// pre-copy tracks a task's.
func probeWriteTracking() error {
	fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK|kernel.UFFD_USER_MODE_ONLY, 0, 0)
	if e != 0 {
		return fmt.Errorf("userfaultfd: %w", e)
	}
	defer unix.Close(int(fd))
	if err := kernel.UffdAPI(int(fd), kernel.UFFD_FEATURE_WP_ASYNC); err != nil {
		return fmt.Errorf("userfaultfd async write-protection: %w", err)
	}
	page, err := unix.Mmap(-1, 0, pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return err
	}
	defer unix.Munmap(page)
	page[0] = 1
	addr := uint64(uintptr(unsafe.Pointer(&page[0])))
	if err := kernel.UffdRegisterWP(int(fd), addr, pageSize); err != nil {
		return fmt.Errorf("userfaultfd register: %w", err)
	}
	pmr, err := proc.OpenPagemap(os.Getpid())
	if err != nil {
		return err
	}
	defer pmr.Close()
	if _, err := pmr.Written(addr, addr+pageSize, true, nil); err != nil {
		return err
	}
	page[0] = 2
	w, err := pmr.Written(addr, addr+pageSize, false, nil)
	if err != nil {
		return err
	}
	if len(w) != 1 {
		return fmt.Errorf("PAGEMAP_SCAN did not see a write to a protected page")
	}
	return nil
}

func probeVdso() error {
	maps, err := proc.Maps(os.Getpid())
	if err != nil {
		return err
	}
	for _, m := range maps {
		if m.Path == "[vdso]" {
			return nil
		}
	}
	return fmt.Errorf("no [vdso] mapping (booted with vdso=0?)")
}

func probeXsave() error {
	_, _, ecx, _ := cpuid(1, 0)
	if ecx&(1<<27) == 0 { // OSXSAVE
		return fmt.Errorf("the OS has not enabled XSAVE")
	}
	return nil
}

func probeSoftDirty() bool {
	// Bit 55 of a written page reads 1 only with CONFIG_MEM_SOFT_DIRTY.
	pm, err := proc.OpenPagemap(os.Getpid())
	if err != nil {
		return false
	}
	defer pm.Close()
	var page [pageSize]byte
	page[0] = 1
	addr := uint64(uintptr(unsafe.Pointer(&page[0]))) &^ (pageSize - 1)
	ents, err := pm.Read(addr, addr+pageSize, nil)
	return err == nil && len(ents) == 1 && ents[0]&proc.PagemapSoftDirty != 0
}
