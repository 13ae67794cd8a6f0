package criu

import (
	"encoding/binary"
	"fmt"
	"sync"

	corex86 "github.com/checkpoint-restore/go-criu/v7/crit/images/core-x86"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/kernel"
	"github.com/ctcr/ctcr/criu/ptrace"
)

func cpuid(leaf, sub uint32) (eax, ebx, ecx, edx uint32)

// XSAVE components kept in images besides the legacy x87/SSE area, with
// the CRIU image field that holds each (Intel SDM vol. 1, 13.1).
const (
	xfeatureYMM      = 2 // upper halves of ymm0-15: ymmh_space
	xfeatureOpmask   = 5 // k0-k7: opmask_reg
	xfeatureZMMHi256 = 6 // upper halves of zmm0-15: zmm_upper
	xfeatureHi16ZMM  = 7 // zmm16-31: hi16_zmm
	xfeaturePKRU     = 9 // pkru
)

// xsaveLayout is where the standard (uncompacted) XSAVE format puts
// each component.
type xsaveLayout struct {
	supported uint64 // XCR0 bits the CPU can enable: leaf 0xd, subleaf 0
	off, size [64]int
}

// cpuXsave is this CPU's XSAVE layout, read once: CPUID traps to the
// hypervisor in a VM (about 8 µs each on this VM class), and every
// task's registers used to ask it six times, 3% of a 1,000-process
// restore's CPU time.
var cpuXsave = sync.OnceValue(func() *xsaveLayout {
	l := new(xsaveLayout)
	eax, _, _, edx := cpuid(0xd, 0)
	l.supported = uint64(eax) | uint64(edx)<<32
	for c := uint32(2); c < 64; c++ {
		if l.supported&(1<<c) != 0 {
			eax, ebx, _, _ := cpuid(0xd, c)
			l.off[c], l.size[c] = int(ebx), int(eax)
		}
	}
	return l
})

// end returns the size of an XSAVE area in the standard format that
// holds the components of features: up to the end of the last one, and
// at least the legacy area and the header.
func (l *xsaveLayout) end(features uint64) int {
	end := xsaveHdrOff + 64
	for c := 2; c < 64; c++ {
		if features&(1<<c) != 0 {
			end = max(end, l.off[c]+l.size[c])
		}
	}
	return end
}

// xstateOffset returns the offset and size of XSAVE component c (one of
// the xfeature constants) in the standard (uncompacted) format, which
// is what NT_X86_XSTATE uses.
func xstateOffset(c uint32) (off, size int) {
	l := cpuXsave()
	return l.off[c], l.size[c]
}

func gpregsToImage(r *ptrace.Regs) *corex86.UserX86RegsEntry {
	return &corex86.UserX86RegsEntry{
		R15: proto.Uint64(r.R15), R14: proto.Uint64(r.R14), R13: proto.Uint64(r.R13), R12: proto.Uint64(r.R12),
		Bp: proto.Uint64(r.Rbp), Bx: proto.Uint64(r.Rbx), R11: proto.Uint64(r.R11), R10: proto.Uint64(r.R10),
		R9: proto.Uint64(r.R9), R8: proto.Uint64(r.R8), Ax: proto.Uint64(r.Rax), Cx: proto.Uint64(r.Rcx),
		Dx: proto.Uint64(r.Rdx), Si: proto.Uint64(r.Rsi), Di: proto.Uint64(r.Rdi), OrigAx: proto.Uint64(r.Orig_rax),
		Ip: proto.Uint64(r.Rip), Cs: proto.Uint64(r.Cs), Flags: proto.Uint64(r.Eflags), Sp: proto.Uint64(r.Rsp),
		Ss: proto.Uint64(r.Ss), FsBase: proto.Uint64(r.Fs_base), GsBase: proto.Uint64(r.Gs_base),
		Ds: proto.Uint64(r.Ds), Es: proto.Uint64(r.Es), Fs: proto.Uint64(r.Fs), Gs: proto.Uint64(r.Gs),
		Mode: corex86.UserX86RegsMode_NATIVE.Enum(),
	}
}

