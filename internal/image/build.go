package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/banger-dev/banger/internal/disk"
)

// File names inside a built image's directory.
const (
	KernelFile = "vmlinux"
	InitrdFile = "initrd.img"
	RootfsFile = "rootfs.ext4"
)

// DefaultRootfsSize is the built image's file system size. It is sparse,
// so it costs only what the tree holds; it must not exceed the default VM
// disk (4 GiB), which every VM disk is cloned from and grown to.
const DefaultRootfsSize = 2 << 30

// BuildSpec describes one image build.
type BuildSpec struct {
	// OutDir receives vmlinux, initrd.img (when needed) and rootfs.ext4. It
	// must exist; the caller owns it and removes it on failure.
	OutDir string
	// WorkDir holds the debootstrap tree; Build removes it in every case.
	WorkDir string
	Rootfs  RootfsSpec
	// SizeBytes is the rootfs size; DefaultRootfsSize when zero.
	SizeBytes int64
	// Kernel is a kernel file to use instead of Debian's package. It is
	// converted to an ELF vmlinux when it is a bzImage; no initrd is made
	// for it (a custom kernel is expected to have its drivers built in).
	Kernel string
	// KernelPackage is the Debian package to fetch when Kernel is empty;
	// DefaultKernelPackage when empty.
	KernelPackage string
}

// BuildResult describes the built files.
type BuildResult struct {
	Kernel      string
	Initrd      string // "" when the kernel needs none
	Rootfs      string
	RootfsBytes int64
	KernelInfo  KernelInfo
	// Recipe is what went into the image, for the store's meta column.
	Recipe Recipe
}

// Recipe is the JSON recorded with a built image.
type Recipe struct {
	// From is the flavour: "" for a Debian build, FromBusybox.
	From string `json:"from,omitempty"`
	// Busybox is the busybox version of a busybox image.
	Busybox        string   `json:"busybox,omitempty"`
	Suite          string   `json:"suite"`
	Mirror         string   `json:"mirror"`
	Packages       []string `json:"packages,omitempty"`
	Scripts        []string `json:"scripts,omitempty"`
	User           string   `json:"user"`
	KernelPackage  string   `json:"kernel_package,omitempty"`
	KernelVersion  string   `json:"kernel_version,omitempty"`
	KernelRelease  string   `json:"kernel_release,omitempty"`
	KernelSource   string   `json:"kernel_source,omitempty"`
	InitrdModules  []string `json:"initrd_modules,omitempty"`
	BuildSeconds   float64  `json:"build_seconds"`
	StageDurations []Stage  `json:"stages,omitempty"`
}

// Stage is one timed build step.
type Stage struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

// JSON renders the recipe for store.Image.Meta.
func (r Recipe) JSON() json.RawMessage {
	b, _ := json.Marshal(r)
	return b
}

// Builder builds images. Every outside effect is injected.
type Builder struct {
	Runner disk.Runner
	// CacheDir keeps Debian kernels and debootstrap's .debs between builds.
	CacheDir string
	// Geteuid is os.Geteuid; building needs root (debootstrap, chroot).
	Geteuid func() int
	// Now is the clock for stage timings; time.Now when nil.
	Now func() time.Time
	// Mountinfo is /proc/self/mountinfo; tests may point elsewhere.
	Mountinfo string
}

// ErrNeedsRoot says the build must run as root.
var ErrNeedsRoot = errors.New("building an image needs root (debootstrap and chroot)")

// Progress receives a stage name and a human sentence.
type Progress func(stage, message string)

