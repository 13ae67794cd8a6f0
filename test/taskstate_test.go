package test

import (
	"path/filepath"
	"testing"
)

// TestTaskState checks the per-task state that the other scenarios do
// not: credentials, capabilities, securebits, no_new_privs, limits,
// personality, scheduling, pdeathsig, dumpable, the task name, the
// alternate signal stack, a virtual itimer, /proc/self/exe, and the
// general purpose, AVX and AVX-512 registers held across the dump.
func TestTaskState(t *testing.T) {
	sc := scenario{
		name:     "credentials, limits, prctl state and vector registers survive",
		workload: "taskstate",
		json:     true,
	}
	t.Run(sc.name, func(t *testing.T) {
		needCtcr(t)
		w := startWorkload(t, sc.workload, sc.args...)
		img := filepath.Join(t.TempDir(), "img")
		d := dump(t, w, img, sc.json, sc.minPagesBytes)
		restoreForeground(t, w, img, sc, d)
	})
}