func gpregsFromImage(e *corex86.UserX86RegsEntry) (ptrace.Regs, error) {
	if e == nil {
		return ptrace.Regs{}, fmt.Errorf("no general purpose registers")
	}
	if e.GetMode() != corex86.UserX86RegsMode_NATIVE {
		return ptrace.Regs{}, fmt.Errorf("32-bit (compat) tasks are not supported")
	}
	return ptrace.Regs{
		R15: e.GetR15(), R14: e.GetR14(), R13: e.GetR13(), R12: e.GetR12(), Rbp: e.GetBp(), Rbx: e.GetBx(),
		R11: e.GetR11(), R10: e.GetR10(), R9: e.GetR9(), R8: e.GetR8(), Rax: e.GetAx(), Rcx: e.GetCx(),
		Rdx: e.GetDx(), Rsi: e.GetSi(), Rdi: e.GetDi(), Orig_rax: e.GetOrigAx(), Rip: e.GetIp(), Cs: e.GetCs(),
		Eflags: e.GetFlags(), Rsp: e.GetSp(), Ss: e.GetSs(), Fs_base: e.GetFsBase(), Gs_base: e.GetGsBase(),
		Ds: e.GetDs(), Es: e.GetEs(), Fs: e.GetFs(), Gs: e.GetGs(),
	}, nil
}

// restartedRegs returns the registers a task stopped inside a syscall
// must be restored with. The kernel's own restart logic
// (arch_do_signal_or_restart) cannot run for a restored task, so it is
// applied here, as CRIU does at dump: a syscall that would be restarted
// is re-executed (ip back over the syscall instruction, rax = its number),
// and one that would go through restart_syscall, whose restart block
// lives in the kernel and is lost, returns -EINTR.
func restartedRegs(r ptrace.Regs) ptrace.Regs {
	if int64(r.Orig_rax) < 0 {
		return r
	}
	switch -int64(r.Rax) {
	case kernel.ERESTARTSYS, kernel.ERESTARTNOINTR, kernel.ERESTARTNOHAND:
		r.Rax = r.Orig_rax
		r.Rip -= 2
	case kernel.ERESTART_RESTARTBLOCK:
		eintr := int64(-4) // -EINTR
		r.Rax = uint64(eintr)
	}
	r.Orig_rax = ^uint64(0)
	return r
}

func le32s(b []byte) []uint32 {
	out := make([]uint32, len(b)/4)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return out
}

func le64s(b []byte) []uint64 {
	out := make([]uint64, len(b)/8)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return out
}

func put32s(b []byte, v []uint32) {
	for i := range v {
		if 4*i+4 > len(b) {
			return
		}
		binary.LittleEndian.PutUint32(b[4*i:], v[i])
	}
}

func put64s(b []byte, v []uint64) {
	for i := range v {
		if 8*i+8 > len(b) {
			return
		}
		binary.LittleEndian.PutUint64(b[8*i:], v[i])
	}
}

// The legacy area of XSAVE (FXSAVE layout).
const (
	fxsaveSize  = 512
	xsaveHdrOff = 512
)

// fpregsToImage splits a standard-format XSAVE area into CRIU's
// user_x86_fpregs_entry: the legacy area and the AVX/AVX-512/PKRU components.
func fpregsToImage(xs []byte) (*corex86.UserX86FpregsEntry, error) {
	if len(xs) < fxsaveSize+64 {
		return nil, fmt.Errorf("XSAVE area of %d bytes is too short", len(xs))
	}
	le := binary.LittleEndian
	e := &corex86.UserX86FpregsEntry{
		Cwd:       proto.Uint32(uint32(le.Uint16(xs[0:]))),
		Swd:       proto.Uint32(uint32(le.Uint16(xs[2:]))),
		Twd:       proto.Uint32(uint32(le.Uint16(xs[4:]))),
		Fop:       proto.Uint32(uint32(le.Uint16(xs[6:]))),
		Rip:       proto.Uint64(le.Uint64(xs[8:])),
		Rdp:       proto.Uint64(le.Uint64(xs[16:])),
		Mxcsr:     proto.Uint32(le.Uint32(xs[24:])),
		MxcsrMask: proto.Uint32(le.Uint32(xs[28:])),
		StSpace:   le32s(xs[32:160]),
		XmmSpace:  le32s(xs[160:416]),
		Padding:   le32s(xs[416:512]),
	}
	bv := le.Uint64(xs[xsaveHdrOff:])
	x := &corex86.UserX86XsaveEntry{XstateBv: proto.Uint64(bv)}
	comp := func(c uint32) []byte {
		off, size := xstateOffset(c)
		if size == 0 || off+size > len(xs) {
			return nil
		}
		return xs[off : off+size]
	}
	if b := comp(xfeatureYMM); b != nil {
		x.YmmhSpace = le32s(b)
	}
	if b := comp(xfeatureOpmask); b != nil {
		x.OpmaskReg = le64s(b)
	}
	if b := comp(xfeatureZMMHi256); b != nil {
		x.ZmmUpper = le64s(b)
	}
	if b := comp(xfeatureHi16ZMM); b != nil {
		x.Hi16Zmm = le64s(b)
	}
	if b := comp(xfeaturePKRU); b != nil {
		x.Pkru = le32s(b)
	}
	e.Xsave = x
	return e, nil
}

