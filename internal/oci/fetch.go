package oci

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// DefaultPlatform is the platform banger's VMs run.
const DefaultPlatform = "linux/amd64"

// Source is where an image comes from: exactly one field is set.
type Source struct {
	// Remote is a registry reference: "debian:12", "ghcr.io/org/app@sha256:…".
	Remote string
	// Layout is an OCI image layout directory, optionally ":TAG" (its
	// org.opencontainers.image.ref.name); without a tag the layout must
	// hold one image.
	Layout string
	// DockerArchive is what `docker save` / `podman save` write.
	DockerArchive string
}

// String is the source as the user named it, for messages and records.
func (s Source) String() string {
	switch {
	case s.Remote != "":
		return s.Remote
	case s.Layout != "":
		return "oci-layout:" + s.Layout
	default:
		return "docker-archive:" + s.DockerArchive
	}
}

// FetchOptions tune a fetch.
type FetchOptions struct {
	// Platform is "os/arch[/variant]"; DefaultPlatform when empty.
	Platform string
	// Insecure allows plain HTTP (and unverified TLS) to the registry;
	// only when the user asked for it.
	Insecure bool
	// Auth is the credential for this pull only; anonymous when nil. It is
	// never stored.
	Auth *authn.AuthConfig
	// Transport replaces the HTTP transport (tests); nil uses the default.
	Transport http.RoundTripper
}

// Progress reports bytes fetched so far of a total (both 0 for messages
// that carry no byte count).
type Progress func(msg string, done, total int64)

// Layer is one cached layer blob in the image's order.
type Layer struct {
	Digest    v1.Hash
	MediaType types.MediaType
	Path      string
	Size      int64
}

// Image is a fetched image: its identity, its config and its layers, all
// in the cache and verified.
type Image struct {
	// Ref is the source as named; Digest identifies the manifest (for a
	// docker archive, the config digest: the archive has no manifest digest).
	Ref      string
	Digest   string
	Platform string
	// Config is the image's config file, verified against its digest.
	Config    *v1.ConfigFile
	RawConfig []byte
	Layers    []Layer
	// configDigest is the config's blob in the cache, "" when not cached.
	configDigest string
}

// Blobs are the digests the image keeps alive in the cache.
func (im Image) Blobs() []string {
	out := make([]string, 0, len(im.Layers)+1)
	if im.configDigest != "" {
		out = append(out, im.configDigest)
	}
	for _, l := range im.Layers {
		out = append(out, l.Digest.String())
	}
	return out
}

// Fetch resolves src, picks the platform, and puts every layer into the
// cache, verifying each digest. Errors are one sentence naming the image.
func Fetch(ctx context.Context, src Source, opts FetchOptions, cache Cache, progress Progress) (Image, error) {
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	platformName := opts.Platform
	if platformName == "" {
		platformName = DefaultPlatform
	}
	want, err := v1.ParsePlatform(platformName)
	if err != nil || want.OS == "" || want.Architecture == "" {
		return Image{}, fmt.Errorf("platform %q is not os/arch[/variant], e.g. linux/amd64", platformName)
	}
	var (
		img          v1.Image
		digest       string
		uncompressed bool
		ranger       *blobRanger
	)
	switch {
	case src.Remote != "":
		var ref name.Reference
		if img, digest, ref, err = resolveRemote(ctx, src.Remote, *want, opts); err == nil {
			ranger = newBlobRanger(ref.Context(), opts)
		}
	case src.Layout != "":
		img, digest, err = resolveLayout(src.Layout, *want)
	case src.DockerArchive != "":
		img, err = tarball.ImageFromPath(src.DockerArchive, nil)
		if err != nil {
			err = fmt.Errorf("%s is not a docker archive banger can read: %w", src.DockerArchive, err)
		}
		uncompressed = true
	default:
		err = errors.New("no image source given")
	}
	if err != nil {
		return Image{}, err
	}
	out := Image{Ref: src.String(), Digest: digest, Platform: want.String()}
	if err := out.readConfig(ctx, img, *want, cache); err != nil {
		return Image{}, fmt.Errorf("image %s: %w", out.Ref, err)
	}
	if out.Digest == "" {
		sum := sha256.Sum256(out.RawConfig)
		out.Digest = "sha256:" + hex.EncodeToString(sum[:])
	}
	if uncompressed {
		err = out.cacheUncompressed(ctx, img, cache, progress)
	} else {
		err = out.cacheCompressed(ctx, img, cache, ranger, progress)
	}
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", out.Ref, err)
	}
	return out, nil
}

