package images

import (
	"bufio"
	"bytes"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// wholeImageMax is the largest image openImage reads at once. A restore
// reads some 7 small images per task (core, mm, pagemap, fdinfo, ids,
// fs, ...), each through an os.File that cost an fstat, four fcntl and
// an epoll_ctl on open and a read per entry and per length; read whole,
// an image is an open, an fstat, a read and a close.
const wholeImageMax = 1 << 20

// sizedReader is a reader that tells NewReader how many bytes it holds.
type sizedReader struct {
	io.Reader
	n int
}

func (s sizedReader) Len() int { return s.n }

// openImage opens the image at path for NewReader, which learns its
// size: a small one read whole into memory, a larger one through a
// buffer. close releases it. The error of a failed open is os.Open's (an
// *os.PathError wrapping the errno).
func openImage(path string) (r io.Reader, close func(), err error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	for err == unix.EINTR {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size > wholeImageMax {
		f := os.NewFile(uintptr(fd), path)
		var r io.Reader = f // sizeOf asks the file
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			r = sizedReader{bufio.NewReaderSize(f, 64<<10), int(st.Size)}
		}
		return r, func() { f.Close() }, nil
	}
	defer unix.Close(fd)
	// To the size fstat gave, which the entries' lengths are checked
	// against: no read to find the end (a file that grew since is read
	// to that size only; one that shrank ends at a read of 0).
	b := make([]byte, st.Size)
	n := 0
	for n < len(b) {
		k, err := unix.Pread(fd, b[n:], int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if k == 0 {
			break
		}
		n += k
	}
	return bytes.NewReader(b[:n]), func() {}, nil
}
