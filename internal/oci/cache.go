// Package oci turns container images (from a registry, an OCI layout or a
// docker archive) into what banger boots: it fetches and verifies the
// image's blobs into a shared, digest-keyed cache, and flattens the layers
// into a directory tree plus the ownership, device nodes and xattrs that an
// unprivileged extraction cannot put on disk, which WriteExt4 then applies.
package oci

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// Cache holds blobs (layers and configs) by digest under
// Dir/blobs/sha256/<hex>, shared by every image pulled or imported. A blob
// is written to Dir/tmp first and renamed into place only after its size
// and digest are verified, so the cache never holds a partial or wrong
// blob. An interrupted pull refetches only the blobs it had not finished,
// and from a registry resumes those inside the blob (PutResumable).
type Cache struct {
	Dir string
}

// BlobPath is where the blob with digest h lives once cached.
func (c Cache) BlobPath(h v1.Hash) string {
	return filepath.Join(c.Dir, "blobs", h.Algorithm, h.Hex)
}

// checkDigest accepts only sha256 digests with a well-formed hex part, so
// a digest can never name a path outside the cache.
func checkDigest(h v1.Hash) error {
	if h.Algorithm != "sha256" {
		return fmt.Errorf("digest %s uses %q, but banger verifies only sha256 digests", h, h.Algorithm)
	}
	if len(h.Hex) != 64 || strings.Trim(h.Hex, "0123456789abcdef") != "" {
		return fmt.Errorf("digest %q is not a sha256 digest", h)
	}
	return nil
}

// Has reports whether the blob is cached with the expected size (size < 0
// accepts any size).
func (c Cache) Has(h v1.Hash, size int64) bool {
	if checkDigest(h) != nil {
		return false
	}
	st, err := os.Stat(c.BlobPath(h))
	return err == nil && st.Mode().IsRegular() && (size < 0 || st.Size() == size)
}

// Put stores the blob open returns, unless it is cached already. size is
// the expected length (-1 when unknown); onBytes, when not nil, is told
// how many bytes arrived as they arrive. The blob is refused, and nothing
// is left in the cache, when its length or digest is not what the
// manifest said.
func (c Cache) Put(ctx context.Context, h v1.Hash, size int64, open func() (io.ReadCloser, error), onBytes func(int64)) (string, error) {
	return c.PutResumable(ctx, h, size, open, nil, onBytes)
}

// OpenAt opens a blob from offset on. ranged is false when the source
// ignored the offset and the reader starts at byte 0.
type OpenAt func(ctx context.Context, offset int64) (rc io.ReadCloser, ranged bool, err error)

// PutResumable is Put for a source that can also read from an offset
// (openAt, e.g. an HTTP Range request): a download cut short (a dropped
// connection, a killed daemon) keeps what arrived in tmp/<hex>.partial,
// and the next PutResumable of that blob asks only for the rest. The
// digest is still checked over the whole file. A partial file another
// pull is writing (it holds the file's lock) is left to it: this one
// downloads into a private temp file, as Put does.
func (c Cache) PutResumable(ctx context.Context, h v1.Hash, size int64, open func() (io.ReadCloser, error), openAt OpenAt, onBytes func(int64)) (string, error) {
	if err := checkDigest(h); err != nil {
		return "", err
	}
	dst := c.BlobPath(h)
	if c.Has(h, size) {
		if onBytes != nil && size > 0 {
			onBytes(size)
		}
		return dst, nil
	}
	tmpDir := filepath.Join(c.Dir, "tmp")
	for _, d := range []string{tmpDir, filepath.Dir(dst)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return "", fmt.Errorf("create the blob cache: %w", err)
		}
	}
	tmp, keep, err := c.blobFile(tmpDir, h, size, openAt != nil)
	if err != nil {
		return "", err
	}
	defer func() { _ = tmp.Close() }() // also drops the lock
	done := false
	defer func() {
		if !done && !keep() {
			_ = os.Remove(tmp.Name())
		}
	}()
	have, err := tmp.Seek(0, io.SeekEnd)
	if err != nil {
		return "", fmt.Errorf("read the partial blob %s: %w", h, err)
	}
	if size >= 0 && have >= size {
		// Whole but never verified (cut off before the rename) or too
		// long: nothing left to ask for, so fetch it again.
		if have, err = 0, truncate(tmp); err != nil {
			return "", fmt.Errorf("restart blob %s: %w", h, err)
		}
	}
	rc, err := openFrom(ctx, have, open, openAt)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	if !rc.ranged {
		if have, err = 0, truncate(tmp); err != nil {
			return "", fmt.Errorf("restart blob %s: %w", h, err)
		}
	}
	digest := sha256.New()
	if _, err := io.Copy(digest, io.NewSectionReader(tmp, 0, have)); err != nil {
		return "", fmt.Errorf("read the partial blob %s: %w", h, err)
	}
	if onBytes != nil && have > 0 {
		onBytes(have)
	}
	var src io.Reader = &ctxReader{ctx: ctx, r: rc}
	if size >= 0 {
		// One byte more than promised is enough to tell a blob is too long.
		src = io.LimitReader(src, size-have+1)
	}
	n, err := io.Copy(io.MultiWriter(tmp, digest, progressWriter(onBytes)), src)
	n += have
	if size < 0 || n >= size {
		// Every byte arrived: the blob is right or refused, never resumed
		// (a source that checks digests itself fails here on a bad one).
		keep = func() bool { return false }
	}
	if err != nil {
		return "", fmt.Errorf("download blob %s: %w", h, err)
	}
	switch {
	case size >= 0 && n < size:
		return "", fmt.Errorf("blob %s is truncated: it has %d of its %d bytes", h, n, size)
	case size >= 0 && n > size:
		return "", fmt.Errorf("blob %s is longer than the %d bytes its manifest says", h, size)
	}
	if got := hex.EncodeToString(digest.Sum(nil)); got != h.Hex {
		return "", fmt.Errorf("blob %s does not match its digest (its content hashes to sha256:%s)", h, got)
	}
	if err := tmp.Sync(); err != nil {
		return "", fmt.Errorf("store blob %s in the cache: %w", h, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", fmt.Errorf("store blob %s in the cache: %w", h, err)
	}
	done = true
	return dst, nil
}

