package criu

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/proc"
	"github.com/ctcr/ctcr/internal/atomicfile"
)

// The write tracking of a pre-dump must outlive the ctcr that made it:
// the next pre-dump or the dump, another ctcr, needs the userfaultfds,
// and a userfaultfd closed by its last holder ends the tracking. So the
// pre-dump hands them to a tracker, a small detached ctcr that holds
// them and gives them to the next ctcr that asks, then exits. It also
// exits, dropping the tracking, once every tracked task is gone or after
// TrackerMaxAge.
//
// Its socket is TrackerDir/PID-START.sock for the root task of the tree
// (its PID and start time): connect, read a 4-byte length and that much
// JSON ([]TrackedTask), then as many messages of one byte as it takes to
// carry the fds with SCM_RIGHTS, in the order of the tasks.

// TrackerDir holds the trackers' sockets.
const TrackerDir = "/run/ctcr/track"

// TrackerCommand is the hidden ctcr subcommand that runs a tracker
// (ServeTracking); the pre-dump starts it.
const TrackerCommand = "track-writes"

// TrackerMaxAge bounds how long a tracker waits for a dump.
const TrackerMaxAge = 24 * time.Hour

// fdsPerMessage stays below the kernel's SCM_MAX_FD (253).
const fdsPerMessage = 200

// TrackedTask is one task whose writes a tracker follows: its userfaultfd
// goes with it, and Vmas are the mappings registered with it.
type TrackedTask struct {
	Pid   int         `json:"pid"`
	Start uint64      `json:"start"` // start time, so a reused PID is not taken for it
	Vmas  [][3]uint64 `json:"vmas"`  // start, end, offset
}

// trackerSocket is the socket of the tracker of the tree rooted at pid.
func trackerSocket(pid int, start uint64) string {
	return filepath.Join(TrackerDir, fmt.Sprintf("%d-%d.sock", pid, start))
}

// ServeTracking is the tracker: it holds fds (one userfaultfd per task
// of tasks) on the socket of root until a ctcr takes them, every task
// is gone, or maxAge passes. It closes ready once it listens.
func ServeTracking(root int, rootStart uint64, tasks []TrackedTask, fds []*os.File, ready io.Closer, maxAge time.Duration) error {
	defer ready.Close()
	if len(tasks) != len(fds) {
		return fmt.Errorf("tracker: %d tasks but %d fds", len(tasks), len(fds))
	}
	path := trackerSocket(root, rootStart)
	os.Remove(path)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("tracker: %w", err)
	}
	defer l.Close()
	ready.Close()
	deadline := time.Now().Add(maxAge)
	for time.Now().Before(deadline) {
		alive := false
		for _, t := range tasks {
			if st, err := proc.ReadStat(t.Pid, t.Pid); err == nil && st.StartTime == t.Start && st.State != 'Z' {
				alive = true
				break
			}
		}
		if !alive {
			return nil
		}
		l.SetDeadline(time.Now().Add(time.Second))
		c, err := l.AcceptUnix()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			return fmt.Errorf("tracker: %w", err)
		}
		err = sendTracking(c, tasks, fds)
		c.Close()
		if err == nil {
			return nil // handed over
		}
	}
	return nil
}

func sendTracking(c *net.UnixConn, tasks []TrackedTask, fds []*os.File) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := json.Marshal(tasks)
	if err != nil {
		return err
	}
	head := binary.LittleEndian.AppendUint32(nil, uint32(len(b)))
	if _, err := c.Write(append(head, b...)); err != nil {
		return err
	}
	for i := 0; i < len(fds); i += fdsPerMessage {
		var raw []int
		for _, f := range fds[i:min(len(fds), i+fdsPerMessage)] {
			raw = append(raw, int(f.Fd()))
		}
		if _, _, err := c.WriteMsgUnix([]byte{1}, unix.UnixRights(raw...), nil); err != nil {
			return err
		}
	}
	// Wait for the taker to hang up: it has every fd then.
	var one [1]byte
	c.Read(one[:])
	return nil
}

