package criu

import (
	"encoding/binary"
	"fmt"

	"github.com/ctcr/ctcr/criu/ptrace"
)

// A dumped thread that ctcr abandons in the middle of a batch returns to
// itself through rt_sigreturn (see syscallRunner), so its scratch area
// holds a signal frame of that thread's own state. The kernel reads the
// frame at rsp-8 (arch/x86/kernel/signal_64.c, rt_sigreturn):
//
//	offset  size  struct rt_sigframe
//	     0     8  pretcode            (unused: nobody returns through it)
//	     8   304  struct ucontext
//	               +0    uc_flags     UC_FP_XSTATE|UC_SIGCONTEXT_SS|UC_STRICT_RESTORE_SS
//	               +8    uc_link      0
//	               +16   uc_stack     ss_flags 3: invalid, so restore_altstack
//	                                   leaves the thread's own alternate stack
//	               +40   uc_mcontext  struct sigcontext: r8..r15, rdi, rsi,
//	                                   rbp, rbx, rdx, rax, rcx, rsp, rip,
//	                                   eflags, cs/gs/fs/ss, err, trapno,
//	                                   oldmask, cr2, fpstate, reserved
//	               +296  uc_sigmask   the thread's own blocked signals
//	   312   128  siginfo             (unused)
//	   448     -  the XSAVE area, 64-byte aligned, as PTRACE_GETREGSET
//	              NT_X86_XSTATE gives it, but for its sw_reserved bytes,
//	              which must hold struct _fpx_sw_bytes: FP_XSTATE_MAGIC1,
//	              the sizes and the features; then FP_XSTATE_MAGIC2
//
// Without a valid fpstate the kernel would reset the thread's FPU and
// vector registers (fpu__restore_sig with a NULL buffer), and without
// either magic word (check_xstate_in_sigframe) it restores only the
// legacy FXSAVE part and resets the rest: the upper halves of the ymm
// registers, AVX-512, PKRU. The sw_reserved bytes ptrace gives are not
// those of a signal frame: they are xstate_fx_sw_bytes
// (arch/x86/kernel/fpu/xstate.c), whose first word is XCR0, the
// features the area holds (USER_XSTATE_XCR0_WORD, asm/user.h).
const (
	frameUcontext   = 8
	frameMcontext   = frameUcontext + 40
	frameSigmask    = frameUcontext + 296
	frameFPState    = 448
	fpXstateMagic1  = 0x46505853 // arch/x86/include/uapi/asm/sigcontext.h
	fpXstateMagic2  = 0x46505845
	ucFPXstate      = 0x1 // arch/x86/include/uapi/asm/ucontext.h
	ucSigcontextSS  = 0x2
	ucStrictRestore = 0x4
	swReservedOff   = 464 // struct fxregs_state.sw_reserved
	frameAreaSize   = 20 << 10
)

// sigreturnFrame lays out the rt_sigreturn frame that puts a thread back
// into regs (adjusted as the kernel would restart an interrupted
// syscall, since rt_sigreturn turns syscall restarting off) with mask
// blocked and the FPU state xstate, for a frame at address at.
func sigreturnFrame(regs ptrace.Regs, mask uint64, xstate []byte, at uint64) ([]byte, error) {
	if at%64 != 0 {
		return nil, fmt.Errorf("signal frame at %#x is not 64-byte aligned", at)
	}
	if len(xstate) < swReservedOff+20 {
		return nil, fmt.Errorf("XSAVE area of %d bytes", len(xstate))
	}
	sw := xstate[swReservedOff:]
	var size, features uint64
	if binary.LittleEndian.Uint32(sw) == fpXstateMagic1 {
		size = uint64(binary.LittleEndian.Uint32(sw[16:]))
		features = binary.LittleEndian.Uint64(sw[8:])
	} else {
		if len(xstate) < xsaveHdrOff+64 {
			return nil, fmt.Errorf("XSAVE area of %d bytes has no header", len(xstate))
		}
		// sw starts with XCR0, as ptrace gives it; the header with
		// XSTATE_BV.
		features, size = frameFeatures(binary.LittleEndian.Uint64(sw), binary.LittleEndian.Uint64(xstate[xsaveHdrOff:]), cpuXsave())
	}
	if size < swReservedOff+48+64 || size > uint64(len(xstate)) || frameFPState+size+4 > frameAreaSize {
		return nil, fmt.Errorf("XSAVE area of %d bytes says its size is %d", len(xstate), size)
	}
	buf := make([]byte, frameFPState+size+4)
	le := binary.LittleEndian
	le.PutUint64(buf[frameUcontext:], ucFPXstate|ucSigcontextSS|ucStrictRestore)
	le.PutUint32(buf[frameUcontext+24:], 3) // uc_stack.ss_flags
	r := restartedRegs(regs)
	mc := buf[frameMcontext:]
	for i, v := range []uint64{r.R8, r.R9, r.R10, r.R11, r.R12, r.R13, r.R14, r.R15,
		r.Rdi, r.Rsi, r.Rbp, r.Rbx, r.Rdx, r.Rax, r.Rcx, r.Rsp, r.Rip, r.Eflags} {
		le.PutUint64(mc[8*i:], v)
	}
	le.PutUint16(mc[144:], uint16(r.Cs))
	le.PutUint16(mc[146:], uint16(r.Gs))
	le.PutUint16(mc[148:], uint16(r.Fs))
	le.PutUint16(mc[150:], uint16(r.Ss))
	le.PutUint64(mc[184:], at+frameFPState) // fpstate
	le.PutUint64(buf[frameSigmask:], mask)
	copy(buf[frameFPState:], xstate[:size])
	fxsw := buf[frameFPState+swReservedOff : frameFPState+swReservedOff+48]
	clear(fxsw)
	le.PutUint32(fxsw[0:], fpXstateMagic1)
	le.PutUint32(fxsw[4:], uint32(size+4)) // extended_size: the area and MAGIC2
	le.PutUint64(fxsw[8:], features)
	le.PutUint32(fxsw[16:], uint32(size)) // xstate_size
	le.PutUint32(buf[frameFPState+size:], fpXstateMagic2)
	return buf, nil
}

// xfeatureTileData is AMX's tile data, the one component a thread's
// signal frames hold only once it asked for it (ARCH_REQ_XCOMP_PERM):
// XFEATURE_MASK_USER_DYNAMIC.
const xfeatureTileData = 18

// frameFeatures returns the features and the size of the XSAVE area of
// a signal frame that restores an area ptrace gave with XCR0 features
// and XSTATE_BV bv. ptrace gives room for all of XCR0 (10,688 bytes with
// AMX), but the kernel takes a frame larger than the thread's own
// signal frames (its fpstate's user_size: 2,496 bytes with AMX's tile
// configuration and without its tile data) for a legacy one and resets
// every register but the legacy x87/SSE ones (check_xstate_in_sigframe),
// the upper halves of the ymm registers among them. So the tile data
// stays out unless the thread has it in use (a bit of bv: it had the
// permission), and the area ends with the last component kept.
func frameFeatures(features, bv uint64, l *xsaveLayout) (uint64, uint64) {
	if bv&(1<<xfeatureTileData) == 0 {
		features &^= 1 << xfeatureTileData
	}
	return features, uint64(l.end(features))
}