// Build runs the whole build: kernel, rootfs tree, customization, modules,
// initrd, ext4 image. The work dir is removed whatever happens; on failure
// OutDir may hold partial files for the caller to remove.
func (b *Builder) Build(ctx context.Context, spec BuildSpec, progress Progress) (res BuildResult, err error) {
	if progress == nil {
		progress = func(string, string) {}
	}
	now := b.Now
	if now == nil {
		now = time.Now
	}
	if b.Geteuid != nil && b.Geteuid() != 0 {
		return BuildResult{}, ErrNeedsRoot
	}
	if spec.SizeBytes == 0 {
		spec.SizeBytes = DefaultRootfsSize
	}
	if spec.KernelPackage == "" {
		spec.KernelPackage = DefaultKernelPackage
	}
	spec.Rootfs.Dir = filepath.Join(spec.WorkDir, "rootfs")
	if err := spec.Rootfs.validate(); err != nil {
		return BuildResult{}, err
	}
	if spec.Kernel != "" {
		if err := regularFile("kernel", spec.Kernel); err != nil {
			return BuildResult{}, err
		}
	}
	if err := os.MkdirAll(spec.WorkDir, 0o700); err != nil {
		return BuildResult{}, fmt.Errorf("create work dir: %w", err)
	}
	defer func() {
		if rerr := RemoveTree(spec.WorkDir, b.Mountinfo); rerr != nil && err == nil {
			err = rerr
		}
	}()

	start := now()
	recipe := Recipe{Suite: spec.Rootfs.Suite, Mirror: spec.Rootfs.Mirror, Packages: spec.Rootfs.Packages,
		User: spec.Rootfs.User}
	for _, s := range spec.Rootfs.Scripts {
		recipe.Scripts = append(recipe.Scripts, filepath.Base(s))
	}
	timed := func(name string, fn func() error) error {
		t := now()
		err := fn()
		recipe.StageDurations = append(recipe.StageDurations, Stage{Name: name, Seconds: now().Sub(t).Seconds()})
		return err
	}
	res.Kernel = filepath.Join(spec.OutDir, KernelFile)
	res.Rootfs = filepath.Join(spec.OutDir, RootfsFile)

	var deb DebianKernel
	err = timed("kernel", func() error {
		src := spec.Kernel
		if src == "" {
			progress("kernel", "fetching Debian package "+spec.KernelPackage)
			var err error
			deb, err = DebianKernels{Runner: b.Runner, CacheDir: filepath.Join(b.CacheDir, "kernels")}.Fetch(ctx, spec.KernelPackage)
			if err != nil {
				return err
			}
			src = deb.Vmlinuz
			recipe.KernelPackage, recipe.KernelVersion, recipe.KernelRelease = deb.Package, deb.Version, deb.Release
		} else {
			recipe.KernelSource = spec.Kernel
		}
		progress("kernel", "extracting the ELF vmlinux")
		var err error
		res.KernelInfo, err = ExtractVmlinux(src, res.Kernel)
		return err
	})
	if err != nil {
		return BuildResult{}, err
	}

	err = timed("debootstrap", func() error {
		progress("rootfs", fmt.Sprintf("debootstrap %s from %s (about a minute)", spec.Rootfs.Suite, spec.Rootfs.Mirror))
		r := spec.Rootfs
		if b.CacheDir != "" {
			r.CacheDir = filepath.Join(b.CacheDir, "debootstrap", r.Suite)
		}
		return Debootstrap(ctx, b.Runner, r)
	})
	if err != nil {
		return BuildResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return BuildResult{}, err
	}

	err = timed("customize", func() error {
		progress("customize", "installing the agent, sshd setup and user "+spec.Rootfs.User)
		return Customize(ctx, b.Runner, spec.Rootfs)
	})
	if err != nil {
		return BuildResult{}, err
	}

	if deb.ModulesDir != "" {
		err = timed("initrd", func() error {
			progress("modules", "installing kernel modules "+deb.Release)
			if err := InstallModules(ctx, b.Runner, deb.ModulesDir, spec.Rootfs.Dir); err != nil {
				return err
			}
			ix, err := LoadModuleIndex(deb.ModulesDir)
			if err != nil {
				return err
			}
			if !NeedsInitrd(ix) {
				return nil
			}
			progress("initrd", "building the initrd")
			res.Initrd = filepath.Join(spec.OutDir, InitrdFile)
			ir, err := BuildInitrd(InitrdSpec{ModulesDir: deb.ModulesDir,
				Busybox: filepath.Join(spec.Rootfs.Dir, "bin", "busybox")}, res.Initrd)
			if err != nil {
				return err
			}
			for _, m := range ir.Modules {
				recipe.InitrdModules = append(recipe.InitrdModules, m.Name)
			}
			return nil
		})
		if err != nil {
			return BuildResult{}, err
		}
	}

	err = timed("ext4", func() error {
		used, err := treeSize(spec.Rootfs.Dir)
		if err != nil {
			return fmt.Errorf("measure rootfs: %w", err)
		}
		// ext4 needs room for inodes, the journal and reserved blocks.
		if need := used + used/5 + 128<<20; need > spec.SizeBytes {
			return fmt.Errorf("the rootfs holds %d MiB, too much for a %d MiB image: build with a larger --size (at least %d MiB)",
				used>>20, spec.SizeBytes>>20, need>>20+1)
		}
		progress("ext4", fmt.Sprintf("making a %d MiB ext4 image (%d MiB used)", spec.SizeBytes>>20, used>>20))
		return disk.MakeExt4(ctx, b.Runner, disk.Ext4Spec{SourceDir: spec.Rootfs.Dir, Path: res.Rootfs,
			SizeBytes: spec.SizeBytes, Label: "banger-root"})
	})
	if err != nil {
		return BuildResult{}, err
	}
	info, err := disk.ReadExt4(res.Rootfs)
	if err != nil {
		return BuildResult{}, err
	}
	res.RootfsBytes = info.FileBytes
	recipe.BuildSeconds = now().Sub(start).Seconds()
	res.Recipe = recipe
	return res, nil
}
