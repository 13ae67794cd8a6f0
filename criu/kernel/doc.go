// Package kernel holds the kernel ABI constants and layouts that
// golang.org/x/sys/unix lacks, one file per uapi header, each citing it.
package kernel
