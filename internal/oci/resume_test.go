package oci

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// cutReader ends with a network-like error after n bytes.
type cutReader struct {
	r io.ReadCloser
	n int64
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		return 0, errors.New("connection reset by peer (test)")
	}
	if int64(len(p)) > c.n {
		p = p[:c.n]
	}
	n, err := c.r.Read(p)
	c.n -= int64(n)
	return n, err
}

func (c *cutReader) Close() error { return c.r.Close() }

// TestCacheResume: a download cut short keeps what arrived; the next one
// asks only for the rest and checks the digest over the whole blob. A
// source that ignores the offset restarts the blob; a resumed blob whose
// digest is wrong is refused and its partial file dropped.
func TestCacheResume(t *testing.T) {
	c := Cache{Dir: t.TempDir()}
	blob := make([]byte, 64<<10)
	_, _ = rand.Read(blob)
	h, size := hashOf(blob), int64(len(blob))
	cut := func() (io.ReadCloser, error) {
		return &cutReader{r: io.NopCloser(bytes.NewReader(blob)), n: 20000}, nil
	}
	var offsets []int64
	ranged := func(_ context.Context, off int64) (io.ReadCloser, bool, error) {
		offsets = append(offsets, off)
		return io.NopCloser(bytes.NewReader(blob[off:])), true, nil
	}
	if _, err := c.PutResumable(context.Background(), h, size, cut, ranged, nil); err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("cut download: %v", err)
	}
	partial := filepath.Join(c.Dir, "tmp", h.Hex+".partial")
	if st, err := os.Stat(partial); err != nil || st.Size() != 20000 {
		t.Fatalf("partial file after the cut: %v, %v", st, err)
	}
	var seen int64
	p, err := c.PutResumable(context.Background(), h, size, opener(nil), ranged, func(n int64) { seen += n })
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, blob) || len(offsets) != 1 || offsets[0] != 20000 || seen != size {
		t.Fatalf("resumed at %v, progress %d of %d, blob intact %v", offsets, seen, size, bytes.Equal(got, blob))
	}
	if _, err := os.Stat(partial); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the partial file outlived the blob: %v", err)
	}

	// The source ignores the Range: the blob starts over from byte 0.
	c2 := Cache{Dir: t.TempDir()}
	_, _ = c2.PutResumable(context.Background(), h, size, cut, ranged, nil)
	whole := func(context.Context, int64) (io.ReadCloser, bool, error) {
		return io.NopCloser(bytes.NewReader(blob)), false, nil
	}
	if p, err := c2.PutResumable(context.Background(), h, size, opener(nil), whole, nil); err != nil {
		t.Fatalf("restart without Range: %v", err)
	} else if got, _ := os.ReadFile(p); !bytes.Equal(got, blob) {
		t.Fatal("restarted blob differs")
	}

	// The rest does not fit what arrived first: refused, nothing kept.
	c3 := Cache{Dir: t.TempDir()}
	_, _ = c3.PutResumable(context.Background(), h, size, cut, ranged, nil)
	wrong := func(_ context.Context, off int64) (io.ReadCloser, bool, error) {
		return io.NopCloser(bytes.NewReader(make([]byte, size-off))), true, nil
	}
	if _, err := c3.PutResumable(context.Background(), h, size, opener(nil), wrong, nil); err == nil || !strings.Contains(err.Error(), "does not match its digest") {
		t.Fatalf("wrong rest: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(c3.Dir, "tmp")); len(ents) != 0 || c3.Has(h, -1) {
		t.Errorf("a refused blob left %v in tmp (cached: %v)", ents, c3.Has(h, -1))
	}
}

// cuttingTransport cuts the body of the first full (un-ranged) download of
// each blob after n bytes, as a dropped connection does, and records the
// Range requests and how many blob bytes went over the wire.
type cuttingTransport struct {
	base   http.RoundTripper
	n      int64
	mu     sync.Mutex
	cut    map[string]bool
	ranges []string
	status []int
}

func (c *cuttingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(r)
	if err != nil || !strings.Contains(r.URL.Path, "/blobs/sha256:") || r.Method != http.MethodGet {
		return resp, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if rg := r.Header.Get("Range"); rg != "" {
		c.ranges = append(c.ranges, rg)
		c.status = append(c.status, resp.StatusCode)
		return resp, nil
	}
	if resp.ContentLength > c.n && !c.cut[r.URL.Path] {
		c.cut[r.URL.Path] = true
		resp.Body = &cutReader{r: resp.Body, n: c.n}
	}
	return resp, nil
}

// TestPullResumesInsideBlob: a pull from a real registry whose connection
// drops in the middle of a layer fails; the next pull asks the registry
// for the rest of that layer only (Range: bytes=N-, 206) and gets a
// verified image.
func TestPullResumesInsideBlob(t *testing.T) {
	reg := startRegistry(t, false)
	noise := make([]byte, 300<<10) // incompressible, so the layer stays large
	_, _ = rand.Read(noise)
	img := testImage(t, "linux/amd64", nil, []ent{dir("srv/", 0o755), file("srv/noise", string(noise), 0o644)})
	reg.push(t, writeLayout(t, "v1", img), "v1", "test/big:v1", "")
	cache := Cache{Dir: t.TempDir()}
	const cutAt = 100 << 10
	tr := &cuttingTransport{base: http.DefaultTransport, n: cutAt, cut: map[string]bool{}}
	src := Source{Remote: reg.Host + "/test/big:v1"}
	if _, err := Fetch(context.Background(), src, FetchOptions{Insecure: true, Transport: tr}, cache, nil); err == nil {
		t.Fatal("the pull whose connection dropped succeeded")
	}
	got, err := Fetch(context.Background(), src, FetchOptions{Insecure: true, Transport: tr}, cache, nil)
	if err != nil {
		t.Fatalf("resumed pull: %v", err)
	}
	if want := fmt.Sprintf("bytes=%d-", cutAt); len(tr.ranges) != 1 || tr.ranges[0] != want || tr.status[0] != http.StatusPartialContent {
		t.Fatalf("ranged requests %v answered %v; want one %q answered 206", tr.ranges, tr.status, want)
	}
	l, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, _ := l[0].Digest()
	if len(got.Layers) != 1 || got.Layers[0].Digest != d || !cache.Has(d, got.Layers[0].Size) {
		t.Fatalf("layers = %+v, want the verified %s", got.Layers, d)
	}
}
