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