// takeTracking takes the userfaultfds of the tree rooted at pid from its
// tracker, which then exits. It returns nil, nil if there is none.
func takeTracking(pid int) ([]TrackedTask, []int, error) {
	st, err := proc.ReadStat(pid, pid)
	if err != nil {
		return nil, nil, fmt.Errorf("task %d: %w", pid, ErrNoTask)
	}
	path := trackerSocket(pid, st.StartTime)
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ECONNREFUSED) {
			os.Remove(path)
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("write tracker of task %d: %w", pid, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var head [4]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		return nil, nil, fmt.Errorf("write tracker of task %d: %w", pid, err)
	}
	n := binary.LittleEndian.Uint32(head[:])
	if n > 64<<20 {
		return nil, nil, fmt.Errorf("write tracker of task %d: a %d-byte header", pid, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		return nil, nil, fmt.Errorf("write tracker of task %d: %w", pid, err)
	}
	var tasks []TrackedTask
	if err := json.Unmarshal(b, &tasks); err != nil {
		return nil, nil, fmt.Errorf("write tracker of task %d: %w", pid, err)
	}
	var fds []int
	oob := make([]byte, unix.CmsgSpace(4*fdsPerMessage))
	for len(fds) < len(tasks) {
		var one [1]byte
		_, oobn, _, _, err := c.ReadMsgUnix(one[:], oob)
		if err != nil {
			closeAll(fds)
			return nil, nil, fmt.Errorf("write tracker of task %d: %w", pid, err)
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			closeAll(fds)
			return nil, nil, fmt.Errorf("write tracker of task %d: %w", pid, err)
		}
		got := 0
		for _, m := range msgs {
			r, err := unix.ParseUnixRights(&m)
			if err != nil {
				continue
			}
			for _, fd := range r {
				unix.CloseOnExec(fd)
			}
			fds = append(fds, r...)
			got += len(r)
		}
		if got == 0 {
			closeAll(fds)
			return nil, nil, fmt.Errorf("write tracker of task %d: a message without fds", pid)
		}
	}
	if len(fds) != len(tasks) {
		closeAll(fds)
		return nil, nil, fmt.Errorf("write tracker of task %d: %d fds for %d tasks", pid, len(fds), len(tasks))
	}
	return tasks, fds, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// startTracker hands the userfaultfds of procs to a new tracker for the
// tree rooted at root, and returns once it listens. ctcr's own
// descriptors are closed either way: the tracking goes on in the
// tracker, or ends.
func startTracker(root int, procs []*preProc) error {
	var files []*os.File
	var tasks []TrackedTask
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, p := range procs {
		if p.uffd < 0 {
			continue
		}
		files = append(files, os.NewFile(uintptr(p.uffd), "userfaultfd"))
		p.uffd = -1 // the file owns it now
		t := TrackedTask{Pid: p.pid, Start: p.start}
		for _, v := range p.vmas {
			t.Vmas = append(t.Vmas, [3]uint64{v.GetStart(), v.GetEnd(), v.GetPgoff()})
		}
		tasks = append(tasks, t)
	}
	st, err := proc.ReadStat(root, root)
	if err != nil {
		return fmt.Errorf("task %d: %w", root, ErrNoTask)
	}
	if len(tasks) == 0 {
		return nil
	}
	if err := atomicfile.PrivateDir(TrackerDir); err != nil {
		return err
	}
	sweepTrackerSockets(TrackerDir)
	b, err := json.Marshal(tasks)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	ready, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer ready.Close()
	cmd := exec.Command(exe, TrackerCommand, "--root", fmt.Sprint(root), "--start", fmt.Sprint(st.StartTime))
	cmd.Stdin = bytes.NewReader(b)
	cmd.ExtraFiles = append([]*os.File{w}, files...)
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return fmt.Errorf("start the write tracker: %w", err)
	}
	cmd.Process.Release()
	// The tracker closes its end of the pipe once it listens (or dies).
	var one [1]byte
	ready.SetReadDeadline(time.Now().Add(10 * time.Second))
	ready.Read(one[:])
	if _, err := os.Stat(trackerSocket(root, st.StartTime)); err != nil {
		return fmt.Errorf("the write tracker did not start: %w", err)
	}
	return nil
}

// sweepTrackerSockets removes from dir the sockets of trackers whose
// tree is gone: the root task of the name (PID-START.sock) no longer
// runs with that start time. A tracker that ends removes its own; one
// that was killed (SIGKILL, an OOM kill) leaves it, and such sockets
// would pile up in /run until a reboot, one of them under a PID a new
// task reuses. The tracker of a live tree is left alone, even a killed
// one: telling it from a live tracker would mean connecting, which
// takes the tracking over.
func sweepTrackerSockets(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		var pid int
		var start uint64
		var rest string
		if n, _ := fmt.Sscanf(e.Name(), "%d-%d%s", &pid, &start, &rest); n != 3 || rest != ".sock" || pid <= 0 {
			continue
		}
		if st, err := proc.ReadStat(pid, pid); err == nil && st.StartTime == start && st.State != 'Z' {
			continue
		}
		os.Remove(filepath.Join(dir, e.Name()))
	}
}
