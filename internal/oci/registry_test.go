package oci

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/banger-dev/banger/test/ocireg"
)

// registry is a real registry (test/ocireg) the tests push to with skopeo.
type registry struct{ ocireg.Registry }

func startRegistry(t testing.TB, withAuth bool) registry {
	return registry{ocireg.Start(t, withAuth)}
}

// push copies an OCI layout (all of an index with all) to the registry
// with skopeo, keeping the blobs as they are.
func (r registry) push(t testing.TB, layoutDir, tag, repo string, creds string) {
	t.Helper()
	needCmd(t, "skopeo")
	// skopeo 1.9 cannot copy a layout's nested index with
	// --preserve-digests; single images keep theirs (the corrupt-blob test
	// needs the layer digest it pushed).
	args := []string{"copy", "--all", "--dest-tls-verify=false"}
	if !strings.HasPrefix(tag, "multi") {
		args = append(args, "--preserve-digests")
	}
	if creds != "" {
		args = append(args, "--dest-creds", creds)
	}
	args = append(args, "oci:"+layoutDir+":"+tag, "docker://"+r.Host+"/"+repo)
	if out, err := exec.Command("skopeo", args...).CombinedOutput(); err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// testImage builds an image from layers of entries, for platform.
func testImage(t testing.TB, platform string, comps []compression.Compression, layers ...[]ent) v1.Image {
	t.Helper()
	img := empty.Image
	for i, es := range layers {
		raw := tarBytes(t, es)
		opts := []tarball.LayerOption{tarball.WithCompressedCaching, tarball.WithMediaType(types.OCILayer)}
		if i < len(comps) {
			opts = append(opts, tarball.WithCompression(comps[i]))
			if comps[i] == compression.ZStd {
				opts = append(opts, tarball.WithMediaType(types.OCILayerZStd))
			}
		}
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil }, opts...)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	p, err := v1.ParsePlatform(platform)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Config.Env = []string{"PATH=/usr/bin:/bin", "GREETING=hello"}
	cf.Config.WorkingDir = "/srv"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// writeLayout writes images into an OCI layout under tag (an index when
// several, each with its platform).
func writeLayout(t testing.TB, tag string, imgs ...v1.Image) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	ann := layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})
	if len(imgs) == 1 {
		if err := lp.AppendImage(imgs[0], ann); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}}})
	}
	idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	if err := lp.AppendIndex(idx, ann); err != nil {
		t.Fatal(err)
	}
	return dir
}

// blobCounter counts blob downloads through a transport.
type blobCounter struct {
	n    atomic.Int64
	base http.RoundTripper
}

func (b *blobCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.Contains(r.URL.Path, "/blobs/sha256:") {
		b.n.Add(1)
	}
	return b.base.RoundTrip(r)
}

func twoLayers(t *testing.T, platform string) v1.Image {
	return testImage(t, platform, []compression.Compression{compression.GZip, compression.ZStd},
		[]ent{dir("etc/", 0o755), file("etc/os-release", "ID=test\n", 0o644), file("etc/junk", "x", 0o644), dir("srv/", 0o755)},
		[]ent{file("etc/.wh.junk", "", 0), file("etc/arch", platform, 0o644)})
}

// TestPullFromRegistry pushes a gzip+zstd image with a whiteout to a real
// registry, pulls it, unpacks it, and pulls it again from the cache
// without downloading a blob.
func TestPullFromRegistry(t *testing.T) {
	reg := startRegistry(t, false)
	reg.push(t, writeLayout(t, "v1", twoLayers(t, "linux/amd64")), "v1", "test/app:v1", "")
	cache := Cache{Dir: t.TempDir()}
	counter := &blobCounter{base: http.DefaultTransport}
	var events []int64
	img, err := Fetch(context.Background(), Source{Remote: reg.Host + "/test/app:v1"}, FetchOptions{Insecure: true, Transport: counter}, cache,
		func(_ string, done, total int64) { events = append(events, done) })
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Layers) != 2 || img.Layers[1].MediaType != types.OCILayerZStd {
		t.Fatalf("layers = %+v, want a gzip and a zstd layer", img.Layers)
	}
	if counter.n.Load() == 0 || len(events) == 0 {
		t.Fatalf("blob downloads %d, progress events %d: want both", counter.n.Load(), len(events))
	}
	if img.Config.Config.WorkingDir != "/srv" || img.Platform != "linux/amd64" || !strings.HasPrefix(img.Digest, "sha256:") {
		t.Errorf("image = %+v", img)
	}
	tree, err := Flatten(context.Background(), img.Layers, filepath.Join(t.TempDir(), "rootfs"), os.Geteuid(), os.Getegid(), testLimits)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tree.Close() }()
	if got, _ := os.ReadFile(filepath.Join(tree.Dir, "etc/arch")); string(got) != "linux/amd64" {
		t.Errorf("etc/arch = %q", got)
	}
	if _, err := os.Lstat(filepath.Join(tree.Dir, "etc/junk")); err == nil {
		t.Error("etc/junk survived its whiteout")
	}

	counter.n.Store(0)
	again, err := Fetch(context.Background(), Source{Remote: reg.Host + "/test/app:v1"}, FetchOptions{Insecure: true, Transport: counter}, cache, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := counter.n.Load(); n != 0 {
		t.Errorf("the second pull downloaded %d blobs; the cache should have served them all", n)
	}
	if again.Digest != img.Digest {
		t.Errorf("digest changed: %s then %s", img.Digest, again.Digest)
	}
}

