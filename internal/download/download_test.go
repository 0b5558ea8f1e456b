package download

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// newServer starts an HTTPS test server and a Fetcher that trusts it.
func newServer(t *testing.T, h http.Handler, opts Options) (*httptest.Server, *Fetcher) {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	opts.Client = srv.Client()
	return srv, New(opts)
}

func TestFetchBounded(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 100)
	mux := http.NewServeMux()
	mux.HandleFunc("/small", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hello")) })
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) { w.Write(big) })
	mux.HandleFunc("/big-chunked", func(w http.ResponseWriter, r *http.Request) {
		// Flushing before the end forces chunked encoding: no Content-Length
		// to reject up front, so the cap must hold while reading.
		w.Write(big[:50])
		w.(http.Flusher).Flush()
		w.Write(big[50:])
	})
	mux.HandleFunc("/missing", http.NotFound)
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/loop", http.StatusFound) })
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/small", http.StatusFound) })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	// Headers at once, then a byte every 50ms: only the overall document
	// deadline stops it.
	mux.HandleFunc("/trickle", trickle(bytes.Repeat([]byte("x"), 100), nil))
	srv, f := newServer(t, mux, Options{DocumentTimeout: time.Second})
	ctx := context.Background()

	got, err := f.FetchBounded(ctx, srv.URL+"/small", 10)
	if err != nil || string(got) != "hello" {
		t.Fatalf("small: %q, %v", got, err)
	}
	if got, err := f.FetchBounded(ctx, srv.URL+"/moved", 10); err != nil || string(got) != "hello" {
		t.Fatalf("redirect within HTTPS: %q, %v", got, err)
	}
	for _, tc := range []struct {
		path string
		max  int64
		is   error
		want string
	}{
		{"/big", 99, ErrTooLarge, "100 bytes, limit 99"},
		{"/big-chunked", 99, ErrTooLarge, "limit 99"},
		{"/missing", 10, nil, "404"},
		{"/loop", 10, nil, "stopped after 5 redirects"},
		{"/slow", 10, context.DeadlineExceeded, "no complete answer within 1s (context deadline exceeded); check your connection and retry"},
		{"/trickle", 1000, context.DeadlineExceeded, "no complete answer within 1s"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			_, err := f.FetchBounded(ctx, srv.URL+tc.path, tc.max)
			if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), srv.URL+tc.path) {
				t.Fatalf("error does not name the URL: %v", err)
			}
		})
	}
}

func TestPlainHTTPNeedsOverride(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	defer srv.Close()
	ctx := context.Background()

	if _, err := New(Options{}).FetchBounded(ctx, srv.URL, 10); !errors.Is(err, ErrInsecureURL) {
		t.Fatalf("plain http without override: err = %v, want ErrInsecureURL", err)
	}
	dst := filepath.Join(t.TempDir(), "f")
	if err := New(Options{}).FetchVerified(ctx, srv.URL, sum([]byte("ok")), dst); !errors.Is(err, ErrInsecureURL) {
		t.Fatalf("FetchVerified over plain http: err = %v, want ErrInsecureURL", err)
	}
	if _, err := New(Options{}).FetchBounded(ctx, "file:///etc/passwd", 10); !errors.Is(err, ErrInsecureURL) {
		t.Fatalf("file URL: err = %v, want ErrInsecureURL", err)
	}
	got, err := New(Options{AllowHTTP: true}).FetchBounded(ctx, srv.URL, 10)
	if err != nil || string(got) != "ok" {
		t.Fatalf("plain http with override: %q, %v", got, err)
	}
}

func TestRedirectToPlainHTTPRefused(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("evil")) }))
	defer plain.Close()
	srv, f := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+"/x", http.StatusFound)
	}), Options{})
	if _, err := f.FetchBounded(context.Background(), srv.URL, 10); !errors.Is(err, ErrInsecureURL) {
		t.Fatalf("err = %v, want ErrInsecureURL", err)
	}
}

