package images

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
	"google.golang.org/protobuf/proto"
)

// FuzzReader feeds arbitrary bytes to NewReader and Next as a core and as
// a pagemap image, through a reader that knows its size and one that does
// not. It must never panic, must fail only with io.EOF or ErrCorrupt, and
// must never hold a buffer larger than the input allows.
func FuzzReader(f *testing.F) {
	for _, s := range samples() {
		if s.kind != Core && s.kind != Pagemap {
			continue
		}
		var b bytes.Buffer
		w, err := NewWriter(&b, s.kind)
		if err != nil {
			f.Fatal(err)
		}
		for _, m := range s.msgs {
			if err := w.Write(m); err != nil {
				f.Fatal(err)
			}
		}
		f.Add(b.Bytes())
		f.Add(b.Bytes()[:len(b.Bytes())-3])
	}
	f.Add(image(MagicCommon, Core.Magic, uint32(MaxEntrySize), "x"))
	f.Add(image(MagicCommon, Pagemap.Magic, uint32(0xffffffff)))
	f.Add(image(MagicCommon, Pagemap.Magic, uint32(2), "\x08\x01", uint32(4), "\x08\x80\x20\x10"))

	f.Fuzz(func(t *testing.T, data []byte) {
		for _, k := range []Kind{Core, Pagemap} {
			for _, sized := range []bool{true, false} {
				var src io.Reader = bytes.NewReader(data)
				if !sized {
					src = unsized{src}
				}
				r, err := NewReader(src, k, "fuzz.img")
				if err != nil {
					if !errors.Is(err, ErrCorrupt) {
						t.Fatalf("NewReader: %v does not wrap ErrCorrupt", err)
					}
					continue
				}
				for i := 0; ; i++ {
					var m proto.Message = &criu_core.CoreEntry{}
					if k == Pagemap {
						m = &pagemap.PagemapEntry{}
						if i == 0 {
							m = &pagemap.PagemapHead{}
						}
					}
					err := r.Next(m)
					limit := len(data)
					if !sized {
						limit = 2*len(data) + 2*readChunk
					}
					if cap(r.buf) > limit || cap(r.buf) > MaxEntrySize {
						t.Fatalf("entry buffer of %d bytes for %d bytes of input", cap(r.buf), len(data))
					}
					if err == io.EOF {
						break
					}
					if err != nil {
						if !errors.Is(err, ErrCorrupt) {
							t.Fatalf("Next: %v does not wrap ErrCorrupt", err)
						}
						break
					}
				}
			}
		}
	})
}
