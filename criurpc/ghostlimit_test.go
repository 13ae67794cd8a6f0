package criurpc

import (
	"testing"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"google.golang.org/protobuf/proto"
)

// TestGhostLimitMapping: an unset ghost_limit is ctcr's default (0),
// not the 1 MiB the field's getter reads; a set one is CRIU's meaning,
// 0 keeping no unlinked file with data.
func TestGhostLimitMapping(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts *rpc.CriuOpts
		want int64
	}{
		{"unset: ctcr's default", &rpc.CriuOpts{}, 0},
		{"CRIU's default said aloud", &rpc.CriuOpts{GhostLimit: proto.Uint32(1 << 20)}, 1 << 20},
		{"128 MiB", &rpc.CriuOpts{GhostLimit: proto.Uint32(128 << 20)}, 128 << 20},
		{"0: none", &rpc.CriuOpts{GhostLimit: proto.Uint32(0)}, -1},
	} {
		if got := ghostLimit(tc.opts); got != tc.want {
			t.Errorf("%s: ghostLimit = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "4096": 4096, "1K": 1 << 10, "128M": 128 << 20, "2g": 2 << 30, "64m": 64 << 20} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "12X", "-1", "1.5M", "9999999999G"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}
