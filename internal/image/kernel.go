// Package image builds and validates what a VM boots: the kernel (an ELF
// vmlinux, extracted from a bzImage when needed), an initrd that loads the
// drivers a modular kernel lacks, and the ext4 root file system built with
// debootstrap.
package image

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz/lzma"

	"github.com/banger-dev/banger/internal/system"
)

// KernelFormat is how a kernel file is packaged.
type KernelFormat string

// Kernel formats banger recognizes.
const (
	FormatELF     KernelFormat = "elf"
	FormatBzImage KernelFormat = "bzimage"
)

// Compression names a bzImage payload's compressor.
type Compression string

// Payload compressions, by the name the kernel's Kconfig uses.
const (
	CompressGzip  Compression = "gzip"
	CompressXZ    Compression = "xz"
	CompressZstd  Compression = "zstd"
	CompressLZ4   Compression = "lz4"
	CompressBzip2 Compression = "bzip2"
	CompressLZMA  Compression = "lzma"
	CompressLZO   Compression = "lzo"
)

// ErrNotKernel is returned for files that are neither an ELF vmlinux nor a
// bzImage.
var ErrNotKernel = errors.New("neither an ELF vmlinux nor a bzImage")

// KernelInfo describes a kernel file.
type KernelInfo struct {
	Format KernelFormat
	// Compression is the bzImage payload's compressor ("" for ELF).
	Compression Compression
	// PVH says the ELF has a Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY),
	// which Firecracker and QEMU use to enter the kernel directly. Only
	// known for ELF files.
	PVH bool
}

const (
	// setupHeaderEnd covers the bzImage fields read here (up to
	// payload_length at 0x24c).
	setupHeaderEnd = 0x250
	// maxVmlinux bounds the decompressed size a payload may claim, so a
	// corrupt size field cannot make banger allocate gigabytes.
	maxVmlinux = 512 << 20
	// xenElfNotePhys32Entry is the note type of the PVH entry point.
	xenElfNotePhys32Entry = 18
)

// InspectKernel says what the kernel file at path is. It reads the whole
// file only for ELF (to find the PVH note).
func InspectKernel(path string) (KernelInfo, error) {
	data, err := readKernelFile(path)
	if err != nil {
		return KernelInfo{}, err
	}
	if bytes.HasPrefix(data, []byte(elf.ELFMAG)) {
		pvh, err := hasPVHNote(data)
		if err != nil {
			return KernelInfo{}, fmt.Errorf("kernel %s: %w", path, err)
		}
		return KernelInfo{Format: FormatELF, PVH: pvh}, nil
	}
	payload, err := bzImagePayload(data)
	if err != nil {
		return KernelInfo{}, fmt.Errorf("kernel %s: %w", path, err)
	}
	return KernelInfo{Format: FormatBzImage, Compression: detectCompression(payload)}, nil
}

// ExtractVmlinux writes the ELF vmlinux for the kernel at src to dst: a
// bzImage's payload is decompressed, an ELF is copied. dst is replaced
// atomically, so a failure never leaves a partial kernel behind.
func ExtractVmlinux(src, dst string) (KernelInfo, error) {
	vmlinux, info, err := readVmlinux(src)
	if err != nil {
		return KernelInfo{}, err
	}
	if info.PVH, err = hasPVHNote(vmlinux); err != nil {
		return KernelInfo{}, fmt.Errorf("kernel %s: %w", src, err)
	}
	if err := system.WriteFileAtomic(dst, vmlinux, 0o644); err != nil {
		return KernelInfo{}, fmt.Errorf("kernel %s: %w", src, err)
	}
	return info, nil
}

// readVmlinux returns the ELF vmlinux of the kernel at src: the file
// itself, or a bzImage's decompressed payload.
func readVmlinux(src string) ([]byte, KernelInfo, error) {
	data, err := readKernelFile(src)
	if err != nil {
		return nil, KernelInfo{}, err
	}
	if bytes.HasPrefix(data, []byte(elf.ELFMAG)) {
		return data, KernelInfo{Format: FormatELF}, nil
	}
	payload, err := bzImagePayload(data)
	if err != nil {
		return nil, KernelInfo{}, fmt.Errorf("kernel %s: %w", src, err)
	}
	info := KernelInfo{Format: FormatBzImage, Compression: detectCompression(payload)}
	vmlinux, err := decompressPayload(payload)
	if err != nil {
		return nil, KernelInfo{}, fmt.Errorf("kernel %s: decompress %s payload: %w", src, info.Compression, err)
	}
	if !bytes.HasPrefix(vmlinux, []byte(elf.ELFMAG)) {
		return nil, KernelInfo{}, fmt.Errorf("kernel %s: the decompressed payload is not an ELF vmlinux", src)
	}
	return vmlinux, info, nil
}

func readKernelFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("kernel %s does not exist", path)
	}
	if err != nil {
		return nil, fmt.Errorf("read kernel: %w", err)
	}
	return data, nil
}