func TestFetchVerified(t *testing.T) {
	payload := bytes.Repeat([]byte("banger release "), 10000)
	mux := http.NewServeMux()
	mux.HandleFunc("/good", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(payload)))
		w.Write(payload)
	})
	mux.HandleFunc("/truncated", func(w http.ResponseWriter, r *http.Request) {
		// Announce the full length, send half, then drop the connection:
		// a download cut mid-stream.
		w.Header().Set("Content-Length", strconv.Itoa(len(payload)))
		w.Write(payload[:len(payload)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})
	mux.HandleFunc("/tampered", func(w http.ResponseWriter, r *http.Request) {
		bad := bytes.Clone(payload)
		bad[len(bad)/2] ^= 1
		w.Write(bad)
	})
	mux.HandleFunc("/no-headers", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	mux.HandleFunc("/stall", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(payload)))
		w.Write(payload[:10])
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	var progress bytes.Buffer
	// A floor of 100 bytes a second: far below the local server's speed even
	// on a loaded machine, far above /stall's.
	srv, f := newServer(t, mux, Options{MinRate: 100, RateWindow: time.Second, MaxFileSize: int64(len(payload)), Progress: &progress})
	ctx := context.Background()
	dir := t.TempDir()

	dst := filepath.Join(dir, "release.tar.gz")
	if err := f.FetchVerified(ctx, srv.URL+"/good", sum(payload), dst); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, payload) {
		t.Fatal("downloaded content differs")
	}
	if !strings.Contains(progress.String(), "release.tar.gz") || !strings.Contains(progress.String(), "100%") || !strings.HasSuffix(progress.String(), " done\n") {
		t.Fatalf("progress output = %q", progress.String())
	}
	if err := os.Remove(dst); err != nil {
		t.Fatal(err)
	}

	small := New(Options{Client: srv.Client(), MaxFileSize: 100})
	for _, tc := range []struct {
		name, path, want string
		f                *Fetcher
		is               error
	}{
		{"mismatch", "/tampered", "sha256 mismatch", f, ErrChecksumMismatch},
		{"truncated", "/truncated", "interrupted", f, nil},
		{"stall", "/stall", "stalled: 10B in ", f, ErrStalled},
		{"no headers", "/no-headers", "stalled: 0B in ", f, ErrStalled},
		{"too large", "/good", "limit 100", small, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.f.FetchVerified(ctx, srv.URL+tc.path, sum(payload), dst)
			if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			assertEmptyDir(t, dir)
		})
	}

	t.Run("destination kept on mismatch", func(t *testing.T) {
		// A failed download never clobbers what was already there.
		if err := os.WriteFile(dst, []byte("previous"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := f.FetchVerified(ctx, srv.URL+"/tampered", sum(payload), dst); !errors.Is(err, ErrChecksumMismatch) {
			t.Fatalf("err = %v", err)
		}
		if got, _ := os.ReadFile(dst); string(got) != "previous" {
			t.Fatalf("dst = %q", got)
		}
		if err := os.Remove(dst); err != nil {
			t.Fatal(err)
		}
	})

	for _, bad := range []string{"", "abc", strings.ToUpper(sum(payload)), sum(payload)[:62] + "zz"} {
		if err := f.FetchVerified(ctx, srv.URL+"/good", bad, dst); err == nil || !strings.Contains(err.Error(), "not a lowercase hex SHA-256") {
			t.Fatalf("want %q rejected, got %v", bad, err)
		}
	}
	assertEmptyDir(t, dir)
}

// trickle serves payload one byte every 50ms, announcing its full length,
// and counts into sent what it got out.
func trickle(payload []byte, sent *atomic.Int64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(payload)))
		for _, b := range payload {
			if _, err := w.Write([]byte{b}); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			if sent != nil {
				sent.Add(1)
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

func TestFetchVerifiedCutsOffTrickle(t *testing.T) {
	// A byte every 50ms never leaves the line silent for long, but 20 bytes
	// a second is far below the floor of 100: the download must end after
	// the first one-second window, not after the 10 s the payload takes.
	payload := bytes.Repeat([]byte("y"), 200)
	var sent atomic.Int64
	srv, f := newServer(t, trickle(payload, &sent), Options{MinRate: 100, RateWindow: time.Second})
	dir := t.TempDir()
	err := f.FetchVerified(context.Background(), srv.URL+"/banger.tar.gz", sum(payload), filepath.Join(dir, "banger.tar.gz"))
	if !errors.Is(err, ErrStalled) {
		t.Fatalf("err = %v, want ErrStalled", err)
	}
	for _, want := range []string{"download of " + srv.URL + "/banger.tar.gz stalled: ", "less than 100B/s over the last 1s; check your connection and retry"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v\nwant it to contain %q", err, want)
		}
	}
	if n := sent.Load(); n >= int64(len(payload))/2 {
		t.Errorf("the server got %d of %d bytes out before the cut", n, len(payload))
	}
	assertEmptyDir(t, dir)
}

func TestFetchVerifiedCancelled(t *testing.T) {
	srv, f := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("x"))
	}), Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	if err := f.FetchVerified(ctx, srv.URL, sum([]byte("x")), filepath.Join(dir, "f")); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	assertEmptyDir(t, dir)
}

func TestProgressUnknownLength(t *testing.T) {
	var buf bytes.Buffer
	clock := time.Unix(0, 0)
	p := newProgressBar(&buf, "x.tar.gz", -1, func() time.Time { return clock })
	_, _ = p.Write(make([]byte, 10))
	_, _ = p.Write(make([]byte, 10)) // within the throttle window: no redraw
	clock = clock.Add(time.Second)
	_, _ = p.Write(make([]byte, 2048))
	p.finish(false)
	want := "\rdownloading x.tar.gz  10B\rdownloading x.tar.gz  2.0K\rdownloading x.tar.gz  2.0K failed\n"
	if buf.String() != want {
		t.Fatalf("progress = %q, want %q", buf.String(), want)
	}
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left behind: %s", e.Name())
	}
}
