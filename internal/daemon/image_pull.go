package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/image"
	"github.com/banger-dev/banger/internal/oci"
	"github.com/banger-dev/banger/internal/store"
)

// ociState serializes image prune against pulls: a pull's blobs are in
// the cache before its image row exists, so prune must not run meanwhile.
type ociState struct {
	mu sync.RWMutex
	// limits bounds unpacking for a given compressed size;
	// oci.DefaultLimits when nil (tests lower it).
	limits func(compressed int64) oci.Limits
}

// ociCache is the blob cache shared by every pull and container image
// import.
func (d *Daemon) ociCache() oci.Cache {
	return oci.Cache{Dir: filepath.Join(d.imageCacheDir(), "oci")}
}

// imagePull makes an image from a container image (a registry reference,
// an OCI layout or a docker archive). Like import and build, a failed pull
// registers nothing and leaves no image files; blobs fetched and verified
// stay in the cache for the next attempt.
func (d *Daemon) imagePull(ctx context.Context, req api.ImagePullRequest, p api.Progress) (api.Image, error) {
	src, err := pullSource(req)
	if err != nil {
		return api.Image{}, err
	}
	if req.Name == "" {
		req.Name = imageNameFor(src)
	}
	if !vmNamePattern.MatchString(req.Name) {
		return api.Image{}, api.Errorf(api.CodeInvalidArgument, "invalid image name %q: use 1-63 lowercase letters, digits and dashes", req.Name).
			WithHint("pass --name NAME")
	}
	if req.SizeBytes < 0 {
		return api.Image{}, api.Errorf(api.CodeInvalidArgument, "--size %d is negative: give the room to add, e.g. +1G", req.SizeBytes)
	}
	if _, err := d.store.GetImage(ctx, req.Name); err == nil {
		return api.Image{}, api.Errorf(api.CodeAlreadyExists, "an image named %q already exists", req.Name).WithHint("pass --name NAME")
	}
	kernel, initrd, err := d.pullBoot(ctx, req)
	if err != nil {
		return api.Image{}, err
	}
	agent, err := d.agentBinary()
	if err != nil {
		return api.Image{}, err
	}
	d.oci.mu.RLock()
	defer d.oci.mu.RUnlock()

	opts := oci.FetchOptions{Platform: req.Platform, Insecure: req.Insecure}
	if a := req.Auth; a != nil {
		opts.Auth = &authn.AuthConfig{Username: a.Username, Password: a.Password, Auth: a.Auth,
			IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken}
	}
	p(api.Event{Stage: "resolve", Message: "resolving " + src.String()})
	fetched, err := oci.Fetch(ctx, src, opts, d.ociCache(), func(msg string, done, total int64) {
		p(api.Event{Stage: "download", Message: msg, Done: done, Total: total})
	})
	if err != nil {
		if ctx.Err() != nil {
			return api.Image{}, ctx.Err()
		}
		return api.Image{}, api.Errorf(api.CodeInvalidArgument, "%v", err)
	}
	return d.buildFromOCI(ctx, req, fetched, bootFiles{kernel: kernel, initrd: initrd, agent: agent}, p)
}

// bootFiles are what an image made from a container image boots with.
type bootFiles struct {
	kernel, initrd, agent string
}

// pullBoot picks the kernel (and initrd) the image boots with: those of
// the --boot-from image, or the --kernel choice as for image build.
func (d *Daemon) pullBoot(ctx context.Context, req api.ImagePullRequest) (string, string, error) {
	if req.BootFrom == "" {
		k, err := d.imageKernel(req.Kernel)
		return k, "", err
	}
	if req.Kernel != "" {
		return "", "", api.Errorf(api.CodeInvalidArgument, "--boot-from and --kernel exclude each other: --boot-from takes that image's kernel")
	}
	im, err := d.store.GetImage(ctx, req.BootFrom)
	if errors.Is(err, store.ErrNotFound) {
		return "", "", api.Errorf(api.CodeNotFound, "--boot-from: no image named %q", req.BootFrom).WithHint("`banger image list` shows images")
	}
	if err != nil {
		return "", "", err
	}
	return im.KernelPath, im.InitrdPath, nil
}

