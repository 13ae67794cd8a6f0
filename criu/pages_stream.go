package criu

// Streamed pages images (dump -D -). A caller that sends a checkpoint
// somewhere else as it is made (cmd/ctcr's tar stream) registers a
// PageStreamer for a directory with StreamPagesUnder; from then on every
// pages image a dump writes below that directory goes to the streamer,
// in order, instead of into a file: the pages never land on disk, and
// ctcr holds no more of them than the sink's few buffers. The sink still
// computes the image's size and CRC32C, and the image's manifest lists
// it (images.RecordStreamed) as if it were there.

import (
	"path/filepath"
	"strings"
	"sync"

	"github.com/ctcr/ctcr/criu/images"
)

// PageStreamer receives the pages images of a dump instead of the file
// system.
type PageStreamer interface {
	// BeginPages starts the image that would be at path; the pieces of
	// it follow on the returned file, in order. It may block while
	// another image is being sent.
	BeginPages(path string) (PageStreamFile, error)
}

// PageStreamFile is one pages image being streamed.
type PageStreamFile interface {
	// Write sends the next piece of the image; b is the caller's again
	// on return.
	Write(b []byte) error
	// End says the image is whole: size bytes with CRC32C crc.
	End(size int64, crc uint32) error
	// Abort says the image will not be finished (the dump failed).
	Abort()
}

var pageStreams = struct {
	sync.Mutex
	m map[string]PageStreamer // by directory; guarded by the mutex
}{m: map[string]PageStreamer{}}

// StreamPagesUnder sends every pages image written below dir to s until
// the returned function is called.
func StreamPagesUnder(dir string, s PageStreamer) (stop func()) {
	dir = filepath.Clean(dir)
	pageStreams.Lock()
	pageStreams.m[dir] = s
	pageStreams.Unlock()
	return func() {
		pageStreams.Lock()
		delete(pageStreams.m, dir)
		pageStreams.Unlock()
		images.ForgetStreamed(dir)
	}
}

// pageStreamFor returns the streamer of the pages image at path, if any.
func pageStreamFor(path string) PageStreamer {
	pageStreams.Lock()
	defer pageStreams.Unlock()
	for d := filepath.Dir(path); ; d = filepath.Dir(d) {
		if s, ok := pageStreams.m[d]; ok {
			return s
		}
		if d == filepath.Dir(d) || !strings.Contains(d, "/") {
			return nil
		}
	}
}
