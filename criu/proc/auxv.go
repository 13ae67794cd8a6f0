package proc

import (
	"encoding/binary"
	"errors"
)

// atNull is AT_NULL, the key of the pair that ends the vector.
const atNull = 0

// ParseAuxv decodes /proc/PID/auxv (pairs of native-endian uint64 ending
// in AT_NULL) into the flat word list, AT_NULL pair included. Bytes after
// the AT_NULL pair are ignored; the kernel prints none.
func ParseAuxv(b []byte) ([]uint64, error) {
	return parseAuxv(b, "auxv")
}

// ReadAuxv reads /proc/PID/auxv.
func ReadAuxv(pid int) ([]uint64, error) {
	path := pidFile(pid, "auxv")
	b, err := readSingle(path)
	if err != nil {
		return nil, err
	}
	return parseAuxv(b, path)
}

func parseAuxv(b []byte, file string) ([]uint64, error) {
	const pair = 16
	var words []uint64
	for off := 0; ; off += pair {
		if off+pair > len(b) {
			if off == len(b) {
				return nil, &ParseError{File: file, Offset: int64(off), Err: errNoAtNull}
			}
			return nil, &ParseError{File: file, Offset: int64(off), Err: errTruncatedPair}
		}
		key := binary.NativeEndian.Uint64(b[off:])
		val := binary.NativeEndian.Uint64(b[off+8:])
		words = append(words, key, val)
		if key == atNull {
			return words, nil
		}
	}
}

var (
	errNoAtNull      = errors.New("no AT_NULL pair")
	errTruncatedPair = errors.New("truncated (key, value) pair")
)
