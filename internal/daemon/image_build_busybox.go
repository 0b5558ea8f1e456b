package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/image"
	"github.com/banger-dev/banger/internal/store"
)

// imageBuildBusybox builds the busybox image (`image build --from busybox`):
// busybox, the agent and a small init on ext4, with Debian's kernel and
// banger's initrd. It needs no root: nothing is mounted or chrooted. Like
// the Debian build, a failure leaves neither files nor a row.
func (d *Daemon) imageBuildBusybox(ctx context.Context, req api.ImageBuildRequest, p api.Progress) (api.Image, error) {
	switch {
	case len(req.Packages) > 0:
		return api.Image{}, api.Errorf(api.CodeInvalidArgument, "--packages does not apply to a busybox image: it has no package manager").
			WithHint("build with --from debian to add Debian packages")
	case len(req.Scripts) > 0:
		return api.Image{}, api.Errorf(api.CodeInvalidArgument, "--script does not apply to a busybox image").
			WithHint("build with --from debian to customize an image with scripts")
	case req.User != "" || req.Timezone != "":
		return api.Image{}, api.Errorf(api.CodeInvalidArgument, "--user and --timezone do not apply to a busybox image: it has only root and UTC")
	case req.SizeBytes != 0 && req.SizeBytes < 32<<20:
		return api.Image{}, api.Errorf(api.CodeInvalidArgument, "image size %d bytes is too small: use at least 32M", req.SizeBytes)
	}
	if req.Kernel != "" {
		if !filepath.IsAbs(req.Kernel) {
			return api.Image{}, api.Errorf(api.CodeInvalidArgument, "path %q must be absolute", req.Kernel)
		}
		if _, err := image.InspectKernel(req.Kernel); err != nil {
			return api.Image{}, api.Errorf(api.CodeInvalidArgument, "%v", err)
		}
	}
	if _, err := d.store.GetImage(ctx, req.Name); err == nil {
		return api.Image{}, api.Errorf(api.CodeAlreadyExists, "an image named %q already exists", req.Name)
	}
	agent, err := d.agentBinary()
	if err != nil {
		return api.Image{}, err
	}

	id := store.NewID()
	dir := filepath.Join(d.opts.Layout.ImagesDir(), id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return api.Image{}, err
	}
	b := &image.Builder{
		Runner: disk.ExecRunner{},
		// Keyed by inputs inside: kernels/<package>_<version>,
		// boot/<package>_<version>-<hash> (vmlinux + initrd).
		CacheDir: filepath.Join(d.opts.Layout.StateDir, "cache"),
		Now:      d.now,
	}
	spec := image.BusyboxSpec{
		OutDir:      dir,
		WorkDir:     filepath.Join(d.opts.Layout.ImagesDir(), "."+id+".work"),
		AgentBinary: agent,
		SizeBytes:   req.SizeBytes,
		Kernel:      req.Kernel,
	}
	d.log.Info("image build", "image", req.Name, "id", id, "from", image.FromBusybox)
	res, err := b.BuildBusybox(ctx, spec, func(stage, msg string) {
		p(api.Event{Stage: stage, Message: msg})
	})
	if err != nil {
		_ = os.RemoveAll(dir)
		return api.Image{}, fmt.Errorf("build image %q: %w", req.Name, err)
	}
	im := store.Image{ID: id, Name: req.Name, Source: store.ImageSourceBuild,
		KernelPath: res.Kernel, InitrdPath: res.Initrd, RootfsPath: res.Rootfs,
		RootfsSizeBytes: res.RootfsBytes, Meta: res.Recipe.JSON()}
	if err := d.store.CreateImage(ctx, im); err != nil {
		_ = os.RemoveAll(dir)
		if errors.Is(err, store.ErrAlreadyExists) {
			return api.Image{}, api.Errorf(api.CodeAlreadyExists, "an image named %q already exists", req.Name)
		}
		return api.Image{}, fmt.Errorf("build image %q: %w", req.Name, err)
	}
	d.log.Info("image built", "image", req.Name, "id", id, "seconds", res.Recipe.BuildSeconds)
	saved, err := d.store.GetImage(ctx, id)
	if err != nil {
		return api.Image{}, err
	}
	d.events.publish(api.Event{Time: d.now(), Kind: "image.changed", Stage: "built", Message: "image " + saved.Name + " built"})
	return imageToAPI(saved), nil
}
