package updater

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
)

// Fetcher downloads release files; *download.Fetcher implements it.
type Fetcher interface {
	// FetchBounded returns a small document, failing past max bytes.
	FetchBounded(ctx context.Context, url string, max int64) ([]byte, error)
	// FetchVerified streams url to dst and keeps it only if its SHA-256
	// is wantSHA256.
	FetchVerified(ctx context.Context, url, wantSHA256, dst string) error
}

// Release file names under a release's URL.
const (
	SumsFile      = "SHA256SUMS"
	SignatureFile = "SHA256SUMS.sig"
)

// DownloadedRelease is a release tarball on disk whose checksum matched
// the signed SHA256SUMS.
type DownloadedRelease struct {
	Release Release
	// Tarball is the verified tarball's path.
	Tarball string
	// SHA256 is the tarball's checksum, from the signed SHA256SUMS.
	SHA256 string
	// SHA256SUMS is the signed checksum list, kept for the record.
	SHA256SUMS []byte
}

// DownloadRelease fetches rel's SHA256SUMS and signature, verifies the
// signature against publicKey before reading a byte of SHA256SUMS,
// parses it strictly, looks up the tarball and downloads it into dir,
// hashing as it streams. The key is checked before any network access, so
// a build holding the placeholder key refuses at once with
// ErrPlaceholderKey. On error nothing is left in dir.
func DownloadRelease(ctx context.Context, f Fetcher, publicKey string, rel Release, dir string, progress io.Writer) (DownloadedRelease, error) {
	out := DownloadedRelease{Release: rel}
	pub, err := ParsePublicKey(publicKey)
	if err != nil {
		return out, err
	}
	sums, err := f.FetchBounded(ctx, rel.FileURL(SumsFile), maxSHA256SUMSSize)
	if err != nil {
		return out, fmt.Errorf("download %s of %s: %w", SumsFile, rel.Version, err)
	}
	sig, err := f.FetchBounded(ctx, rel.FileURL(SignatureFile), maxSignatureSize)
	if err != nil {
		return out, fmt.Errorf("download %s of %s: %w", SignatureFile, rel.Version, err)
	}
	if err := VerifySignature(pub, sums, sig); err != nil {
		return out, fmt.Errorf("release %s: %w; refusing to install it", rel.Version, err)
	}
	logf(progress, "verified the signature on %s of %s", SumsFile, rel.Version)
	parsed, err := ParseSHA256SUMS(sums)
	if err != nil {
		return out, fmt.Errorf("release %s: %w", rel.Version, err)
	}
	want, ok := parsed.Lookup(rel.Tarball)
	if !ok {
		return out, fmt.Errorf("release %s: the signed %s does not list %s; refusing to install it", rel.Version, SumsFile, rel.Tarball)
	}
	dst := filepath.Join(dir, rel.Tarball)
	if err := f.FetchVerified(ctx, rel.FileURL(rel.Tarball), want, dst); err != nil {
		return out, fmt.Errorf("release %s: %w", rel.Version, err)
	}
	out.Tarball, out.SHA256, out.SHA256SUMS = dst, want, sums
	return out, nil
}

// logf writes one progress line when w is set.
func logf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}