// resolveRemote fetches the reference's manifest (or index, then the
// wanted platform's manifest) from its registry.
func resolveRemote(ctx context.Context, ref string, want v1.Platform, opts FetchOptions) (v1.Image, string, name.Reference, error) {
	nameOpts := []name.Option{}
	if opts.Insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nameOpts...)
	if err != nil {
		return nil, "", nil, fmt.Errorf("%q is not an image reference (e.g. debian:12 or ghcr.io/org/app@sha256:…): %w", ref, err)
	}
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithPlatform(want)}
	if opts.Auth != nil {
		ropts = append(ropts, remote.WithAuth(authn.FromConfig(*opts.Auth)))
	}
	if opts.Transport != nil {
		ropts = append(ropts, remote.WithTransport(opts.Transport))
	}
	desc, err := remote.Get(r, ropts...)
	if err != nil {
		return nil, "", nil, registryError(r, err)
	}
	switch {
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, "", nil, registryError(r, err)
		}
		img, digest, err := pickPlatform(idx, want)
		if err != nil {
			return nil, "", nil, fmt.Errorf("image %s: %w", ref, err)
		}
		return img, digest, r, nil
	case desc.MediaType.IsImage():
		img, err := desc.Image()
		if err != nil {
			return nil, "", nil, registryError(r, err)
		}
		return img, desc.Digest.String(), r, nil
	default:
		return nil, "", nil, fmt.Errorf("image %s: the registry answered with a %q document, which is not an image manifest or index", ref, desc.MediaType)
	}
}

// registryError says in one sentence what the registry did wrong.
func registryError(r name.Reference, err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch terr.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("registry %s refused access to %s (HTTP %d): log in with `docker login` or `podman login`, or check the name", r.Context().RegistryStr(), r, terr.StatusCode)
		case http.StatusNotFound:
			return fmt.Errorf("registry %s has no image %s (HTTP 404)", r.Context().RegistryStr(), r)
		}
		return fmt.Errorf("registry %s failed to serve %s: %s", r.Context().RegistryStr(), r, oneLine(err))
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("fetch %s from registry %s: %s", r, r.Context().RegistryStr(), oneLine(err))
}

// oneLine flattens an error that quotes a server's multi-line body.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// pickPlatform finds want in an index (nested indexes included).
func pickPlatform(idx v1.ImageIndex, want v1.Platform) (v1.Image, string, error) {
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, "", fmt.Errorf("read the image index: %w", err)
	}
	var have []string
	for _, d := range m.Manifests {
		switch {
		case d.MediaType.IsImage():
			if d.Platform == nil {
				continue
			}
			if d.Platform.Satisfies(want) {
				img, err := idx.Image(d.Digest)
				if err != nil {
					return nil, "", fmt.Errorf("read the %s manifest: %w", want, err)
				}
				return img, d.Digest.String(), nil
			}
			if d.Platform.OS != "unknown" { // attestation manifests
				have = append(have, d.Platform.String())
			}
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, "", fmt.Errorf("read a nested image index: %w", err)
			}
			if img, digest, err := pickPlatform(child, want); err == nil {
				return img, digest, nil
			}
		}
	}
	if len(have) == 0 {
		return nil, "", fmt.Errorf("its index names no platforms, so banger cannot find %s in it", want)
	}
	return nil, "", fmt.Errorf("it has no %s variant (it has %s): pass --platform with one of those", want, strings.Join(have, ", "))
}

