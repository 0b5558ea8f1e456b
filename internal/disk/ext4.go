package disk

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"

	"github.com/banger-dev/banger/internal/system"
)

// Ext4Info is what banger reads from an ext2/3/4 superblock.
type Ext4Info struct {
	BlockSize int64
	Blocks    int64
	// FSBytes is the file system's own size (blocks × block size); the file
	// or device holding it must be at least this large.
	FSBytes int64
	// FileBytes is the size of the file (or device) that holds it.
	FileBytes int64
	Label     string
	// CheckedClean is what resize2fs asks before it grows a file system
	// without `e2fsck -f` first: marked valid, no errors recorded, no
	// journal to replay, sane free counts, and checked (or made) since it
	// was last mounted. An image mkfs built and nobody mounted is; a disk a
	// guest has used is not.
	CheckedClean bool
}

// ErrNotExt4 is returned for files that hold no ext2/3/4 file system.
var ErrNotExt4 = errors.New("not an ext4 file system image")

const (
	superblockOffset = 1024
	ext4Magic        = 0xEF53
	incompat64Bit    = 0x80
	incompatRecover  = 0x4 // the journal needs replaying
	stateValid       = 0x1 // s_state: unmounted cleanly
	stateErrors      = 0x2 // s_state: errors detected
)

// ReadExt4 reads and sanity-checks the superblock of the ext2/3/4 image at
// path. Errors say in one sentence what is wrong with the file.
func ReadExt4(path string) (Ext4Info, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Ext4Info{}, fmt.Errorf("rootfs %s does not exist", path)
		}
		return Ext4Info{}, fmt.Errorf("open rootfs: %w", err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return Ext4Info{}, fmt.Errorf("size rootfs %s: %w", path, err)
	}
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, superblockOffset); err != nil {
		return Ext4Info{}, fmt.Errorf("rootfs %s: %w", path, ErrNotExt4)
	}
	return parseSuperblock(path, sb, size)
}

func parseSuperblock(path string, sb []byte, fileBytes int64) (Ext4Info, error) {
	le := binary.LittleEndian
	if le.Uint16(sb[56:58]) != ext4Magic {
		return Ext4Info{}, fmt.Errorf("rootfs %s: %w", path, ErrNotExt4)
	}
	logBlock := le.Uint32(sb[24:28])
	if logBlock > 6 { // 64 KiB is the largest block size ext4 knows
		return Ext4Info{}, fmt.Errorf("rootfs %s has a corrupt superblock (block size 2^%d KiB): %w", path, logBlock, ErrNotExt4)
	}
	info := Ext4Info{BlockSize: 1024 << logBlock, FileBytes: fileBytes}
	blocks := uint64(le.Uint32(sb[4:8]))
	if le.Uint32(sb[96:100])&incompat64Bit != 0 {
		blocks |= uint64(le.Uint32(sb[0x150:0x154])) << 32
	}
	info.Blocks = int64(blocks)
	info.FSBytes = info.Blocks * info.BlockSize
	label := sb[0x78:0x88]
	for i, c := range label {
		if c == 0 {
			label = label[:i]
			break
		}
	}
	info.Label = string(label)
	info.CheckedClean = checkedClean(sb, blocks)
	if info.FSBytes > fileBytes {
		return info, fmt.Errorf("rootfs %s is truncated: its file system needs %d bytes but the file has %d", path, info.FSBytes, fileBytes)
	}
	return info, nil
}

