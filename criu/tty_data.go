package criu

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Bytes buffered inside a pty pair go two ways: output the slave wrote
// that waits for the master's reader, and input the master wrote that
// waits, already through the line discipline (echoed, translated, cut
// into lines), for the slave's reader. A terminal cannot be peeked, so
// the dump reads both out while the tasks are stopped and, if the tasks
// run on, puts them back before they do. Both directions go back through
// a slave description of ctcr's own (TIOCGPTPEER on the master), with
// every setting that would process them a second time turned off:
//
//   - output is written to the slave with OPOST off, so ONLCR and the
//     like do not apply twice;
//   - input is pushed into the slave's line discipline with TIOCSTI, one
//     byte at a time and synchronously, with echo, signals and input
//     translations off and the editing characters disabled, but in the
//     same canonical mode: complete lines come back as lines and a
//     partial line stays partial.
//
// Reading the input needs the same line discipline in non-canonical mode
// for a moment: in canonical mode a read returns only complete lines.
// Locked termios bits would silently undo these changes, so they are
// lifted for the moment too.

// ptyPeer opens a slave description of master's pty for ctcr: the pty is
// unlocked for the moment if it is locked.
func ptyPeer(master *os.File) (*os.File, error) {
	mfd := int(master.Fd())
	locked, err := unix.IoctlGetInt(mfd, unix.TIOCGPTLCK)
	if err != nil {
		return nil, fmt.Errorf("TIOCGPTLCK: %w", err)
	}
	if locked != 0 {
		if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
			return nil, fmt.Errorf("unlock: %w", err)
		}
		defer unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 1)
	}
	fd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(mfd), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC))
	if errno != 0 {
		return nil, fmt.Errorf("open the slave (TIOCGPTPEER): %w", errno)
	}
	return os.NewFile(fd, "pty slave"), nil
}

// readAvailable reads fd until nothing is left. A file description
// shared with a task is made non-blocking only for the moment. In packet
// mode every read starts with a status byte: data comes after a zero,
// and a status report alone is dropped.
func readAvailable(fd int, packet bool) ([]byte, error) {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return nil, err
	}
	if fl&unix.O_NONBLOCK == 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_NONBLOCK); err != nil {
			return nil, err
		}
		defer unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	}
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(fd, buf)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EIO), n == 0 && err == nil:
			// EIO: the other end is closed and nothing is left.
			return out, nil
		case err != nil:
			return nil, err
		}
		chunk := buf[:n]
		if packet {
			if chunk[0] != 0 {
				continue
			}
			chunk = chunk[1:]
		}
		out = append(out, chunk...)
	}
}

// withTermios runs f while slave's settings are tmp, then puts t back,
// lifting locked bits for the moment.
func withTermios(slave int, t *unix.Termios, tmp *unix.Termios, f func() error) error {
	locked, err := unix.IoctlGetTermios(slave, unix.TIOCGLCKTRMIOS)
	if err != nil {
		return fmt.Errorf("TIOCGLCKTRMIOS: %w", err)
	}
	if *locked != (unix.Termios{}) {
		if err := unix.IoctlSetTermios(slave, unix.TIOCSLCKTRMIOS, &unix.Termios{}); err != nil {
			return fmt.Errorf("unlock termios: %w", err)
		}
		defer unix.IoctlSetTermios(slave, unix.TIOCSLCKTRMIOS, locked)
	}
	if err := unix.IoctlSetTermios(slave, unix.TCSETS, tmp); err != nil {
		return fmt.Errorf("TCSETS: %w", err)
	}
	ferr := f()
	if err := unix.IoctlSetTermios(slave, unix.TCSETS, t); err != nil {
		return fmt.Errorf("TCSETS back: %w", err)
	}
	return ferr
}