// resolveLayout opens DIR[:TAG] as an OCI image layout.
func resolveLayout(spec string, want v1.Platform) (v1.Image, string, error) {
	dir, tag := splitLayoutTag(spec)
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, "", fmt.Errorf("%s is not an OCI image layout (no readable index.json): %w", dir, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, "", fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	var chosen *v1.Descriptor
	var tags []string
	for i, d := range m.Manifests {
		t := d.Annotations["org.opencontainers.image.ref.name"]
		if t != "" {
			tags = append(tags, t)
		}
		if tag == "" || t == tag {
			if chosen != nil && tag == "" {
				return nil, "", fmt.Errorf("OCI layout %s holds several images (%s): name one as %s:TAG", dir, strings.Join(tags, ", "), dir)
			}
			chosen = &m.Manifests[i]
		}
	}
	if chosen == nil {
		if tag == "" {
			return nil, "", fmt.Errorf("OCI layout %s holds no images", dir)
		}
		return nil, "", fmt.Errorf("OCI layout %s has no image tagged %q (it has %s)", dir, tag, strings.Join(tags, ", "))
	}
	switch {
	case chosen.MediaType.IsIndex():
		child, err := idx.ImageIndex(chosen.Digest)
		if err != nil {
			return nil, "", fmt.Errorf("OCI layout %s: %w", dir, err)
		}
		img, digest, err := pickPlatform(child, want)
		if err != nil {
			return nil, "", fmt.Errorf("OCI layout %s: %w", dir, err)
		}
		return img, digest, nil
	case chosen.MediaType.IsImage():
		img, err := idx.Image(chosen.Digest)
		if err != nil {
			return nil, "", fmt.Errorf("OCI layout %s: %w", dir, err)
		}
		return img, chosen.Digest.String(), nil
	}
	return nil, "", fmt.Errorf("OCI layout %s: %s is a %q, not an image", dir, chosen.Digest, chosen.MediaType)
}

// splitLayoutTag splits DIR[:TAG]; a colon inside the directory part (a
// path with a colon and no tag) stays in DIR.
func splitLayoutTag(spec string) (dir, tag string) {
	i := strings.LastIndex(spec, ":")
	if i < 0 || strings.Contains(spec[i+1:], "/") {
		return spec, ""
	}
	return spec[:i], spec[i+1:]
}

// readConfig reads and verifies the config, and checks the image is a
// container image for the wanted platform.
func (im *Image) readConfig(ctx context.Context, img v1.Image, want v1.Platform, cache Cache) error {
	m, err := img.Manifest()
	if err != nil {
		return fmt.Errorf("read the manifest: %w", err)
	}
	if mt := m.Config.MediaType; mt != "" && mt != types.DockerConfigJSON && mt != types.OCIConfigJSON {
		return fmt.Errorf("its config is a %q, so it is not a container image banger can boot", mt)
	}
	raw, err := readConfigBlob(ctx, img, m.Config, cache)
	if err != nil {
		return err
	}
	cfg, err := v1.ParseConfigFile(strings.NewReader(string(raw)))
	if err != nil {
		return fmt.Errorf("its config is not valid JSON: %w", err)
	}
	if cfg.OS != "" && cfg.Architecture != "" {
		got := v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
		if !got.Satisfies(v1.Platform{OS: want.OS, Architecture: want.Architecture}) {
			return fmt.Errorf("it is a %s image, not %s", got.String(), want.String())
		}
	}
	for i, l := range m.Layers {
		if _, err := decompressorFor(l.MediaType); err != nil {
			return fmt.Errorf("layer %d: %w", i+1, err)
		}
	}
	im.Config, im.RawConfig = cfg, raw
	if m.Config.Digest.Hex != "" {
		im.configDigest = m.Config.Digest.String()
	}
	return nil
}

// readConfigBlob returns the config, from the cache when it is there (so
// a repeated pull downloads nothing), else fetched, verified and cached.
// A config without a digest (a docker archive's) is read and not cached.
func readConfigBlob(ctx context.Context, img v1.Image, desc v1.Descriptor, cache Cache) ([]byte, error) {
	if desc.Digest.Hex == "" {
		raw, err := img.RawConfigFile()
		if err != nil {
			return nil, fmt.Errorf("read the config: %w", err)
		}
		return raw, nil
	}
	path, err := cache.Put(ctx, desc.Digest, desc.Size, func() (io.ReadCloser, error) {
		raw, err := img.RawConfigFile()
		if err != nil {
			return nil, fmt.Errorf("read the config: %w", err)
		}
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return os.ReadFile(path)
}

// cacheCompressed caches the layers as the manifest lists them (registry
// and layout sources): the cache key is the blob's own digest.
// From a registry (ranger not nil) a layer cut short resumes where it
// stopped.
func (im *Image) cacheCompressed(ctx context.Context, img v1.Image, cache Cache, ranger *blobRanger, progress Progress) error {
	m, err := img.Manifest()
	if err != nil {
		return fmt.Errorf("read the manifest: %w", err)
	}
	var total int64
	for _, l := range m.Layers {
		total += l.Size
	}
	meter := newMeter(total, progress)
	for i, d := range m.Layers {
		layer, err := img.LayerByDigest(d.Digest)
		if err != nil {
			return fmt.Errorf("layer %d: %w", i+1, err)
		}
		var openAt OpenAt
		if ranger != nil {
			openAt = ranger.opener(d.Digest)
		}
		path, err := cache.PutResumable(ctx, d.Digest, d.Size, layer.Compressed, openAt, meter.add)
		if err != nil {
			return fmt.Errorf("layer %d: %w", i+1, err)
		}
		im.Layers = append(im.Layers, Layer{Digest: d.Digest, MediaType: d.MediaType, Path: path, Size: d.Size})
	}
	meter.done()
	return nil
}

// cacheUncompressed caches a docker archive's layers as plain tars keyed
// by their diff IDs (the archive holds them uncompressed; compressing them
// only to get a registry-style digest would waste the time).
func (im *Image) cacheUncompressed(ctx context.Context, img v1.Image, cache Cache, progress Progress) error {
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("read the layers: %w", err)
	}
	meter := newMeter(0, progress)
	for i, l := range layers {
		diffID, err := l.DiffID()
		if err != nil {
			return fmt.Errorf("layer %d: %w", i+1, err)
		}
		path, err := cache.Put(ctx, diffID, -1, l.Uncompressed, meter.add)
		if err != nil {
			return fmt.Errorf("layer %d: %w", i+1, err)
		}
		im.Layers = append(im.Layers, Layer{Digest: diffID, MediaType: types.OCIUncompressedLayer, Path: path, Size: -1})
	}
	meter.done()
	return nil
}

// meter turns byte counts into progress calls, one per 1% (or MiB when the
// total is unknown) so a fast download does not flood the client.
type meter struct {
	total, got, last, step int64
	progress               Progress
}

func newMeter(total int64, progress Progress) *meter {
	step := max(total/100, 1<<20)
	return &meter{total: total, step: step, progress: progress}
}

func (m *meter) add(n int64) {
	m.got += n
	if m.got-m.last >= m.step {
		m.last = m.got
		m.progress("downloading layers", m.got, m.total)
	}
}

func (m *meter) done() {
	total := max(m.total, m.got)
	m.progress("layers fetched and verified", m.got, total)
}
