package criu

// rollback is a stack of undo steps for everything a dump or restore did
// to the world. Run executes them newest first; Release drops them once
// the operation succeeded (gVisor's pkg/cleanup does the same).
type rollback struct {
	undo []func()
}

func (r *rollback) add(f func()) { r.undo = append(r.undo, f) }

func (r *rollback) run() {
	for i := len(r.undo) - 1; i >= 0; i-- {
		r.undo[i]()
	}
	r.undo = nil
}

func (r *rollback) release() { r.undo = nil }