// buildFromOCI turns a fetched image into image files and its row.
func (d *Daemon) buildFromOCI(ctx context.Context, req api.ImagePullRequest, fetched oci.Image, boot bootFiles, p api.Progress) (api.Image, error) {
	id := store.NewID()
	dir := filepath.Join(d.opts.Layout.ImagesDir(), id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return api.Image{}, err
	}
	var compressed int64
	for _, l := range fetched.Layers {
		if st, err := os.Stat(l.Path); err == nil {
			compressed += st.Size()
		}
	}
	b := &image.Builder{Runner: d.opts.Runner, CacheDir: d.imageCacheDir(), Geteuid: os.Geteuid, Now: d.now}
	d.log.Info("image pull", "image", req.Name, "id", id, "source", fetched.Ref, "digest", fetched.Digest)
	res, err := b.BuildOCI(ctx, image.OCISpec{
		BusyboxSpec: image.BusyboxSpec{
			OutDir: dir, WorkDir: filepath.Join(d.opts.Layout.ImagesDir(), "."+id+".work"),
			AgentBinary: boot.agent, SizeBytes: req.SizeBytes, Kernel: boot.kernel,
		},
		Initrd: boot.initrd,
		Image:  fetched,
		Limits: d.ociLimits(compressed),
	}, func(stage, msg string) { p(api.Event{Stage: stage, Message: msg}) })
	if err != nil {
		_ = os.RemoveAll(dir)
		if ctx.Err() != nil {
			return api.Image{}, ctx.Err()
		}
		return api.Image{}, api.Errorf(api.CodeInvalidArgument, "image %s: %v", fetched.Ref, err)
	}
	im := store.Image{ID: id, Name: req.Name, Source: store.ImageSourceOCI,
		KernelPath: res.Kernel, InitrdPath: res.Initrd, RootfsPath: res.Rootfs,
		RootfsSizeBytes: res.RootfsBytes, Meta: res.Recipe.JSON(),
		Origin: store.ImageOrigin{Ref: fetched.Ref, Digest: fetched.Digest, Platform: fetched.Platform,
			Config: fetched.RawConfig, Blobs: fetched.Blobs()}}
	if err := d.store.CreateImage(ctx, im); err != nil {
		_ = os.RemoveAll(dir)
		if errors.Is(err, store.ErrAlreadyExists) {
			return api.Image{}, api.Errorf(api.CodeAlreadyExists, "an image named %q already exists", req.Name)
		}
		return api.Image{}, fmt.Errorf("pull image %q: %w", req.Name, err)
	}
	saved, err := d.store.GetImage(ctx, id)
	if err != nil {
		return api.Image{}, err
	}
	d.events.publish(api.Event{Time: d.now(), Kind: "image.changed", Stage: "pulled", Message: "image " + saved.Name + " made from " + fetched.Ref})
	return imageToAPI(saved), nil
}

func (d *Daemon) ociLimits(compressed int64) oci.Limits {
	if d.oci.limits != nil {
		return d.oci.limits(compressed)
	}
	return oci.DefaultLimits(compressed)
}

// pullSource checks that exactly one source is given, with absolute paths.
func pullSource(req api.ImagePullRequest) (oci.Source, error) {
	src := oci.Source{Remote: req.Ref, Layout: req.OCILayout, DockerArchive: req.DockerArchive}
	n := 0
	for _, s := range []string{src.Remote, src.Layout, src.DockerArchive} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return oci.Source{}, api.Errorf(api.CodeInvalidArgument, "give exactly one of a registry reference, --oci-layout DIR[:TAG] and --docker-archive FILE")
	}
	for _, p := range []string{src.Layout, src.DockerArchive} {
		if p != "" && !filepath.IsAbs(p) {
			return oci.Source{}, api.Errorf(api.CodeInvalidArgument, "path %q must be absolute", p)
		}
	}
	return src, nil
}

var nonNameChars = regexp.MustCompile(`[^a-z0-9]+`)

// imageNameFor derives an image name from the source: the repository's
// last path element and the tag ("debian:12" → "debian-12"), or the
// file's base name.
func imageNameFor(src oci.Source) string {
	s := src.Remote
	switch {
	case src.Layout != "":
		s = filepath.Base(strings.TrimSuffix(src.Layout, "/"))
	case src.DockerArchive != "":
		s = strings.TrimSuffix(filepath.Base(src.DockerArchive), ".tar")
	default:
		s, _, _ = strings.Cut(s, "@")
		if i := strings.LastIndex(s, "/"); i >= 0 {
			s = s[i+1:]
		}
	}
	s = strings.Trim(nonNameChars.ReplaceAllString(strings.ToLower(s), "-"), "-")
	if len(s) > 63 {
		s = strings.TrimRight(s[:63], "-")
	}
	return s
}

// imagePrune removes cached blobs no image was made from, and leftovers of
// interrupted downloads.
func (d *Daemon) imagePrune(ctx context.Context, _ struct{}, _ api.Progress) (api.ImagePruneResult, error) {
	d.oci.mu.Lock()
	defer d.oci.mu.Unlock()
	imgs, err := d.store.ListImages(ctx)
	if err != nil {
		return api.ImagePruneResult{}, err
	}
	keep := map[string]bool{}
	for _, im := range imgs {
		for _, b := range im.Origin.Blobs {
			keep[b] = true
		}
	}
	blobs, bytes, err := d.ociCache().Prune(keep)
	if err != nil {
		return api.ImagePruneResult{}, err
	}
	d.log.Info("image prune", "blobs", blobs, "bytes", bytes)
	return api.ImagePruneResult{Blobs: blobs, Bytes: bytes}, nil
}

// imageBootArgs are the kernel parameters an image needs: one made from a
// container image boots banger's init, not the image's.
func imageBootArgs(img store.Image) string {
	if img.Source != store.ImageSourceOCI {
		return ""
	}
	return "init=" + image.OCIInitPath
}

// originToAPI is an image's origin for image show; nil for images not made
// from container images.
func originToAPI(im store.Image) *api.ImageOrigin {
	if im.Source != store.ImageSourceOCI {
		return nil
	}
	return &api.ImageOrigin{Ref: im.Origin.Ref, Digest: im.Origin.Digest, Platform: im.Origin.Platform, Config: im.Origin.Config}
}