// checkedClean mirrors resize2fs's own test for "run e2fsck -f first"
// (e2fsprogs resize/main.c), with the 64-bit fields of the superblock.
func checkedClean(sb []byte, blocks uint64) bool {
	le := binary.LittleEndian
	state := le.Uint16(sb[0x3A:0x3C])
	if state&stateValid == 0 || state&stateErrors != 0 {
		return false
	}
	incompat := le.Uint32(sb[0x60:0x64])
	if incompat&incompatRecover != 0 {
		return false
	}
	freeBlocks := uint64(le.Uint32(sb[0x0C:0x10]))
	if incompat&incompat64Bit != 0 {
		freeBlocks |= uint64(le.Uint32(sb[0x158:0x15C])) << 32
	}
	if freeBlocks > blocks || le.Uint32(sb[0x10:0x14]) > le.Uint32(sb[0x00:0x04]) {
		return false
	}
	mtime := uint64(le.Uint32(sb[0x2C:0x30])) | uint64(sb[0x275])<<32
	lastcheck := uint64(le.Uint32(sb[0x40:0x44])) | uint64(sb[0x277])<<32
	return lastcheck >= mtime
}

// Ext4Spec describes a new ext4 image made from a directory tree.
type Ext4Spec struct {
	// SourceDir becomes the file system's root (mkfs.ext4 -d: no mount).
	SourceDir string
	// Path is the image file to create; it must not exist.
	Path string
	// SizeBytes is the file system size; the file stays sparse.
	SizeBytes int64
	// Label is the volume label (at most 16 bytes).
	Label string
}

// MakeExt4 creates an ext4 image populated from a directory without
// mounting anything, so it needs no privileges beyond reading the tree.
func MakeExt4(ctx context.Context, r system.Runner, s Ext4Spec) error {
	if s.SizeBytes < 8<<20 {
		return fmt.Errorf("ext4 image size %d bytes is too small: use at least 8 MiB", s.SizeBytes)
	}
	if len(s.Label) > 16 {
		return fmt.Errorf("ext4 label %q is longer than 16 bytes", s.Label)
	}
	if _, err := os.Lstat(s.Path); err == nil {
		return fmt.Errorf("image file %s already exists", s.Path)
	}
	args := []string{"-q", "-F", "-t", "ext4", "-d", s.SourceDir}
	if s.Label != "" {
		args = append(args, "-L", s.Label)
	}
	args = append(args, s.Path, strconv.FormatInt(s.SizeBytes/1024, 10)+"k")
	if _, err := system.RunChecked(ctx, r, system.Command{Path: "mkfs.ext4", Args: args}); err != nil {
		_ = os.Remove(s.Path)
		return fmt.Errorf("make ext4 image: %w", err)
	}
	return nil
}

// Resize grows the ext4 file system at path to sizeBytes. A regular file is
// first extended (sparsely); a block device (a dm snapshot) must already be
// that large. Shrinking is refused: a VM disk is never smaller than its image.
func Resize(ctx context.Context, r system.Runner, path string, sizeBytes int64) error {
	info, err := ReadExt4(path)
	if err != nil {
		return err
	}
	if sizeBytes < info.FSBytes {
		return fmt.Errorf("disk size %d bytes is smaller than the image's file system (%d bytes)", sizeBytes, info.FSBytes)
	}
	if sizeBytes == info.FSBytes {
		return nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Mode().IsRegular() && st.Size() < sizeBytes {
		if err := os.Truncate(path, sizeBytes); err != nil {
			return fmt.Errorf("grow disk file: %w", err)
		}
	}
	// resize2fs insists on a freshly checked file system; -p repairs only
	// what is safe unattended, and exit status 1 means "fixed something".
	// A clone of an image nobody mounted (what image build and mkfs make)
	// is one already, and the check was a third of a create's disk stage.
	if !info.CheckedClean {
		if _, err := system.RunChecked(ctx, r, system.Command{Path: "e2fsck", Args: []string{"-f", "-p", path}}); err != nil {
			var ee *system.ExitError
			if !errors.As(err, &ee) || ee.ExitCode != 1 {
				return fmt.Errorf("check file system before resize: %w", err)
			}
		}
	}
	size := strconv.FormatInt(sizeBytes/1024, 10) + "K"
	if _, err := system.RunChecked(ctx, r, system.Command{Path: "resize2fs", Args: []string{path, size}}); err != nil {
		return fmt.Errorf("resize file system: %w", err)
	}
	return nil
}
