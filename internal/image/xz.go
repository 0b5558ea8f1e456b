package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// The x86 kernel's xz payload is made with `xz --x86 --lzma2`: a BCJ branch
// converter in front of LZMA2. github.com/ulikunitz/xz decodes only plain
// LZMA2 streams, so this file reads the xz container itself, hands the
// LZMA2 data to ulikunitz's raw LZMA2 reader and undoes the BCJ filter.

const (
	xzFilterX86   = 0x04
	xzFilterLZMA2 = 0x21
)

var xzMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0}

// decodeXZ decodes the first xz stream in data, which must produce at least
// size bytes; exactly size bytes are returned.
func decodeXZ(data []byte, size int64) ([]byte, error) {
	if len(data) < 12 || !bytes.HasPrefix(data, xzMagic) {
		return nil, errors.New("not an xz stream")
	}
	flags := data[6:8]
	if binary.LittleEndian.Uint32(data[8:12]) != crc32.ChecksumIEEE(flags) {
		return nil, errors.New("xz stream header is corrupt")
	}
	checkType := flags[1] & 0x0f
	r := bytes.NewReader(data[12:])
	out := make([]byte, 0, size)
	for int64(len(out)) < size {
		block, err := decodeXZBlock(r, checkType)
		if err != nil {
			return nil, err
		}
		if block == nil {
			break // the index: no more blocks
		}
		out = append(out, block...)
		if int64(len(out)) > maxVmlinux {
			return nil, fmt.Errorf("xz data decompresses to more than %d bytes", maxVmlinux)
		}
	}
	if int64(len(out)) < size {
		return nil, fmt.Errorf("xz data holds %d bytes but the payload records %d", len(out), size)
	}
	return out[:size], nil
}