// bzImagePayload returns the compressed vmlinux inside a bzImage, located
// by the boot protocol's payload_offset/payload_length (protocol 2.08+,
// every kernel since 2.6.30).
func bzImagePayload(data []byte) ([]byte, error) {
	if len(data) < 0x206 || string(data[0x202:0x206]) != "HdrS" {
		return nil, ErrNotKernel
	}
	if len(data) < setupHeaderEnd {
		return nil, errors.New("bzImage is truncated inside its setup header")
	}
	le := binary.LittleEndian
	if v := le.Uint16(data[0x206:]); v < 0x208 {
		return nil, fmt.Errorf("bzImage boot protocol %d.%02d is too old to locate the payload (need 2.08)", v>>8, v&0xff)
	}
	setupSects := int(data[0x1f1])
	if setupSects == 0 {
		setupSects = 4 // the boot protocol's historical default
	}
	start := int64(setupSects+1) * 512
	off := start + int64(le.Uint32(data[0x248:]))
	n := int64(le.Uint32(data[0x24c:]))
	if n < 4 || off+n > int64(len(data)) {
		return nil, fmt.Errorf("bzImage is truncated: payload needs bytes %d-%d but the file has %d", off, off+n, len(data))
	}
	return data[off : off+n], nil
}

func detectCompression(p []byte) Compression {
	switch {
	case bytes.HasPrefix(p, []byte{0x1f, 0x8b}):
		return CompressGzip
	case bytes.HasPrefix(p, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return CompressXZ
	case bytes.HasPrefix(p, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return CompressZstd
	case bytes.HasPrefix(p, []byte{0x02, 0x21, 0x4c, 0x18}):
		return CompressLZ4
	case bytes.HasPrefix(p, []byte("BZh")):
		return CompressBzip2
	case bytes.HasPrefix(p, []byte{0x5d, 0, 0}):
		return CompressLZMA
	case bytes.HasPrefix(p, []byte{0x89, 'L', 'Z', 'O'}):
		return CompressLZO
	}
	return ""
}

// decompressPayload inflates a payload. The kernel build appends the
// uncompressed size as 4 little-endian bytes to every payload; reading
// exactly that many bytes keeps decoders from tripping over those bytes as
// trailing garbage.
func decompressPayload(p []byte) ([]byte, error) {
	size := int64(binary.LittleEndian.Uint32(p[len(p)-4:]))
	if size == 0 || size > maxVmlinux {
		return nil, fmt.Errorf("payload claims an implausible size of %d bytes", size)
	}
	body := p[:len(p)-4]
	var (
		r   io.Reader
		err error
	)
	switch c := detectCompression(p); c {
	case CompressGzip:
		var zr *gzip.Reader
		if zr, err = gzip.NewReader(bytes.NewReader(body)); err == nil {
			zr.Multistream(false)
			r = zr
		}
	case CompressXZ:
		return decodeXZ(body, size)
	case CompressZstd:
		var zr *zstd.Decoder
		if zr, err = zstd.NewReader(bytes.NewReader(body), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxVmlinux*2)); err == nil {
			defer zr.Close()
			r = zr
		}
	case CompressLZ4:
		return decodeLZ4Legacy(body, size)
	case CompressBzip2:
		r = bzip2.NewReader(bytes.NewReader(body))
	case CompressLZMA:
		r, err = lzma.NewReader(bytes.NewReader(body))
	case "":
		return nil, errors.New("unknown compression (no known magic at the payload start)")
	default:
		return nil, fmt.Errorf("%s-compressed kernels are not supported; use an ELF vmlinux or a gzip, xz, zstd, lz4, bzip2 or lzma bzImage", c)
	}
	if err != nil {
		return nil, err
	}
	out := make([]byte, size)
	if _, err := io.ReadFull(r, out); err != nil {
		return nil, truncatedErr(err)
	}
	// One more read reaches the end of the stream, where decoders check
	// their checksums.
	var extra [1]byte
	if n, err := r.Read(extra[:]); n > 0 {
		return nil, errors.New("payload holds more data than its recorded size")
	} else if err != nil && !errors.Is(err, io.EOF) {
		return nil, truncatedErr(err)
	}
	return out, nil
}

// truncatedErr turns an early end of data into a sentence.
func truncatedErr(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return errors.New("compressed data ends early (the kernel file is truncated or corrupt)")
	}
	return err
}

// hasPVHNote reports whether the ELF carries XEN_ELFNOTE_PHYS32_ENTRY in a
// PT_NOTE segment.
func hasPVHNote(data []byte) (bool, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return false, fmt.Errorf("not a valid ELF file: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		notes, err := io.ReadAll(p.Open())
		if err != nil {
			return false, fmt.Errorf("read ELF notes: %w", err)
		}
		if findNote(notes, f.ByteOrder, "Xen", xenElfNotePhys32Entry) {
			return true, nil
		}
	}
	return false, nil
}

// findNote walks ELF notes (namesz, descsz, type, name, desc; 4-byte
// aligned) looking for one with the given owner name and type.
func findNote(b []byte, bo binary.ByteOrder, name string, typ uint32) bool {
	align := func(n uint32) uint32 { return (n + 3) &^ 3 }
	for len(b) >= 12 {
		namesz, descsz, t := bo.Uint32(b), bo.Uint32(b[4:]), bo.Uint32(b[8:])
		b = b[12:]
		if uint64(align(namesz))+uint64(align(descsz)) > uint64(len(b)) {
			return false
		}
		n := string(bytes.TrimRight(b[:namesz], "\x00"))
		if n == name && t == typ {
			return true
		}
		b = b[align(namesz)+align(descsz):]
	}
	return false
}
