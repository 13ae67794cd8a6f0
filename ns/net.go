package ns

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// LoopbackUp brings up the loopback device of pid's (new) network
// namespace; the kernel then gives it 127.0.0.1 and ::1 again. Other
// interfaces are the runtime's business (CNI, runc's config).
func LoopbackUp(pid int) error {
	return inNamespace(pid, "net", unix.CLONE_NEWNET, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("loopback: %w", err)
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq("lo")
		if err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
			return fmt.Errorf("loopback flags: %w", err)
		}
		ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
		if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
			return fmt.Errorf("bring loopback up: %w", err)
		}
		return nil
	})
}
