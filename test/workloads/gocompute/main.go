// Command gocompute is a self-checking workload for ctcr in Go: the Go
// runtime brings many threads, futexes, signals (SIGURG preemption),
// timers and a garbage collector to the checkpoint.
//
//	gocompute DIR
//
// Four goroutines each extend a SHA-256 chain (h[k+1] = sha256(h[k])); two
// goroutines play ping-pong over unbuffered channels; one spins without
// function calls for 10 ms at a time, so that only asynchronous preemption
// (SIGURG) can stop it; 32 MiB of pseudo-random heap keeps a checksum.
// DIR/ready holds the PID, every chain's (k, h[k]), the ping-pong count and
// the heap's checksum. After restore (DIR/check) it checks: the PID; that
// every chain went on from its ready value and that replaying the chain
// from the recorded h reaches the current h; that every chain, the
// ping-pong and the spinner still progress; the heap checksum; that a
// forced garbage collection (which must preempt the spinner) finishes;
// and that a SIGUSR2 it sends itself reaches its signal.Notify channel.
//
// It uses no timer and no os.File it opens itself: a runtime timer (time.Sleep,
// time.After) or os.Open starts the network poller, whose epoll and eventfd
// descriptors ctcr does not checkpoint yet. Sleeps are nanosleep(2) calls
// and files are read and written with package syscall.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const chains = 4

type chain struct {
	mu sync.Mutex
	k  uint64
	h  [32]byte
}

func (c *chain) get() (uint64, [32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.k, c.h
}

func (c *chain) run(seed int) {
	c.mu.Lock()
	c.h = sha256.Sum256([]byte("ctcr chain " + strconv.Itoa(seed)))
	c.mu.Unlock()
	for {
		c.mu.Lock()
		for range 100 {
			c.h = sha256.Sum256(c.h[:])
			c.k++
		}
		c.mu.Unlock()
		sleep(time.Millisecond)
	}
}

var (
	chainState [chains]chain
	pingPongs  atomic.Uint64
	spins      atomic.Uint64
	spinSink   uint64
)

func pingPong() {
	ping, pong := make(chan uint64), make(chan uint64)
	go func() {
		for v := range ping {
			pong <- v + 1
		}
	}()
	for {
		for range 100 {
			ping <- pingPongs.Load()
			pingPongs.Store(<-pong)
		}
		sleep(time.Millisecond)
	}
}

// spin runs a loop without calls for about 10 ms, then sleeps 30 ms.
func spin() {
	n := uint64(5_000_000)
	for {
		t0 := time.Now()
		x := spinSink
		for i := uint64(0); i < n; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
		spinSink = x
		if d := time.Since(t0); d < 5*time.Millisecond {
			n *= 2
		} else if d > 20*time.Millisecond && n > 1000 {
			n /= 2
		}
		spins.Add(1)
		sleep(30 * time.Millisecond)
	}
}

// sleep blocks the calling thread in nanosleep(2); see the package comment.
func sleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
	}
}

// within reports whether done is closed within d, polling without a timer.
func within(d time.Duration, done chan struct{}) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return true
		default:
			sleep(time.Millisecond)
		}
	}
	return false
}

func checksum(b []byte) uint64 {
	h := sha256.Sum256(b)
	return binary.LittleEndian.Uint64(h[:8])
}

func writeFile(dir, name string, data []byte) error {
	tmp, dst := dir+"/"+name+".tmp", dir+"/"+name
	fd, err := syscall.Open(tmp, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_TRUNC|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("open %s: %w", tmp, err)
	}
	for len(data) > 0 {
		n, err := syscall.Write(fd, data)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			syscall.Close(fd)
			return fmt.Errorf("write %s: %w", tmp, err)
		}
		data = data[n:]
	}
	if err := syscall.Close(fd); err != nil {
		return err
	}
	return syscall.Rename(tmp, dst)
}

func readFile(path string) ([]byte, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer syscall.Close(fd)
	var out bytes.Buffer
	buf := make([]byte, 1<<16)
	for {
		n, err := syscall.Read(fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if n == 0 {
			return out.Bytes(), nil
		}
		out.Write(buf[:n])
	}
}

// checkFds fails unless every open fd below 256 is a regular file, a
// directory or a character device: the kinds ctcr restores.
func checkFds() error {
	for fd := 0; fd < 256; fd++ {
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			continue
		}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG, syscall.S_IFDIR, syscall.S_IFCHR:
		default:
			return fmt.Errorf("fd %d has mode %#o: not a regular file, directory or character device", fd, st.Mode)
		}
	}
	return nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gocompute DIR")
		os.Exit(2)
	}
	dir := os.Args[1]
	if err := run(dir); err != nil {
		fmt.Fprintln(os.Stderr, "gocompute:", err)
		os.Exit(3)
	}
}

