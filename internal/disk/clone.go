// Package disk makes per-VM root disks from image root filesystems.
//
// Cloning tries the cheapest way first: a reflink (FICLONE) shares every
// block with the image until the VM writes; failing that, a sparse copy
// copies only the data extents (SEEK_DATA/SEEK_HOLE + copy_file_range), so
// a mostly-empty 4G image costs only what it holds. Device-mapper snapshots
// over loop devices need root and are provided elsewhere.
package disk

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Method says how a clone was made.
type Method string

// Clone methods, fastest first.
const (
	Reflink    Method = "reflink"
	SparseCopy Method = "sparse-copy"
)

// Clone copies src to a new file dst (which must not exist) and grows it to
// size bytes when size is larger than src. On error dst is removed.
func Clone(src, dst string, size int64) (m Method, err error) {
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("open image: %w", err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return "", err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("create disk: %w", err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(dst)
		}
	}()

	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil {
		m = Reflink
	} else {
		m = SparseCopy
		if err := sparseCopy(in, out, st.Size()); err != nil {
			return "", fmt.Errorf("copy image: %w", err)
		}
	}
	if size < st.Size() {
		size = st.Size()
	}
	if err := out.Truncate(size); err != nil {
		return "", fmt.Errorf("size disk: %w", err)
	}
	return m, out.Sync()
}

// sparseCopy copies the data extents of in to the same offsets in out,
// leaving holes as holes.
func sparseCopy(in, out *os.File, size int64) error {
	inFD, outFD := int(in.Fd()), int(out.Fd())
	var off int64
	for off < size {
		data, err := unix.Seek(inFD, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if err != nil {
			return fullCopy(in, out)
		}
		hole, err := unix.Seek(inFD, data, unix.SEEK_HOLE)
		if err != nil {
			return fullCopy(in, out)
		}
		for pos := data; pos < hole; {
			roff, woff := pos, pos
			n, err := unix.CopyFileRange(inFD, &roff, outFD, &woff, int(hole-pos), 0)
			if err != nil {
				if pos == 0 && (errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS)) {
					return fullCopy(in, out)
				}
				return err
			}
			if n == 0 {
				return io.ErrUnexpectedEOF
			}
			pos += int64(n)
		}
		off = hole
	}
	return nil
}

// fullCopy is the fallback for file systems without SEEK_DATA or
// copy_file_range support.
func fullCopy(in, out *os.File) error {
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := out.Seek(0, io.SeekStart); err != nil {
		return err
	}
	_, err := io.Copy(out, in)
	return err
}
