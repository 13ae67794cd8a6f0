package images

import (
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

// TestCombineCRC32C: the combined checksum of every split of random
// data, in two pieces and in many, is the checksum of the whole.
func TestCombineCRC32C(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 1<<16+13)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	want := crc32.Checksum(data, Castagnoli)
	for _, cut := range []int{0, 1, 7, 4096, 1 << 15, len(data) - 1, len(data)} {
		a, b := data[:cut], data[cut:]
		if got := CombineCRC32C(crc32.Checksum(a, Castagnoli), crc32.Checksum(b, Castagnoli), uint64(len(b))); got != want {
			t.Errorf("split at %d: combined %08x, want %08x", cut, got, want)
		}
	}
	var got uint32
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 1+rng.IntN(5000))
		got = CombineCRC32C(got, crc32.Checksum(rest[:n], Castagnoli), uint64(n))
		rest = rest[n:]
	}
	if got != want {
		t.Errorf("random pieces: combined %08x, want %08x", got, want)
	}
	// A length past 32 bits uses the high powers: x^(8n) for n = 2^33
	// is x^(8*2^32) squared.
	if xPowBytes(1<<33) != gfMulMod(xPowBytes(1<<32), xPowBytes(1<<32)) {
		t.Error("x^(8*2^33) differs from (x^(8*2^32))^2")
	}
}
