package criu

import "errors"

// Errors callers branch on.
var (
	// ErrNoTask: the PID to dump does not exist.
	ErrNoTask = errors.New("no such process")
	// ErrPidBusy: a PID to restore is taken by another process.
	ErrPidBusy = errors.New("PID is in use")
	// ErrUnsupported: the task holds something ctcr cannot checkpoint yet.
	ErrUnsupported = errors.New("not supported")
)
