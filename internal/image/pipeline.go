package image

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/banger-dev/banger/internal/disk"
)

// pipeline is one image build in progress: the part every flavour (Debian,
// busybox) shares. A flavour's build is its own sequence of stages run
// through it; the kernel and ext4 stages are common.
type pipeline struct {
	b        *Builder
	progress Progress
	now      func() time.Time
	recipe   Recipe
	res      BuildResult
}

// runPipeline creates workDir, runs steps with a pipeline writing into
// outDir, and finishes the result (rootfs size, build time, recipe). The
// work dir is removed whatever happens; on failure outDir may hold partial
// files for the caller to remove.
func (b *Builder) runPipeline(outDir, workDir string, recipe Recipe, progress Progress, steps func(p *pipeline) error) (res BuildResult, err error) {
	if progress == nil {
		progress = func(string, string) {}
	}
	now := b.Now
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(workDir, 0o700); err != nil {
		return BuildResult{}, fmt.Errorf("create work dir: %w", err)
	}
	defer func() {
		if rerr := RemoveTree(workDir, b.Mountinfo); rerr != nil && err == nil {
			err = rerr
		}
	}()
	p := &pipeline{b: b, progress: progress, now: now, recipe: recipe, res: BuildResult{
		Kernel: filepath.Join(outDir, KernelFile),
		Rootfs: filepath.Join(outDir, RootfsFile),
	}}
	start := now()
	if err := steps(p); err != nil {
		return BuildResult{}, err
	}
	info, err := disk.ReadExt4(p.res.Rootfs)
	if err != nil {
		return BuildResult{}, err
	}
	p.res.RootfsBytes = info.FileBytes
	p.recipe.BuildSeconds = now().Sub(start).Seconds()
	p.res.Recipe = p.recipe
	return p.res, nil
}

// stage runs one named build step, timing it into the recipe. A cancelled
// build stops before the next stage.
func (p *pipeline) stage(ctx context.Context, name string, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t := p.now()
	err := fn()
	p.recipe.StageDurations = append(p.recipe.StageDurations, Stage{Name: name, Seconds: p.now().Sub(t).Seconds()})
	return err
}

// customKernel makes the image's vmlinux from a kernel file the user gave.
func (p *pipeline) customKernel(path string) error {
	p.recipe.KernelSource = path
	p.progress("kernel", "extracting the ELF vmlinux from "+path)
	var err error
	p.res.KernelInfo, err = ExtractVmlinux(path, p.res.Kernel)
	return err
}

// fetchKernel fetches Debian's kernel package pkg (from the builder's cache
// when it is there) and records it in the recipe.
func (p *pipeline) fetchKernel(ctx context.Context, pkg string) (DebianKernel, error) {
	p.progress("kernel", "fetching Debian package "+pkg)
	deb, err := DebianKernels{Runner: p.b.Runner, CacheDir: filepath.Join(p.b.CacheDir, "kernels")}.Fetch(ctx, pkg)
	if err != nil {
		return DebianKernel{}, err
	}
	p.recipe.KernelPackage, p.recipe.KernelVersion, p.recipe.KernelRelease = deb.Package, deb.Version, deb.Release
	return deb, nil
}

// ext4 is the last stage: the tree becomes the image's rootfs.ext4 of
// size bytes. slack is the room the flavour's tree needs beyond its files
// and a fifth for ext4's inodes, journal and reserved blocks.
func (p *pipeline) ext4(ctx context.Context, tree string, size, slack int64) error {
	return p.stage(ctx, "ext4", func() error {
		used, err := treeSize(tree)
		if err != nil {
			return fmt.Errorf("measure rootfs: %w", err)
		}
		if need := used + used/5 + slack; need > size {
			return fmt.Errorf("the rootfs holds %d MiB, too much for a %d MiB image: build with a larger --size (at least %d MiB)",
				used>>20, size>>20, need>>20+1)
		}
		p.progress("ext4", fmt.Sprintf("making a %d MiB ext4 image (%d MiB used)", size>>20, used>>20))
		return disk.MakeExt4(ctx, p.b.Runner, disk.Ext4Spec{SourceDir: tree, Path: p.res.Rootfs, SizeBytes: size, Label: "banger-root"})
	})
}