func run(dir string) error {
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	for i := range chains {
		go chainState[i].run(i)
	}
	go pingPong()
	go spin()
	heap := make([]byte, 32<<20)
	x := uint64(88172645463325252)
	for i := 0; i+8 <= len(heap); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(heap[i:], x)
	}
	sum := checksum(heap)
	sleep(200 * time.Millisecond)
	if err := checkFds(); err != nil {
		return err
	}

	var ready strings.Builder
	fmt.Fprintf(&ready, "pid %d\nheap %d\npingpong %d\n", os.Getpid(), sum, pingPongs.Load())
	for i := range chains {
		k, h := chainState[i].get()
		fmt.Fprintf(&ready, "chain%d %d %x\n", i, k, h)
	}
	if err := writeFile(dir, "ready", []byte(ready.String())); err != nil {
		return err
	}
	for {
		if err := syscall.Access(dir+"/check", syscall.F_OK); err == nil {
			break
		}
		sleep(10 * time.Millisecond)
	}

	failures := verify(dir, heap, usr2)
	result := "PASS\n"
	if len(failures) > 0 {
		result = "FAIL: " + strings.Join(failures, "; ") + "\n"
	}
	if err := writeFile(dir, "result", []byte(result)); err != nil {
		return err
	}
	fmt.Fprint(os.Stderr, result)
	if len(failures) > 0 {
		os.Exit(1)
	}
	return nil
}

func verify(dir string, heap []byte, usr2 chan os.Signal) []string {
	var failures []string
	fail := func(format string, args ...any) { failures = append(failures, fmt.Sprintf(format, args...)) }
	b, err := readFile(dir + "/ready")
	if err != nil {
		return []string{err.Error()}
	}
	saved := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			saved[f[0]] = f[1:]
		}
	}
	num := func(key string) uint64 {
		v, err := strconv.ParseUint(saved[key][0], 10, 64)
		if err != nil {
			fail("ready: %s: %v", key, err)
		}
		return v
	}
	if pid := num("pid"); uint64(os.Getpid()) != pid {
		fail("getpid() %d != %d", os.Getpid(), pid)
	}
	if got, want := checksum(heap), num("heap"); got != want {
		fail("heap checksum %#x != %#x", got, want)
	}

	// Replay every chain from its ready value to where it is now, in parallel.
	type snap struct {
		k uint64
		h [32]byte
	}
	var now [chains]snap
	for i := range chains {
		now[i].k, now[i].h = chainState[i].get()
	}
	pp0, spins0 := pingPongs.Load(), spins.Load()
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range chains {
		f := saved["chain"+strconv.Itoa(i)]
		k0, err := strconv.ParseUint(f[0], 10, 64)
		h0, err2 := hex.DecodeString(f[1])
		if err != nil || err2 != nil || len(h0) != 32 {
			fail("ready: chain%d: %v %v", i, err, err2)
			continue
		}
		if now[i].k < k0 {
			fail("chain %d is at step %d, before its ready step %d", i, now[i].k, k0)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := [32]byte(h0)
			for range now[i].k - k0 {
				h = sha256.Sum256(h[:])
			}
			if h != now[i].h {
				mu.Lock()
				fail("chain %d: replaying steps %d..%d from the ready hash gives %x, the chain holds %x", i, k0, now[i].k, h[:8], now[i].h[:8])
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if pp := pingPongs.Load(); pp < num("pingpong") {
		fail("ping-pong count %d went back from %d", pp, num("pingpong"))
	}

	// A garbage collection stops the world: the spinner must be preempted.
	gcDone := make(chan struct{})
	go func() { runtime.GC(); close(gcDone) }()
	if !within(10*time.Second, gcDone) {
		fail("runtime.GC() did not finish within 10 s")
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR2); err != nil {
		fail("kill(SIGUSR2): %v", err)
	}
	got := make(chan struct{})
	go func() { <-usr2; close(got) }()
	if !within(5*time.Second, got) {
		fail("SIGUSR2 sent to itself did not arrive on the signal.Notify channel within 5 s")
	}

	sleep(300 * time.Millisecond)
	for i := range chains {
		if k, _ := chainState[i].get(); k <= now[i].k {
			fail("chain %d stuck at step %d", i, k)
		}
	}
	if pp := pingPongs.Load(); pp <= pp0 {
		fail("ping-pong stuck at %d", pp)
	}
	if s := spins.Load(); s <= spins0 {
		fail("spinner stuck at %d rounds", s)
	}
	return failures
}