// decodeXZBlock decodes one block; it returns nil, nil at the index.
func decodeXZBlock(r *bytes.Reader, checkType byte) ([]byte, error) {
	blockStart := r.Size() - int64(r.Len())
	first, err := r.ReadByte()
	if err != nil {
		return nil, truncatedErr(io.ErrUnexpectedEOF)
	}
	if first == 0 {
		return nil, nil
	}
	hdr := make([]byte, int(first)*4+4)
	hdr[0] = first
	if _, err := io.ReadFull(r, hdr[1:]); err != nil {
		return nil, truncatedErr(err)
	}
	body, sum := hdr[:len(hdr)-4], binary.LittleEndian.Uint32(hdr[len(hdr)-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return nil, errors.New("xz block header is corrupt")
	}
	filters, err := parseXZFilters(body)
	if err != nil {
		return nil, err
	}

	var (
		dictCap  int
		bcjStart uint32
		bcj      bool
	)
	for i, f := range filters {
		last := i == len(filters)-1
		switch {
		case f.id == xzFilterLZMA2 && last && len(f.props) == 1:
			dc, err := lzma.DecodeDictCap(f.props[0])
			if err != nil {
				return nil, fmt.Errorf("xz LZMA2 dictionary size: %w", err)
			}
			dictCap = int(dc)
		case f.id == xzFilterX86 && !last && (len(f.props) == 0 || len(f.props) == 4):
			bcj = true
			if len(f.props) == 4 {
				bcjStart = binary.LittleEndian.Uint32(f.props)
			}
		default:
			return nil, fmt.Errorf("xz filter 0x%x is not supported (only x86 BCJ and LZMA2)", f.id)
		}
	}
	if dictCap == 0 {
		return nil, errors.New("xz block does not end with an LZMA2 filter")
	}
	if dictCap < lzma.MinDictCap {
		dictCap = lzma.MinDictCap
	}

	lr, err := lzma.Reader2Config{DictCap: dictCap}.NewReader2(r)
	if err != nil {
		return nil, fmt.Errorf("xz LZMA2 stream: %w", err)
	}
	out, err := io.ReadAll(io.LimitReader(lr, maxVmlinux+1))
	if err != nil {
		return nil, truncatedErr(err)
	}
	if bcj {
		bcjX86Decode(out, bcjStart)
	}

	// Block padding brings the block to a multiple of four bytes; then the
	// check over the uncompressed data follows.
	pos := r.Size() - int64(r.Len())
	for ; (pos-blockStart)%4 != 0; pos++ {
		if b, err := r.ReadByte(); err != nil || b != 0 {
			return nil, errors.New("xz block padding is corrupt")
		}
	}
	if err := verifyXZCheck(r, checkType, out); err != nil {
		return nil, err
	}
	return out, nil
}

type xzFilter struct {
	id    uint64
	props []byte
}

func parseXZFilters(hdr []byte) ([]xzFilter, error) {
	flags := hdr[1]
	if flags&0x3c != 0 {
		return nil, errors.New("xz block header uses unknown flags")
	}
	p := hdr[2:]
	readVarint := func() (uint64, error) {
		v, n := binary.Uvarint(p)
		if n <= 0 {
			return 0, errors.New("xz block header is corrupt")
		}
		p = p[n:]
		return v, nil
	}
	if flags&0x40 != 0 { // compressed size present; not needed
		if _, err := readVarint(); err != nil {
			return nil, err
		}
	}
	if flags&0x80 != 0 { // uncompressed size present; not needed
		if _, err := readVarint(); err != nil {
			return nil, err
		}
	}
	filters := make([]xzFilter, int(flags&0x03)+1)
	for i := range filters {
		id, err := readVarint()
		if err != nil {
			return nil, err
		}
		n, err := readVarint()
		if err != nil {
			return nil, err
		}
		if n > uint64(len(p)) {
			return nil, errors.New("xz block header is corrupt")
		}
		filters[i] = xzFilter{id: id, props: p[:n]}
		p = p[n:]
	}
	return filters, nil
}

func verifyXZCheck(r *bytes.Reader, checkType byte, data []byte) error {
	var h hash.Hash
	switch checkType {
	case 0x00:
		return nil
	case 0x01:
		h = crc32.NewIEEE()
	case 0x04:
		h = crc64.New(crc64.MakeTable(crc64.ECMA))
	case 0x0a:
		h = sha256.New()
	default:
		// Unknown check types are allowed by the format; skip the field.
		size := []int{0, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64}[checkType]
		if _, err := r.Seek(int64(size), io.SeekCurrent); err != nil {
			return err
		}
		return nil
	}
	want := make([]byte, h.Size())
	if _, err := io.ReadFull(r, want); err != nil {
		return truncatedErr(err)
	}
	h.Write(data)
	got := h.Sum(nil)
	if checkType != 0x0a { // CRCs are stored little-endian
		for i, j := 0, len(got)-1; i < j; i, j = i+1, j-1 {
			got[i], got[j] = got[j], got[i]
		}
	}
	if !bytes.Equal(got, want) {
		return errors.New("xz data fails its integrity check (the kernel file is corrupt)")
	}
	return nil
}

// bcjX86Decode undoes xz's x86 branch converter in place: E8/E9 (call/jmp
// rel32) targets were made absolute to compress better and are turned back
// into relative ones. A port of xz-embedded's bcj_x86 (public domain) for
// a whole buffer at once; like it, the last four bytes are left alone.
func bcjX86Decode(buf []byte, startPos uint32) {
	maskToAllowed := [8]bool{true, true, true, false, true, false, false, false}
	maskToBitNum := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	testMSByte := func(b byte) bool { return b == 0x00 || b == 0xff }

	if len(buf) <= 4 {
		return
	}
	size := len(buf) - 4
	prevPos := -1
	var prevMask uint32
	for i := 0; i < size; i++ {
		if buf[i]&0xfe != 0xe8 {
			continue
		}
		d := i - prevPos
		if d > 3 {
			prevMask = 0
		} else {
			prevMask = (prevMask << (d - 1)) & 7
			if prevMask != 0 {
				b := buf[i+4-int(maskToBitNum[prevMask])]
				if !maskToAllowed[prevMask] || testMSByte(b) {
					prevPos = i
					prevMask = prevMask<<1 | 1
					continue
				}
			}
		}
		prevPos = i
		if !testMSByte(buf[i+4]) {
			prevMask = prevMask<<1 | 1
			continue
		}
		src := binary.LittleEndian.Uint32(buf[i+1:])
		var dest uint32
		for {
			dest = src - (startPos + uint32(i) + 5)
			if prevMask == 0 {
				break
			}
			j := maskToBitNum[prevMask] * 8
			if !testMSByte(byte(dest >> (24 - j))) {
				break
			}
			src = dest ^ (1<<(32-j) - 1)
		}
		dest &= 0x01ffffff
		dest |= -(dest & 0x01000000)
		binary.LittleEndian.PutUint32(buf[i+1:], dest)
		i += 4
	}
}
