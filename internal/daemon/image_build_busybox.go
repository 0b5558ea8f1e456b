package daemon

import (
	"context"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/image"
)

// busyboxFlavour checks a busybox build request (`image build --from
// busybox`): busybox, the agent and a small init on ext4, with Debian's
// kernel and banger's initrd. It needs no root: nothing is mounted or
// chrooted, so the Debian options have nothing to act on.
func (d *Daemon) busyboxFlavour(req api.ImageBuildRequest) (imageFlavour, error) {
	switch {
	case len(req.Packages) > 0:
		return imageFlavour{}, api.Errorf(api.CodeInvalidArgument, "--packages does not apply to a busybox image: it has no package manager").
			WithHint("build with --from debian to add Debian packages")
	case len(req.Scripts) > 0:
		return imageFlavour{}, api.Errorf(api.CodeInvalidArgument, "--script does not apply to a busybox image").
			WithHint("build with --from debian to customize an image with scripts")
	case req.User != "" || req.Timezone != "":
		return imageFlavour{}, api.Errorf(api.CodeInvalidArgument, "--user and --timezone do not apply to a busybox image: it has only root and UTC")
	case req.SizeBytes != 0 && req.SizeBytes < 32<<20:
		return imageFlavour{}, api.Errorf(api.CodeInvalidArgument, "image size %d bytes is too small: use at least 32M", req.SizeBytes)
	}
	return imageFlavour{
		build: func(ctx context.Context, b *image.Builder, outDir, workDir, agent string, progress image.Progress) (image.BuildResult, error) {
			return b.BuildBusybox(ctx, image.BusyboxSpec{
				OutDir:      outDir,
				WorkDir:     workDir,
				AgentBinary: agent,
				SizeBytes:   req.SizeBytes,
				Kernel:      req.Kernel,
			}, progress)
		},
		logArgs: []any{"from", image.FromBusybox},
	}, nil
}