// blobFile is the file a download writes to: with resume, the blob's
// partial file, locked, kept when the download fails part way (keep says
// so); otherwise, or when another pull holds that lock, a new private
// temp file, never kept.
func (c Cache) blobFile(tmpDir string, h v1.Hash, size int64, resume bool) (*os.File, func() bool, error) {
	never := func() bool { return false }
	if resume && size > 0 {
		f, err := os.OpenFile(filepath.Join(tmpDir, h.Hex+".partial"), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("create a blob in the cache: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err == nil {
			return f, func() bool { return true }, nil
		}
		_ = f.Close()
	}
	f, err := os.CreateTemp(tmpDir, h.Hex+".*")
	if err != nil {
		return nil, nil, fmt.Errorf("create a blob in the cache: %w", err)
	}
	return f, never, nil
}

// blobReader is a blob's body and whether it starts at the offset asked.
type blobReader struct {
	io.ReadCloser
	ranged bool
}

// openFrom opens the blob from offset have: with openAt when there is
// something to resume from, else from the start.
func openFrom(ctx context.Context, have int64, open func() (io.ReadCloser, error), openAt OpenAt) (blobReader, error) {
	if have > 0 && openAt != nil {
		rc, ranged, err := openAt(ctx, have)
		if err != nil {
			return blobReader{}, fmt.Errorf("resume the download at byte %d: %w", have, err)
		}
		return blobReader{rc, ranged}, nil
	}
	rc, err := open()
	return blobReader{rc, have == 0}, err
}

func truncate(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.Seek(0, io.SeekStart)
	return err
}

// Prune removes every cached blob not in keep (keyed by digest string,
// "sha256:<hex>"), and leftovers of interrupted downloads. It returns how
// many blobs and bytes it removed.
func (c Cache) Prune(keep map[string]bool) (blobs int, bytes int64, err error) {
	if err := os.RemoveAll(filepath.Join(c.Dir, "tmp")); err != nil {
		return 0, 0, fmt.Errorf("remove interrupted downloads: %w", err)
	}
	dir := filepath.Join(c.Dir, "blobs", "sha256")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("read the blob cache: %w", err)
	}
	for _, e := range entries {
		if keep["sha256:"+e.Name()] {
			continue
		}
		info, ierr := e.Info()
		if ierr == nil {
			bytes += info.Size()
		}
		if rerr := os.Remove(filepath.Join(dir, e.Name())); rerr != nil {
			return blobs, bytes, fmt.Errorf("remove blob %s: %w", e.Name(), rerr)
		}
		blobs++
	}
	return blobs, bytes, nil
}

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

type progressWriter func(int64)

func (f progressWriter) Write(p []byte) (int, error) {
	if f != nil {
		f(int64(len(p)))
	}
	return len(p), nil
}
