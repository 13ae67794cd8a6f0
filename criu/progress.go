package criu

import "time"

// progress counts the bytes of memory a dump or restore has moved and
// reports the total to f (the caller's Progress option) at most every
// progressEvery, and once at the end (done).
type progress struct {
	f     func(bytes uint64)
	moved uint64
	last  time.Time
}

const progressEvery = 250 * time.Millisecond

func newProgress(f func(uint64)) *progress { return &progress{f: f, last: time.Now()} }

func (p *progress) add(n uint64) {
	if p == nil || p.f == nil {
		return
	}
	p.moved += n
	if now := time.Now(); now.Sub(p.last) >= progressEvery {
		p.last = now
		p.f(p.moved)
	}
}

func (p *progress) done() {
	if p != nil && p.f != nil && p.moved > 0 {
		p.f(p.moved)
	}
}
