// Package download fetches release files over HTTPS for `banger update`:
// small documents with a hard size cap, and large files streamed to disk
// while they are hashed, so nothing is kept whose SHA-256 does not match.
package download

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Errors callers branch on.
var (
	// ErrChecksumMismatch: the downloaded bytes do not hash to the
	// expected SHA-256. Nothing is left at the destination.
	ErrChecksumMismatch = errors.New("sha256 mismatch")
	// ErrTooLarge: the server sent more than the allowed size.
	ErrTooLarge = errors.New("response larger than allowed")
	// ErrInsecureURL: a plain-HTTP URL (or redirect) without the explicit
	// local override.
	ErrInsecureURL = errors.New("refusing a non-HTTPS URL")
)

// Defaults used when Options leaves a field zero.
const (
	DefaultMaxRedirects    = 5
	DefaultDocumentTimeout = 30 * time.Second
	DefaultStallTimeout    = 60 * time.Second
	DefaultMaxFileSize     = 512 << 20
)

// Options configure a Fetcher. The zero value is a sensible production
// Fetcher.
type Options struct {
	// Client is the HTTP client to use; nil means one with connect, TLS and
	// response-header timeouts. Its CheckRedirect is replaced by the
	// Fetcher's own redirect policy.
	Client *http.Client
	// AllowHTTP permits plain-http URLs. It exists for tests and local
	// release servers only; signatures still protect integrity, but a
	// plain-http server can withhold updates unseen.
	AllowHTTP bool
	// MaxRedirects bounds redirect chains (DefaultMaxRedirects).
	MaxRedirects int
	// DocumentTimeout bounds a whole FetchBounded call
	// (DefaultDocumentTimeout).
	DocumentTimeout time.Duration
	// StallTimeout aborts FetchVerified when no byte arrives for this long
	// (DefaultStallTimeout). A whole-download deadline would punish slow
	// links; a stall timer only catches dead ones.
	StallTimeout time.Duration
	// MaxFileSize caps FetchVerified (DefaultMaxFileSize).
	MaxFileSize int64
	// Progress, when set, receives a progress line for FetchVerified
	// downloads (stderr in the CLI).
	Progress io.Writer
	// Now is the clock for progress throttling (time.Now).
	Now func() time.Time
}

// Fetcher downloads release files. It is safe for concurrent use.
type Fetcher struct {
	client          *http.Client
	allowHTTP       bool
	maxRedirects    int
	documentTimeout time.Duration
	stallTimeout    time.Duration
	maxFileSize     int64
	progress        io.Writer
	now             func() time.Time
}

// New returns a Fetcher for opts.
func New(opts Options) *Fetcher {
	f := &Fetcher{
		allowHTTP:       opts.AllowHTTP,
		maxRedirects:    opts.MaxRedirects,
		documentTimeout: opts.DocumentTimeout,
		stallTimeout:    opts.StallTimeout,
		maxFileSize:     opts.MaxFileSize,
		progress:        opts.Progress,
		now:             opts.Now,
	}
	if f.maxRedirects <= 0 {
		f.maxRedirects = DefaultMaxRedirects
	}
	if f.documentTimeout <= 0 {
		f.documentTimeout = DefaultDocumentTimeout
	}
	if f.stallTimeout <= 0 {
		f.stallTimeout = DefaultStallTimeout
	}
	if f.maxFileSize <= 0 {
		f.maxFileSize = DefaultMaxFileSize
	}
	if f.now == nil {
		f.now = time.Now
	}
	var c http.Client
	if opts.Client != nil {
		c = *opts.Client
	} else {
		c = http.Client{Transport: defaultTransport()}
	}
	c.CheckRedirect = f.checkRedirect
	f.client = &c
	return f
}

func defaultTransport() http.RoundTripper {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       60 * time.Second,
		ForceAttemptHTTP2:     true,
	}
}

func (f *Fetcher) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > f.maxRedirects {
		return fmt.Errorf("stopped after %d redirects", f.maxRedirects)
	}
	// A redirect must not downgrade to plain HTTP behind the caller's back.
	if err := f.checkURL(req.URL); err != nil {
		return fmt.Errorf("redirected to %s: %w", req.URL.Redacted(), err)
	}
	return nil
}

func (f *Fetcher) checkURL(u *url.URL) error {
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if f.allowHTTP {
			return nil
		}
	}
	return fmt.Errorf("%w (release files are fetched over HTTPS only)", ErrInsecureURL)
}