// fpregsFromImage writes the image's FPU state into buf, a standard-format
// XSAVE area as read from the restored task (so it has this CPU's size).
func fpregsFromImage(e *corex86.UserX86FpregsEntry, buf []byte) error {
	if e == nil {
		return fmt.Errorf("no FPU registers")
	}
	if len(buf) < fxsaveSize+64 {
		return fmt.Errorf("XSAVE area of %d bytes is too short", len(buf))
	}
	le := binary.LittleEndian
	le.PutUint16(buf[0:], uint16(e.GetCwd()))
	le.PutUint16(buf[2:], uint16(e.GetSwd()))
	le.PutUint16(buf[4:], uint16(e.GetTwd()))
	le.PutUint16(buf[6:], uint16(e.GetFop()))
	le.PutUint64(buf[8:], e.GetRip())
	le.PutUint64(buf[16:], e.GetRdp())
	le.PutUint32(buf[24:], e.GetMxcsr())
	le.PutUint32(buf[28:], e.GetMxcsrMask())
	put32s(buf[32:160], e.StSpace)
	put32s(buf[160:416], e.XmmSpace)
	x := e.GetXsave()
	if x == nil {
		// Only the legacy area was saved: mark just x87 and SSE in use.
		le.PutUint64(buf[xsaveHdrOff:], 3)
		return nil
	}
	// The kernel rejects components this CPU does not enable; features
	// the image has and this CPU lacks mean a different machine.
	supported := cpuXsave().supported
	bv := x.GetXstateBv()
	if bv&^supported != 0 {
		return fmt.Errorf("FPU state uses XSAVE features %#x this CPU does not have", bv&^supported)
	}
	le.PutUint64(buf[xsaveHdrOff:], bv)
	le.PutUint64(buf[xsaveHdrOff+8:], 0) // xcomp_bv: standard format
	comp := func(c uint32) []byte {
		off, size := xstateOffset(c)
		if size == 0 || off+size > len(buf) {
			return nil
		}
		return buf[off : off+size]
	}
	if b := comp(xfeatureYMM); b != nil {
		put32s(b, x.YmmhSpace)
	}
	if b := comp(xfeatureOpmask); b != nil {
		put64s(b, x.OpmaskReg)
	}
	if b := comp(xfeatureZMMHi256); b != nil {
		put64s(b, x.ZmmUpper)
	}
	if b := comp(xfeatureHi16ZMM); b != nil {
		put64s(b, x.Hi16Zmm)
	}
	if b := comp(xfeaturePKRU); b != nil {
		put32s(b, x.Pkru)
	}
	return nil
}

// AMX's state (Intel SDM vol. 1, 13.1; arch/x86/include/uapi/asm/prctl.h).
const (
	xfeatureTileCfg  = 17                    // TILECFG: the tiles' shapes
	xcompDynamic     = 1 << xfeatureTileData // the features a process must ask for
	archGetXcompPerm = 0x1022                // ARCH_GET_XCOMP_PERM
	archReqXcompPerm = 0x1023                // ARCH_REQ_XCOMP_PERM
)

// tilesInUse refuses a thread whose AMX tiles are configured or hold
// data (their bits of XSTATE_BV in its XSAVE area xs): CRIU's images
// have no field for them, and a restore without them would change the
// thread's computation under it.
func tilesInUse(xs []byte) error {
	if len(xs) < xsaveHdrOff+8 {
		return nil
	}
	const tiles = 1<<xfeatureTileCfg | 1<<xfeatureTileData
	if bv := binary.LittleEndian.Uint64(xs[xsaveHdrOff:]); bv&tiles != 0 {
		return fmt.Errorf("its AMX tile registers are in use (XSTATE_BV %#x), and the images have no field for them (a thread that ran TILERELEASE can be dumped): %w", bv, ErrUnsupported)
	}
	return nil
}