// TestPullPlatforms picks a platform from a multi-platform index, and
// refuses one the index does not have, naming those it has.
func TestPullPlatforms(t *testing.T) {
	reg := startRegistry(t, false)
	gzipOnly := func(platform string) v1.Image {
		return testImage(t, platform, nil, []ent{dir("etc/", 0o755), file("etc/arch", platform, 0o644)})
	}
	reg.push(t, writeLayout(t, "multi", gzipOnly("linux/amd64"), gzipOnly("linux/arm64")), "multi", "test/multi:1", "")
	cache := Cache{Dir: t.TempDir()}
	ref := reg.Host + "/test/multi:1"
	img, err := Fetch(context.Background(), Source{Remote: ref}, FetchOptions{Insecure: true, Platform: "linux/arm64"}, cache, nil)
	if err != nil {
		t.Fatal(err)
	}
	if img.Config.Architecture != "arm64" {
		t.Errorf("picked %s, want arm64", img.Config.Architecture)
	}
	_, err = Fetch(context.Background(), Source{Remote: ref}, FetchOptions{Insecure: true, Platform: "linux/s390x"}, cache, nil)
	if err == nil || !strings.Contains(err.Error(), "no linux/s390x variant (it has linux/amd64, linux/arm64)") {
		t.Fatalf("err = %v, want the platforms listed", err)
	}
}

// TestPullAuth pulls from a registry behind htpasswd: refused without the
// credential, served with it.
func TestPullAuth(t *testing.T) {
	reg := startRegistry(t, true)
	reg.push(t, writeLayout(t, "v1", twoLayers(t, "linux/amd64")), "v1", "private/app:v1", ocireg.User+":"+ocireg.Password)
	ref := reg.Host + "/private/app:v1"
	cache := Cache{Dir: t.TempDir()}
	_, err := Fetch(context.Background(), Source{Remote: ref}, FetchOptions{Insecure: true}, cache, nil)
	if err == nil || !strings.Contains(err.Error(), "refused access") {
		t.Fatalf("anonymous pull: err = %v, want refused access", err)
	}
	_, err = Fetch(context.Background(), Source{Remote: ref}, FetchOptions{Insecure: true, Auth: &authn.AuthConfig{Username: ocireg.User, Password: ocireg.Password}}, cache, nil)
	if err != nil {
		t.Fatal(err)
	}
}

// TestPullCorruptBlob: a registry serving a layer whose bytes do not match
// its digest is refused, and the cache keeps nothing of it.
func TestPullCorruptBlob(t *testing.T) {
	reg := startRegistry(t, false)
	img := twoLayers(t, "linux/amd64")
	reg.push(t, writeLayout(t, "v1", img), "v1", "test/bad:v1", "")
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(reg.Storage, "docker/registry/v2/blobs/sha256", d.Hex[:2], d.Hex, "data")
	blob, err := os.ReadFile(data)
	if err != nil {
		t.Fatal(err)
	}
	blob[len(blob)/2] ^= 0xff
	if err := os.WriteFile(data, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	cache := Cache{Dir: t.TempDir()}
	_, err = Fetch(context.Background(), Source{Remote: reg.Host + "/test/bad:v1"}, FetchOptions{Insecure: true}, cache, nil)
	if err == nil || !strings.Contains(err.Error(), "layer 1") {
		t.Fatalf("err = %v, want layer 1 refused", err)
	}
	if cache.Has(d, -1) {
		t.Error("the corrupt blob is in the cache")
	}
	if ents, _ := os.ReadDir(filepath.Join(cache.Dir, "tmp")); len(ents) != 0 {
		t.Errorf("the cache kept a partial download: %v", ents)
	}
}

// TestPullBadRegistry: a server answering HTML or errors is refused with
// one sentence naming the registry.
func TestPullBadRegistry(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    http.HandlerFunc
		want string
	}{
		{"html", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = io.WriteString(w, "<html><body>Welcome to our portal</body></html>")
		}, "registry"},
		{"500", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "boom", http.StatusInternalServerError) }, "failed to serve"},
		{"404", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/v2/" {
				return
			}
			http.NotFound(w, r)
		}, "has no image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.h)
			defer srv.Close()
			ref := strings.TrimPrefix(srv.URL, "http://") + "/x/y:1"
			_, err := Fetch(context.Background(), Source{Remote: ref}, FetchOptions{Insecure: true}, Cache{Dir: t.TempDir()}, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

// TestImportLayoutAndArchive fetches the same image from an OCI layout
// (by tag) and from a docker archive.
func TestImportLayoutAndArchive(t *testing.T) {
	img := twoLayers(t, "linux/amd64")
	dir := writeLayout(t, "v1", img)
	cache := Cache{Dir: t.TempDir()}
	fromLayout, err := Fetch(context.Background(), Source{Layout: dir + ":v1"}, FetchOptions{}, cache, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Fetch(context.Background(), Source{Layout: dir + ":nope"}, FetchOptions{}, cache, nil); err == nil || !strings.Contains(err.Error(), `no image tagged "nope" (it has v1)`) {
		t.Errorf("unknown tag: err = %v", err)
	}
	archive := filepath.Join(t.TempDir(), "app.tar")
	tag, err := name.NewTag("example.com/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(archive, tag, img); err != nil {
		t.Fatal(err)
	}
	fromArchive, err := Fetch(context.Background(), Source{DockerArchive: archive}, FetchOptions{}, cache, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, fetched := range []Image{fromLayout, fromArchive} {
		tree, err := Flatten(context.Background(), fetched.Layers, filepath.Join(t.TempDir(), "rootfs"), os.Geteuid(), os.Getegid(), testLimits)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(filepath.Join(tree.Dir, "etc/os-release")); string(got) != "ID=test\n" {
			t.Errorf("%s: etc/os-release = %q", fetched.Ref, got)
		}
		_ = tree.Close()
	}
}