// get starts a GET for rawURL and checks the status.
func (f *Fetcher) get(ctx context.Context, rawURL string) (*http.Response, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: invalid URL: %w", rawURL, err)
	}
	if err := f.checkURL(u); err != nil {
		return nil, fmt.Errorf("fetch %s: %w", rawURL, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", rawURL, err)
	}
	// Compressed transfer would make size caps and progress count the
	// wrong bytes; release files are already compressed or tiny.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", rawURL, unwrapURLError(err))
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("fetch %s: server answered %s", rawURL, resp.Status)
	}
	return resp, nil
}

// FetchBounded downloads a small document (manifest, checksum list,
// signature) into memory, failing with ErrTooLarge past max bytes and
// giving up after the document timeout.
func (f *Fetcher) FetchBounded(ctx context.Context, rawURL string, max int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, f.documentTimeout)
	defer cancel()
	resp, err := f.get(ctx, rawURL)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.ContentLength > max {
		return nil, fmt.Errorf("fetch %s: %w: %d bytes, limit %d", rawURL, ErrTooLarge, resp.ContentLength, max)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err == nil {
		// net/http may hand back a response that raced with the deadline;
		// a document read after the deadline is not trusted to be whole.
		err = ctx.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", rawURL, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("fetch %s: %w: limit %d bytes", rawURL, ErrTooLarge, max)
	}
	return data, nil
}

// FetchVerified streams rawURL into a temporary file next to dst while
// hashing it, and renames it to dst only when the SHA-256 equals
// wantSHA256 (lowercase hex). On any failure, including ErrChecksumMismatch,
// the temporary file is removed and dst is untouched.
func (f *Fetcher) FetchVerified(ctx context.Context, rawURL, wantSHA256, dst string) error {
	want, err := hex.DecodeString(wantSHA256)
	if err != nil || len(want) != sha256.Size || strings.ToLower(wantSHA256) != wantSHA256 {
		return fmt.Errorf("fetch %s: expected checksum %q is not a lowercase hex SHA-256", rawURL, wantSHA256)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	resp, err := f.get(ctx, rawURL)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.ContentLength > f.maxFileSize {
		return fmt.Errorf("fetch %s: %w: %d bytes, limit %d", rawURL, ErrTooLarge, resp.ContentLength, f.maxFileSize)
	}

	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".part-*")
	if err != nil {
		return fmt.Errorf("fetch %s: %w", rawURL, err)
	}
	keep := false
	defer func() {
		if !keep {
			tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()

	h := sha256.New()
	var body io.Reader = &stallReader{r: resp.Body, timeout: f.stallTimeout, cancel: cancel}
	body = io.LimitReader(body, f.maxFileSize+1)
	var bar *progressBar
	if f.progress != nil {
		bar = newProgressBar(f.progress, filepath.Base(dst), resp.ContentLength, f.now)
		body = io.TeeReader(body, bar)
	}
	n, err := io.Copy(io.MultiWriter(tmp, h), body)
	if bar != nil {
		bar.finish(err == nil)
	}
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			err = cause
		}
		return fmt.Errorf("fetch %s: interrupted after %d bytes: %w", rawURL, n, err)
	}
	if n > f.maxFileSize {
		return fmt.Errorf("fetch %s: %w: limit %d bytes", rawURL, ErrTooLarge, f.maxFileSize)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return fmt.Errorf("fetch %s: got %d bytes, server announced %d", rawURL, n, resp.ContentLength)
	}
	if got := h.Sum(nil); !equalBytes(got, want) {
		return fmt.Errorf("fetch %s: %w: got %x, want %s", rawURL, ErrChecksumMismatch, got, wantSHA256)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("fetch %s: fsync: %w", rawURL, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("fetch %s: %w", rawURL, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("fetch %s: %w", rawURL, err)
	}
	keep = true
	return nil
}

func equalBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	var d byte
	for i := range a {
		d |= a[i] ^ b[i]
	}
	return d == 0
}

// unwrapURLError drops net/http's `Get "url": ` prefix, since our own
// messages already name the URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// errStalled is the cancel cause when a download stops making progress.
type errStalled struct{ d time.Duration }

func (e errStalled) Error() string { return fmt.Sprintf("no data received for %s", e.d) }

// stallReader cancels the request when a single Read waits longer than
// timeout, which unblocks the read with the cancellation.
type stallReader struct {
	r       io.Reader
	timeout time.Duration
	cancel  context.CancelCauseFunc
}

func (s *stallReader) Read(p []byte) (int, error) {
	t := time.AfterFunc(s.timeout, func() { s.cancel(errStalled{s.timeout}) })
	n, err := s.r.Read(p)
	t.Stop()
	return n, err
}
