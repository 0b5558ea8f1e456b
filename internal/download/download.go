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
	"sync/atomic"
	"time"

	"github.com/banger-dev/banger/internal/config"
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
	// ErrStalled: a download fell below the minimum rate.
	ErrStalled = errors.New("download stalled")
)

// Defaults used when Options leaves a field zero.
const (
	DefaultMaxRedirects    = 5
	DefaultDocumentTimeout = 30 * time.Second
	DefaultMaxFileSize     = 512 << 20
	// DefaultMinRate and DefaultRateWindow: a download that gets less than
	// 8 KiB/s over a minute is given up (a 40 MB release then takes at most
	// about 85 minutes; a dead link or a trickling server is cut after one).
	DefaultMinRate    = 8 << 10
	DefaultRateWindow = time.Minute
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
	// MinRate (bytes a second, DefaultMinRate) and RateWindow
	// (DefaultRateWindow): FetchVerified fails with ErrStalled when fewer
	// than MinRate×RateWindow bytes arrive in a RateWindow, from the
	// request on. A fixed deadline would punish slow links; a timer reset
	// by every byte would let a server trickle one byte at a time forever.
	// The floor does neither, and with the size cap bounds the whole
	// download.
	MinRate    int64
	RateWindow time.Duration
	// MaxFileSize caps FetchVerified (DefaultMaxFileSize).
	MaxFileSize int64
	// Progress, when set, receives a progress line for FetchVerified
	// downloads (stderr in the CLI).
	Progress io.Writer
	// Now is the clock for progress throttling and the elapsed time in a
	// stall message (time.Now).
	Now func() time.Time
}

// Fetcher downloads release files. It is safe for concurrent use.
type Fetcher struct {
	client          *http.Client
	allowHTTP       bool
	maxRedirects    int
	documentTimeout time.Duration
	minRate         int64
	rateWindow      time.Duration
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
		minRate:         opts.MinRate,
		rateWindow:      opts.RateWindow,
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
	if f.minRate <= 0 {
		f.minRate = DefaultMinRate
	}
	if f.rateWindow <= 0 {
		f.rateWindow = DefaultRateWindow
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
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, f.documentTimeout)
	defer cancel()
	resp, err := f.get(ctx, rawURL)
	if err != nil {
		return nil, f.documentErr(parent, ctx, rawURL, err)
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
		return nil, f.documentErr(parent, ctx, rawURL, fmt.Errorf("fetch %s: %w", rawURL, err))
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("fetch %s: %w: limit %d bytes", rawURL, ErrTooLarge, max)
	}
	return data, nil
}

// documentErr says so when err came from the document timeout rather than
// from the caller giving up.
func (f *Fetcher) documentErr(parent, ctx context.Context, rawURL string, err error) error {
	if parent.Err() == nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("fetch %s: no complete answer within %s (%w); check your connection and retry",
			rawURL, f.documentTimeout, context.DeadlineExceeded)
	}
	return err
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
	var received atomic.Int64
	stopWatch := f.watchRate(ctx, cancel, rawURL, &received)
	defer stopWatch()
	resp, err := f.get(ctx, rawURL)
	if err != nil {
		return stallOr(ctx, err)
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
	var body io.Reader = countingReader{r: resp.Body, n: &received}
	body = io.LimitReader(body, f.maxFileSize+1)
	var bar *progressBar
	if f.progress != nil {
		bar = newProgressBar(f.progress, filepath.Base(dst), resp.ContentLength, f.now)
		body = io.TeeReader(body, bar)
	}
	n, err := io.Copy(io.MultiWriter(tmp, h), body)
	if cause := context.Cause(ctx); err == nil && errors.Is(cause, ErrStalled) {
		// net/http hands over a response that raced the cancellation (a
		// server answering as the connection closes); the stall still
		// decides.
		err = cause
	}
	if bar != nil {
		bar.finish(err == nil)
	}
	if err != nil {
		return stallOr(ctx, fmt.Errorf("fetch %s: interrupted after %d bytes: %w", rawURL, n, err))
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

// stallOr returns the stall that cancelled ctx, which says what happened
// better than the read error it caused, or else err.
func stallOr(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, ErrStalled) {
		return cause
	}
	return err
}

// watchRate cancels ctx with a stallError as soon as a rate window ends in
// which fewer than minRate×rateWindow bytes were counted in received. It
// stops when ctx ends or stop is called.
func (f *Fetcher) watchRate(ctx context.Context, cancel context.CancelCauseFunc, rawURL string, received *atomic.Int64) (stop func()) {
	floor := int64(float64(f.minRate) * f.rateWindow.Seconds())
	start := f.now()
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(f.rateWindow)
		defer tick.Stop()
		var before int64
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			n := received.Load()
			if n-before < floor {
				cancel(stallError{url: rawURL, received: n, elapsed: f.now().Sub(start), minRate: f.minRate, window: f.rateWindow})
				return
			}
			before = n
		}
	}()
	return func() { close(done) }
}

// stallError is the cancel cause when a download falls below the minimum
// rate.
type stallError struct {
	url      string
	received int64
	elapsed  time.Duration
	minRate  int64
	window   time.Duration
}

func (e stallError) Error() string {
	return fmt.Sprintf("download of %s stalled: %s in %s, less than %s/s over the last %s; check your connection and retry",
		e.url, config.FormatBytes(e.received), roundDuration(e.elapsed), config.FormatBytes(e.minRate), e.window)
}

func (e stallError) Is(target error) bool { return target == ErrStalled }

// roundDuration drops the digits nobody reads: seconds past ten seconds,
// milliseconds below.
func roundDuration(d time.Duration) time.Duration {
	if d >= 10*time.Second {
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
}

// countingReader adds every byte read to n, for the rate watch.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n.Add(int64(k))
	return k, err
}
