package criu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// GhostJanitorArg, as ctcr's first argument, runs the ghost janitor
// (RunGhostJanitor) instead of a command.
const GhostJanitorArg = "__ghost-janitor"

// A removed FIFO, device node, symlink or directory is made again at
// restore under a name (files_ghostkinds.go), which is removed once the
// object is held open, or for a directory once every task has its cwd and
// root. No system call makes those objects without a name, and ctcr may
// be killed (SIGKILL, the OOM killer) between the one that makes the name
// and the one that removes it: the name would stay in the restored
// tree's file system, a removed object back from the dead.
//
// So before it makes a name, ctcr tells the janitor: a child process in
// its own session, ignoring the terminal's signals, holding the other end
// of a SOCK_SEQPACKET socket pair whose only other holder is ctcr. Each
// message is one datagram:
//
//	'a' | id u32 | dev u64 | ino u64 | name   + SCM_RIGHTS: the parent dir
//	'f' | id u32                               (forget id: ctcr removed it)
//
// A message sent is queued in the janitor's socket before ctcr makes the
// name, so it is read even if ctcr dies right after. When ctcr's end
// closes, however ctcr died, the janitor reads end-of-file and removes
// every name it was not told to forget: one with dev and ino 0 (a
// temporary name with ctcr's PID in it, made by no one else) whatever it
// is, one with an inode only while that inode is still there (an object
// renamed to its old name, which a file of someone else's could have
// taken since). A restore that ends, well or not, removes its names
// itself, then closes the socket: the janitor exits with nothing to do.

// ghostJanitor is ctcr's side of the janitor of one restore.
type ghostJanitor struct {
	mu   sync.Mutex
	sock int       // ctcr's end of the socket pair; guarded by mu
	cmd  *exec.Cmd // immutable
	next uint32    // the next entry id; guarded by mu
}

// startGhostJanitor starts a janitor.
func startGhostJanitor() (*ghostJanitor, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("ghost janitor: %w", os.NewSyscallError("socketpair", err))
	}
	theirs := os.NewFile(uintptr(fds[1]), "ghost janitor socket")
	defer theirs.Close()
	cmd := exec.Command("/proc/self/exe", GhostJanitorArg)
	cmd.ExtraFiles = []*os.File{theirs} // fd 3
	// Its own session: a ^C to ctcr's process group must leave it to
	// clean up after ctcr.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("ghost janitor: %w", err)
	}
	return &ghostJanitor{sock: fds[0], cmd: cmd, next: 1}, nil
}

// add tells the janitor to remove name in directory dirfd should ctcr
// die before it calls forget with the id returned. With ino (and dev)
// not 0, it removes the name only while it is still that inode.
func (j *ghostJanitor) add(dirfd int, name string, dev, ino uint64) (uint32, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.sock < 0 {
		return 0, errors.New("ghost janitor: already stopped")
	}
	id := j.next
	j.next++
	msg := make([]byte, 21, 21+len(name))
	msg[0] = 'a'
	binary.LittleEndian.PutUint32(msg[1:], id)
	binary.LittleEndian.PutUint64(msg[5:], dev)
	binary.LittleEndian.PutUint64(msg[13:], ino)
	msg = append(msg, name...)
	if err := unix.Sendmsg(j.sock, msg, unix.UnixRights(dirfd), nil, unix.MSG_NOSIGNAL); err != nil {
		return 0, fmt.Errorf("ghost janitor: telling it of %s: %w", name, os.NewSyscallError("sendmsg", err))
	}
	return id, nil
}

// forget tells the janitor that ctcr removed the name of entry id (or
// never made it) itself.
func (j *ghostJanitor) forget(id uint32) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.sock < 0 || id == 0 {
		return
	}
	var msg [5]byte
	msg[0] = 'f'
	binary.LittleEndian.PutUint32(msg[1:], id)
	// A janitor that is gone cannot remove anything any more: nothing
	// to do about a failure.
	unix.Sendmsg(j.sock, msg[:], nil, nil, unix.MSG_NOSIGNAL)
}

// stop closes ctcr's end and waits (5 s at most) for the janitor to
// remove what it was not told to forget and exit.
func (j *ghostJanitor) stop() {
	j.mu.Lock()
	if j.sock < 0 {
		j.mu.Unlock()
		return
	}
	unix.Close(j.sock)
	j.sock = -1
	j.mu.Unlock()
	done := make(chan struct{})
	go func() { j.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		j.cmd.Process.Kill()
		<-done
	}
}

// ghostTempName is the temporary name, beside want, of the i-th try to
// make ghost gid again: `.WANT.ctcr-ghost-PID-GID-I`, with ctcr's PID so
// that no one else makes it, WANT shortened as needed to keep the name
// within NAME_MAX.
func ghostTempName(want string, gid uint32, i int) string {
	suffix := fmt.Sprintf(".ctcr-ghost-%d-%x-%d", os.Getpid(), gid, i)
	if room := unix.NAME_MAX - 1 - len(suffix); len(want) > room {
		want = want[:room]
	}
	return "." + want + suffix
}

// janitorEntry is a name the janitor removes at end-of-file.
type janitorEntry struct {
	dirfd    int
	name     string
	dev, ino uint64
}

// RunGhostJanitor is the janitor's whole life: it reads fd 3 until
// end-of-file, then removes the names left. It returns its exit status.
func RunGhostJanitor() int {
	signal.Ignore(unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGPIPE)
	const sock = 3
	entries := map[uint32]janitorEntry{}
	buf := make([]byte, 21+unix.PathMax)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			break // ctcr is gone, or done
		}
		var dirfd = -1
		if oobn > 0 {
			if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(cms) == 1 {
				if fds, err := unix.ParseUnixRights(&cms[0]); err == nil && len(fds) == 1 {
					dirfd = fds[0]
				}
			}
		}
		switch {
		case buf[0] == 'a' && n > 21 && dirfd >= 0:
			id := binary.LittleEndian.Uint32(buf[1:])
			entries[id] = janitorEntry{dirfd: dirfd,
				dev: binary.LittleEndian.Uint64(buf[5:]), ino: binary.LittleEndian.Uint64(buf[13:]),
				name: string(buf[21:n])}
		case buf[0] == 'f' && n == 5:
			id := binary.LittleEndian.Uint32(buf[1:])
			if e, ok := entries[id]; ok {
				unix.Close(e.dirfd)
				delete(entries, id)
			}
		default:
			if dirfd >= 0 {
				unix.Close(dirfd)
			}
			fmt.Fprintf(os.Stderr, "ctcr: ghost janitor: a message it does not know (%d bytes)\n", n)
		}
	}
	status := 0
	for _, e := range entries {
		if err := removeLeftName(e); err != nil {
			fmt.Fprintf(os.Stderr, "ctcr: ghost janitor: %v\n", err)
			status = 1
		}
	}
	return status
}

// removeLeftName removes the name of janitor entry e, if it is still
// what ctcr made.
func removeLeftName(e janitorEntry) error {
	var st unix.Stat_t
	if err := unix.Fstatat(e.dirfd, e.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if err == unix.ENOENT {
			return nil // never made, or removed before ctcr could say so
		}
		return fmt.Errorf("%s: %w", e.name, err)
	}
	if e.ino != 0 && (st.Ino != e.ino || st.Dev != e.dev) {
		return nil // someone else's since
	}
	flags := 0
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		flags = unix.AT_REMOVEDIR
	}
	if err := unix.Unlinkat(e.dirfd, e.name, flags); err != nil && err != unix.ENOENT {
		return fmt.Errorf("remove %s: %w", e.name, err)
	}
	return nil
}
