package image

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The kernel's lz4 payload uses lz4's legacy frame (`lz4 -l`): a magic
// number, then blocks each prefixed by its compressed size, each
// decompressing to at most 8 MiB. The block format is small enough to
// decode here rather than add a module for it.

const lz4LegacyBlockMax = 8 << 20

func decodeLZ4Legacy(data []byte, size int64) ([]byte, error) {
	if len(data) < 4 || binary.LittleEndian.Uint32(data) != 0x184c2102 {
		return nil, errors.New("not an lz4 legacy stream")
	}
	p := data[4:]
	out := make([]byte, 0, size)
	for int64(len(out)) < size {
		if len(p) < 4 {
			return nil, truncatedErr(errors.New("eof"))
		}
		n := binary.LittleEndian.Uint32(p)
		p = p[4:]
		if n == 0x184c2102 { // a concatenated legacy frame starts
			continue
		}
		if int64(n) > int64(len(p)) {
			return nil, errors.New("compressed data ends early (the kernel file is truncated or corrupt)")
		}
		var err error
		if out, err = lz4DecodeBlock(out, p[:n], lz4LegacyBlockMax); err != nil {
			return nil, err
		}
		p = p[n:]
	}
	if int64(len(out)) != size {
		return nil, fmt.Errorf("lz4 data holds %d bytes but the payload records %d", len(out), size)
	}
	return out, nil
}

// lz4DecodeBlock appends the decoded block src to dst; a block may add at
// most limit bytes.
func lz4DecodeBlock(dst, src []byte, limit int) ([]byte, error) {
	corrupt := errors.New("lz4 block is corrupt")
	start := len(dst)
	readLen := func(i *int, n int) (int, error) {
		if n != 15 {
			return n, nil
		}
		for {
			if *i >= len(src) {
				return 0, corrupt
			}
			b := src[*i]
			*i++
			n += int(b)
			if b != 255 {
				return n, nil
			}
		}
	}
	for i := 0; i < len(src); {
		token := src[i]
		i++
		lit, err := readLen(&i, int(token>>4))
		if err != nil {
			return nil, err
		}
		if lit > len(src)-i || len(dst)-start+lit > limit {
			return nil, corrupt
		}
		dst = append(dst, src[i:i+lit]...)
		i += lit
		if i == len(src) {
			break // the last sequence has literals only
		}
		if i+2 > len(src) {
			return nil, corrupt
		}
		off := int(binary.LittleEndian.Uint16(src[i:]))
		i += 2
		match, err := readLen(&i, int(token&15))
		if err != nil {
			return nil, err
		}
		match += 4
		if off == 0 || off > len(dst)-start || len(dst)-start+match > limit {
			return nil, corrupt
		}
		// Matches may overlap their own output (a run), so copy bytewise.
		from := len(dst) - off
		for k := 0; k < match; k++ {
			dst = append(dst, dst[from+k])
		}
	}
	return dst, nil
}
