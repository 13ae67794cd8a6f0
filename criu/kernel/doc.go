// Package kernel holds the kernel ABI constants and layouts that
// golang.org/x/sys/unix lacks, one file per uapi header, each citing it,
// and thin wrappers of the syscalls it does not wrap (*_unsafe.go).
package kernel
