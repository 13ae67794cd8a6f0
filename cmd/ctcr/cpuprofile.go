package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
)

// startCPUProfile is a developer knob, not a user option: with
// CTCR_CPUPROFILE=FILE set, the command writes Go's CPU profile of its
// run to FILE, and the profile of its allocations next to it (see
// writeAllocProfile), "%p" in it replaced by ctcr's PID so that a dump and the
// restore after it keep their own (read one with `go tool pprof
// bin/ctcr FILE`). It is how
// the per-task cost of dump and restore was profiled (issue 11). The
// returned function stops the profile and closes FILE.
func startCPUProfile() func() {
	path := os.Getenv("CTCR_CPUPROFILE")
	if path == "" || isPuppet() {
		return func() {}
	}
	path = strings.ReplaceAll(path, "%p", strconv.Itoa(os.Getpid()))
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ctcr: CTCR_CPUPROFILE: %v\n", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintf(os.Stderr, "ctcr: CTCR_CPUPROFILE %s: %v\n", path, err)
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		writeAllocProfile(strings.TrimSuffix(path, ".cpu") + ".allocs")
	}
}

// writeAllocProfile writes Go's profile of the allocations made so far
// to path (next to the CPU profile, ".allocs" in place of its ".cpu"
// suffix or added to its name): `go tool pprof -sample_index
// alloc_space bin/ctcr FILE` shows what feeds the garbage collector.
func writeAllocProfile(path string) {
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ctcr: CTCR_CPUPROFILE: %v\n", err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		fmt.Fprintf(os.Stderr, "ctcr: CTCR_CPUPROFILE %s: %v\n", path, err)
	}
}
