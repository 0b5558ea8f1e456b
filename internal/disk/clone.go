// Package disk makes per-VM root disks from image root filesystems.
//
// Cloning tries the cheapest way first: a reflink (FICLONE) shares every
// block with the image until the VM writes; failing that, a sparse copy
// copies only the data extents (SEEK_DATA/SEEK_HOLE + copy_file_range), so
// a mostly-empty 4G image costs only what it holds. Device-mapper snapshots
// over loop devices (made by the privileged side) are faster still but need
// root and dm; Probe says which methods this host offers.
package disk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/system"
)

// Method says how a clone was made.
type Method string

// Clone methods, fastest first.
const (
	DMSnapshot Method = "dm-snapshot"
	Reflink    Method = "reflink"
	SparseCopy Method = "sparse-copy"
)

// ProbeSpec says where and how to probe.
type ProbeSpec struct {
	// Dir is where VM disks will live; reflink support is a property of
	// its file system.
	Dir string
	// Privileged says loop and dm operations can be performed (root, or the
	// root helper is installed). Without it DMSnapshot is never offered.
	Privileged bool
	DM         DMRunner
	Loops      interface{ Available() error }
}

// Probe returns the clone methods this host offers, fastest first; the last
// is always SparseCopy. Reasons for missing methods are returned for doctor
// and logs, keyed by method.
func Probe(s ProbeSpec) (methods []Method, missing map[Method]string) {
	missing = map[Method]string{}
	switch {
	case !s.Privileged:
		missing[DMSnapshot] = "loop and device-mapper operations need root or the root helper"
	case s.DM == nil || s.Loops == nil:
		missing[DMSnapshot] = "no device-mapper runner configured"
	default:
		if err := s.Loops.Available(); err != nil {
			missing[DMSnapshot] = err.Error()
		} else if err := s.DM.Available(); err != nil {
			missing[DMSnapshot] = err.Error()
		} else {
			methods = append(methods, DMSnapshot)
		}
	}
	if err := ProbeReflink(s.Dir); err != nil {
		missing[Reflink] = err.Error()
	} else {
		methods = append(methods, Reflink)
	}
	return append(methods, SparseCopy), missing
}

// ProbeReflink tries FICLONE between two scratch files in dir and says why
// it failed, or nil when dir's file system shares blocks.
func ProbeReflink(dir string) error {
	src, err := os.CreateTemp(dir, ".banger-probe-*")
	if err != nil {
		return fmt.Errorf("probe reflink in %s: %w", dir, err)
	}
	defer func() { _ = os.Remove(src.Name()) }()
	defer src.Close()
	if _, err := src.Write(make([]byte, 4096)); err != nil {
		return fmt.Errorf("probe reflink in %s: %w", dir, err)
	}
	dst, err := os.CreateTemp(dir, ".banger-probe-*")
	if err != nil {
		return fmt.Errorf("probe reflink in %s: %w", dir, err)
	}
	defer func() { _ = os.Remove(dst.Name()) }()
	defer dst.Close()
	if err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())); err != nil {
		return fmt.Errorf("the file system of %s cannot reflink (FICLONE: %v)", dir, err)
	}
	return nil
}

// CloneResized clones the ext4 image src into dst (reflink, else sparse
// copy) and grows the clone's file system to size bytes with resize2fs. A
// size smaller than the image's file system is refused; on any error dst
// is removed.
func CloneResized(ctx context.Context, r system.Runner, src, dst string, size int64) (Method, error) {
	info, err := ReadExt4(src)
	if err != nil {
		return "", err
	}
	if size < info.FSBytes {
		return "", fmt.Errorf("disk size %d bytes is smaller than the image's file system (%d bytes)", size, info.FSBytes)
	}
	m, err := Clone(src, dst, 0)
	if err != nil {
		return "", err
	}
	if err := Resize(ctx, r, dst, size); err != nil {
		_ = os.Remove(dst)
		return "", err
	}
	return m, nil
}

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
