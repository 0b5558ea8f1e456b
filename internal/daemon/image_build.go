package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/image"
	"github.com/banger-dev/banger/internal/store"
)

// agentBinaryName is the guest agent shipped with every release.
const agentBinaryName = "banger-vsock-agent"

// imageFlavour is what one kind of `image build --from` adds to the common
// build: its own request checks (done by the function that returns it),
// what it needs of the host, and the builder call that makes its files.
type imageFlavour struct {
	// ready checks the host can build this flavour, after the request
	// checks; nil when anything goes.
	ready func() error
	// build makes the image's files in outDir, using workDir for the tree.
	build func(ctx context.Context, b *image.Builder, outDir, workDir, agent string, progress image.Progress) (image.BuildResult, error)
	// logArgs describe the build in the daemon's log.
	logArgs []any
}

// imageBuild builds an image into the image store and records it: a Debian
// image (debootstrap rootfs, Debian kernel, initrd) or, with --from
// busybox, the busybox image. Like import, a failed build leaves neither
// files nor a row, and its work dir is removed.
func (d *Daemon) imageBuild(ctx context.Context, req api.ImageBuildRequest, p api.Progress) (api.Image, error) {
	if !vmNamePattern.MatchString(req.Name) {
		return api.Image{}, api.Errorf(api.CodeInvalidArgument, "invalid image name %q: use 1-63 lowercase letters, digits and dashes", req.Name)
	}
	kernel, err := d.imageKernel(req.Kernel)
	if err != nil {
		return api.Image{}, err
	}
	req.Kernel = kernel
	var flavour imageFlavour
	if req.From == image.FromBusybox {
		flavour, err = d.busyboxFlavour(req)
	} else {
		flavour, err = d.debianFlavour(req)
	}
	if err != nil {
		return api.Image{}, err
	}
	if _, err := d.store.GetImage(ctx, req.Name); err == nil {
		return api.Image{}, api.Errorf(api.CodeAlreadyExists, "an image named %q already exists", req.Name)
	}
	if flavour.ready != nil {
		if err := flavour.ready(); err != nil {
			return api.Image{}, err
		}
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
		Runner: d.opts.Runner,
		// Keyed by inputs inside: kernels/<package>_<version>, the
		// busybox image's boot/<package>_<version>-<hash> (vmlinux +
		// initrd), debootstrap/<suite>; `banger kernel build` adds
		// built-kernels/<config>_<version>-<hash>.
		CacheDir: d.imageCacheDir(),
		Geteuid:  os.Geteuid,
		Now:      d.now,
	}
	// Beside the image dir, so it is on the same file system and a crashed
	// build's leftovers are easy to recognize (".<id>.work").
	workDir := filepath.Join(d.opts.Layout.ImagesDir(), "."+id+".work")
	d.log.Info("image build", append([]any{"image", req.Name, "id", id}, flavour.logArgs...)...)
	res, err := flavour.build(ctx, b, dir, workDir, agent, func(stage, msg string) {
		p(api.Event{Stage: stage, Message: msg})
	})
	if err != nil {
		_ = os.RemoveAll(dir)
		if errors.Is(err, image.ErrNeedsRoot) {
			return api.Image{}, api.Errorf(api.CodeFailedPrecondition, "%v", err)
		}
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

// imageKernel turns `image build --kernel` into the kernel file the
// builder uses ("" for Debian's package): "debian"; "microvm", the kernel
// `banger kernel build` put in the cache; a file path; or, when empty, the
// built microVM kernel if there is one, else Debian's.
func (d *Daemon) imageKernel(choice string) (string, error) {
	switch choice {
	case image.KernelChoiceDebian:
		return "", nil
	case "", image.KernelChoiceMicroVM:
		cfg, err := image.LoadKernelConfig(image.MicroVMConfig)
		if err != nil {
			return "", err
		}
		k, err := image.FindBuiltKernel(d.imageCacheDir(), cfg)
		if err == nil {
			return k.Vmlinux, nil
		}
		if choice == "" {
			return "", nil
		}
		return "", api.Errorf(api.CodeFailedPrecondition, "--kernel microvm: %v", err).
			WithHint("`banger kernel build` builds it (several minutes), or use --kernel debian")
	}
	if !filepath.IsAbs(choice) {
		return "", api.Errorf(api.CodeInvalidArgument, "kernel path %q must be absolute (or use --kernel microvm or debian)", choice)
	}
	if _, err := image.InspectKernel(choice); err != nil {
		return "", api.Errorf(api.CodeInvalidArgument, "%v", err)
	}
	return choice, nil
}

// imageCacheDir is where image builds keep what they fetch and what
// `banger kernel build` leaves for them (the CLI's StateDir/cache).
func (d *Daemon) imageCacheDir() string { return filepath.Join(d.opts.Layout.StateDir, "cache") }

// debianFlavour checks a Debian build request (`--from debian[:SUITE]`,
// the default): debootstrap and chroot need a root daemon.
func (d *Daemon) debianFlavour(req api.ImageBuildRequest) (imageFlavour, error) {
	suite := d.opts.Config.Image.Suite
	if req.From != "" && req.From != "debian" {
		s, ok := strings.CutPrefix(req.From, "debian:")
		if !ok || s == "" {
			return imageFlavour{}, api.Errorf(api.CodeInvalidArgument, "--from %q is not supported: use busybox, debian or debian:SUITE, e.g. debian:bookworm", req.From)
		}
		suite = s
	}
	if req.SizeBytes != 0 && req.SizeBytes < 256<<20 {
		return imageFlavour{}, api.Errorf(api.CodeInvalidArgument, "image size %d bytes is too small: use at least 256M", req.SizeBytes)
	}
	for _, path := range req.Scripts {
		if !filepath.IsAbs(path) {
			return imageFlavour{}, api.Errorf(api.CodeInvalidArgument, "path %q must be absolute", path)
		}
	}
	owner, ownerUID, err := d.imageUser(req.User)
	if err != nil {
		return imageFlavour{}, err
	}
	return imageFlavour{
		ready: func() error {
			if uid := os.Geteuid(); uid != 0 {
				return api.Errorf(api.CodeFailedPrecondition,
					"building an image needs root (debootstrap and chroot), but bangerd runs as uid %d", uid).
					WithHint("run the build with a root daemon, or import a prebuilt image with `banger image import`")
			}
			return nil
		},
		build: func(ctx context.Context, b *image.Builder, outDir, workDir, agent string, progress image.Progress) (image.BuildResult, error) {
			return b.Build(ctx, image.BuildSpec{
				OutDir:    outDir,
				WorkDir:   workDir,
				SizeBytes: req.SizeBytes,
				Kernel:    req.Kernel,
				Rootfs: image.RootfsSpec{
					Mirror:      d.opts.Config.Image.DebianMirror,
					Suite:       suite,
					Packages:    req.Packages,
					User:        owner,
					UID:         ownerUID,
					Timezone:    req.Timezone,
					AgentBinary: agent,
					Scripts:     req.Scripts,
				},
			}, progress)
		},
		logArgs: []any{"suite", suite, "user", owner},
	}, nil
}

// imageShow returns one image.
func (d *Daemon) imageShow(ctx context.Context, req api.ImageRef, _ api.Progress) (api.Image, error) {
	im, err := d.store.GetImage(ctx, req.Name)
	if errors.Is(err, store.ErrNotFound) {
		return api.Image{}, api.Errorf(api.CodeNotFound, "no image named %q", req.Name).
			WithHint("`banger image list` shows images")
	}
	if err != nil {
		return api.Image{}, err
	}
	return imageToAPI(im), nil
}

// imageUser picks the image's default user: the requested one, else the
// daemon owner (the user the VMs are for). Its uid is kept only when the
// user is the owner, so files synced from the host keep their owner.
func (d *Daemon) imageUser(requested string) (string, int, error) {
	u, err := user.Current()
	if err != nil {
		return "", 0, fmt.Errorf("look up the daemon's user: %w", err)
	}
	name := requested
	if name == "" {
		name = u.Username
	}
	uid := 0
	if name == u.Username {
		uid, _ = strconv.Atoi(u.Uid)
	}
	return name, uid, nil
}

// agentBinary finds banger-vsock-agent to put into images: the canonical
// install path first, then beside the running bangerd (development builds).
func (d *Daemon) agentBinary() (string, error) {
	root := d.opts.Layout.SystemRoot
	if root == "" {
		root = "/"
	}
	candidates := []string{filepath.Join(root, "usr", "local", "lib", "banger", agentBinaryName)}
	if self, err := os.Executable(); err == nil {
		candidates = append(candidates, filepath.Join(filepath.Dir(self), agentBinaryName))
	}
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() {
			return c, nil
		}
	}
	return "", api.Errorf(api.CodeFailedPrecondition, "cannot find %s to install into the image (looked in %s)",
		agentBinaryName, strings.Join(candidates, " and ")).
		WithHint("reinstall banger, or build the agent next to bangerd")
}

// cleanupImageWork removes work dirs left by builds a crash interrupted
// (".<id>.work" in the images dir). Meant for daemon start, before any build
// can run; mounts left inside are detached first (image.RemoveTree).
func (d *Daemon) cleanupImageWork() {
	dirs, _ := filepath.Glob(filepath.Join(d.opts.Layout.ImagesDir(), ".*.work"))
	for _, w := range dirs {
		if err := image.RemoveTree(w, ""); err != nil {
			d.log.Warn("remove stale image build dir", "dir", w, "err", err)
			continue
		}
		d.log.Info("removed stale image build dir", "dir", w)
	}
}