// takePtyInput reads the input waiting for the slave's readers, through
// ctcr's slave description.
func takePtyInput(slave *os.File) ([]byte, error) {
	sfd := int(slave.Fd())
	t, err := unix.IoctlGetTermios(sfd, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("TCGETS: %w", err)
	}
	if t.Lflag&unix.ICANON == 0 {
		return readAvailable(sfd, false)
	}
	raw := *t
	raw.Lflag &^= unix.ICANON
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	var in []byte
	err = withTermios(sfd, t, &raw, func() error {
		in, err = readAvailable(sfd, false)
		return err
	})
	return in, err
}

// pushPtyInput puts input back in front of the slave's readers as if it
// had just been typed, without echoing or translating it again.
func pushPtyInput(slave *os.File, in []byte) error {
	if len(in) == 0 {
		return nil
	}
	sfd := int(slave.Fd())
	t, err := unix.IoctlGetTermios(sfd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("TCGETS: %w", err)
	}
	quiet := *t
	quiet.Lflag &^= unix.ECHO | unix.ECHOE | unix.ECHOK | unix.ECHONL | unix.ECHOCTL | unix.ECHOPRT | unix.ECHOKE | unix.ISIG | unix.IEXTEN
	quiet.Iflag &^= unix.ICRNL | unix.INLCR | unix.IGNCR | unix.IUCLC | unix.ISTRIP | unix.PARMRK | unix.INPCK | unix.IMAXBEL
	// The kernel never treats a disabled (zero) character as special.
	quiet.Cc[unix.VERASE], quiet.Cc[unix.VKILL], quiet.Cc[unix.VEOF] = 0, 0, 0
	return withTermios(sfd, t, &quiet, func() error {
		for i, c := range in {
			if err := unix.IoctlSetPointerInt(sfd, unix.TIOCSTI, int(c)); err != nil {
				return fmt.Errorf("TIOCSTI byte %d of %d: %w", i, len(in), err)
			}
		}
		return nil
	})
}

// pushPtyOutput writes output back in front of the master's readers,
// without the slave's output processing applying twice.
func pushPtyOutput(slave *os.File, out []byte) error {
	if len(out) == 0 {
		return nil
	}
	sfd := int(slave.Fd())
	t, err := unix.IoctlGetTermios(sfd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("TCGETS: %w", err)
	}
	plain := *t
	plain.Oflag &^= unix.OPOST
	return withTermios(sfd, t, &plain, func() error {
		for off := 0; off < len(out); {
			n, err := unix.Write(sfd, out[off:])
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return fmt.Errorf("write %d bytes: %w", len(out)-off, err)
			}
			off += n
		}
		return nil
	})
}

// ptyData is what was buffered in one pty at dump.
type ptyData struct {
	out []byte // for the master's readers
	in  []byte // for the slave's readers
}

// takePtyData reads what is buffered in master's pty; the input only if
// a slave is held in the tree (withSlave): otherwise no reader is left
// to get it. It returns ctcr's own slave description, which giveBack
// needs, when it read anything.
func takePtyData(master *os.File, withSlave bool) (*ptyData, *os.File, error) {
	packet, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPKT)
	if err != nil {
		return nil, nil, fmt.Errorf("TIOCGPKT: %w", err)
	}
	out, err := readAvailable(int(master.Fd()), packet != 0)
	if err != nil {
		return nil, nil, fmt.Errorf("read the master: %w", err)
	}
	d := &ptyData{out: out}
	if !withSlave && len(out) == 0 {
		return d, nil, nil
	}
	peer, err := ptyPeer(master)
	if err != nil {
		return nil, nil, err
	}
	if withSlave {
		if d.in, err = takePtyInput(peer); err != nil {
			peer.Close()
			return nil, nil, fmt.Errorf("read the slave's input: %w", err)
		}
	}
	return d, peer, nil
}

// put gives the bytes back to the pty of slave.
func (d *ptyData) put(slave *os.File) error {
	if err := pushPtyInput(slave, d.in); err != nil {
		return fmt.Errorf("input: %w", err)
	}
	if err := pushPtyOutput(slave, d.out); err != nil {
		return fmt.Errorf("output: %w", err)
	}
	return nil
}
