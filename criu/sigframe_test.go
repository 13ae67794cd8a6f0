package criu

import "testing"

// TestFrameFeatures checks the XSAVE area of an abandoned thread's signal
// frame on the layouts of CPUs with and without AMX: with AMX a frame as
// large as ptrace's area is taken by the kernel for a legacy one, and
// the thread comes back with its ymm registers' upper halves reset
// (TestKillInRunnerBatch on such a machine).
func TestFrameFeatures(t *testing.T) {
	// The standard-format layout of a Xeon with AVX-512 and AMX (this
	// VM class's /proc/cpuinfo; dmesg's x86/fpu lines).
	var amx xsaveLayout
	for c, v := range map[int][2]int{2: {576, 256}, 5: {832, 64}, 6: {896, 512}, 7: {1408, 1024}, 17: {2432, 64}, 18: {2496, 8192}} {
		amx.supported |= 1 << c
		amx.off[c], amx.size[c] = v[0], v[1]
	}
	var pkru xsaveLayout // AVX2 and PKRU, no AVX-512
	pkru.off[2], pkru.size[2] = 576, 256
	pkru.off[9], pkru.size[9] = 2688, 8
	tests := []struct {
		name         string
		l            *xsaveLayout
		xcr0, bv     uint64
		wantFeatures uint64
		wantSize     uint64
	}{
		{"AMX's tile data is left out of a thread not using it", &amx, 0x600e7, 0x20007, 0x200e7, 2496},
		{"AMX's tile data stays in a thread using it", &amx, 0x600e7, 0x600e7, 0x600e7, 10688},
		{"without AMX the area ends with AVX-512", &amx, 0xe7, 0x7, 0xe7, 2432},
		{"PKRU, past a gap, ends the area", &pkru, 0x207, 0x3, 0x207, 2696},
		{"x87 and SSE alone: the legacy area and the header", &pkru, 0x3, 0x3, 0x3, 576},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, size := frameFeatures(tt.xcr0, tt.bv, tt.l)
			if f != tt.wantFeatures || size != tt.wantSize {
				t.Errorf("frameFeatures(%#x, %#x) = %#x, %d; want %#x, %d", tt.xcr0, tt.bv, f, size, tt.wantFeatures, tt.wantSize)
			}
		})
	}
}
