package criurpc

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/tty"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/internal/inroot"

	"github.com/ctcr/ctcr/criu/images"
)

// orphanPts says whether the checkpoint in imgDir holds a pty slave
// whose master was not in the tree: a container's console, whose master
// the runtime (runc's console socket) held.
func orphanPts(imgDir string) (bool, error) {
	path := filepath.Join(imgDir, images.TtyInfo.FileName())
	if _, err := os.Stat(path); err != nil {
		return false, nil
	}
	infos, err := images.ReadAll(path, images.TtyInfo, func() *tty.TtyInfoEntry { return &tty.TtyInfoEntry{} })
	if err != nil {
		return false, err
	}
	// tty_info ids are index<<1, |1 for the master (criu/tty.go).
	masters, slaves := map[uint32]bool{}, map[uint32]bool{}
	for _, in := range infos {
		if in.GetType() != tty.TtyType_PTY {
			continue
		}
		if in.GetId()&1 != 0 {
			masters[in.GetId()>>1] = true
		} else {
			slaves[in.GetId()>>1] = true
		}
	}
	for i := range slaves {
		if !masters[i] {
			return true, nil
		}
	}
	return false, nil
}

// consoleForRestore makes, once, the new pty whose slave the restored
// tasks get in place of the console they had, in the restored
// container's own devpts (its /dev/ptmx), and hands the master to the
// runtime with the orphan-pts-master notification (runc passes it on to
// its console socket), as CRIU does.
type consoleForRestore struct {
	s       *session
	rootPid func() int
	once    sync.Once
	slave   *os.File
	err     error
}

func (c *consoleForRestore) get() (*os.File, error) {
	c.once.Do(func() { c.slave, c.err = c.open() })
	return c.slave, c.err
}

func (c *consoleForRestore) open() (*os.File, error) {
	pid := c.rootPid()
	if pid == 0 {
		return nil, fmt.Errorf("no restored root yet")
	}
	root, err := inroot.OfTask(pid)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	// Inside the container's root: its /dev/ptmx is a link to pts/ptmx
	// of its own devpts.
	master, err := root.OpenFile("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0, inroot.InRoot)
	if err != nil {
		return nil, fmt.Errorf("open /dev/ptmx of the restored container: %w", err)
	}
	defer master.Close()
	mfd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		return nil, fmt.Errorf("unlock the new pty: %w", err)
	}
	sfd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(mfd), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	if errno != 0 {
		return nil, fmt.Errorf("open the new pty's slave (TIOCGPTPEER): %w", errno)
	}
	slave := os.NewFile(sfd, "pts")
	if err := c.s.notify("orphan-pts-master", 0, mfd); err != nil {
		slave.Close()
		return nil, err
	}
	return slave, nil
}
