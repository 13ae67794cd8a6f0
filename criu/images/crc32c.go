package images

// CRC32C of a file written in pieces by several goroutines at once: each
// checksums its own pieces, and the checksum of the whole is combined
// from theirs, in file order, without reading the data again.
//
// A CRC is the remainder of the message, as a polynomial over GF(2),
// modulo the CRC's polynomial P. Appending B (len(B) bytes) to A
// multiplies A's remainder by x^(8*len(B)) and adds B's, so
//
//	crc(A|B) = crc(A) * x^(8*len(B)) mod P  xor  crc(B)
//
// The pre- and post-inversion of the standard CRC cancel out of that
// sum. Polynomials are kept bit-reversed, as the reflected CRC32C is
// computed: bit 31 holds x^0, bit 0 holds x^31.

// castagnoliReversed is P (0x1EDC6F41) bit-reversed.
const castagnoliReversed = 0x82F63B78

// gfMulMod returns a*b mod P, both reversed.
func gfMulMod(a, b uint32) uint32 {
	var p uint32
	for m := uint32(1) << 31; m != 0; m >>= 1 {
		if a&m != 0 {
			p ^= b
		}
		// b *= x: a shift towards the high powers, reduced by P.
		if b&1 != 0 {
			b = b>>1 ^ castagnoliReversed
		} else {
			b >>= 1
		}
	}
	return p
}

// xPow2k holds x^(2^k) mod P, reversed, for every k xPowBytes needs:
// 3 (a byte is x^8) plus each of a 64-bit length's bits.
var xPow2k = func() (t [3 + 64]uint32) {
	t[0] = 1 << 30 // x^1
	for k := 1; k < len(t); k++ {
		t[k] = gfMulMod(t[k-1], t[k-1])
	}
	return t
}()

// xPowBytes returns x^(8*n) mod P, reversed.
func xPowBytes(n uint64) uint32 {
	p := uint32(1) << 31 // x^0
	for k := 3; n != 0; n, k = n>>1, k+1 {
		if n&1 != 0 {
			p = gfMulMod(xPow2k[k], p)
		}
	}
	return p
}

// CombineCRC32C returns the CRC32C (as crc32.Checksum with Castagnoli
// computes it) of A followed by B, given that of A, that of B and the
// length of B.
func CombineCRC32C(crcA, crcB uint32, lenB uint64) uint32 {
	if lenB == 0 {
		return crcA
	}
	return gfMulMod(xPowBytes(lenB), crcA) ^ crcB
}
