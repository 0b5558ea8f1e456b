package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/banger-dev/banger/internal/system"
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
	Runner system.Runner
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
func (b *Builder) Build(ctx context.Context, spec BuildSpec, progress Progress) (BuildResult, error) {
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
	recipe := Recipe{Suite: spec.Rootfs.Suite, Mirror: spec.Rootfs.Mirror, Packages: spec.Rootfs.Packages,
		User: spec.Rootfs.User}
	for _, s := range spec.Rootfs.Scripts {
		recipe.Scripts = append(recipe.Scripts, filepath.Base(s))
	}
	return b.runPipeline(spec.OutDir, spec.WorkDir, recipe, progress, func(p *pipeline) error {
		var deb DebianKernel
		err := p.stage(ctx, "kernel", func() error {
			if spec.Kernel != "" {
				return p.customKernel(spec.Kernel)
			}
			var err error
			if deb, err = p.fetchKernel(ctx, spec.KernelPackage); err != nil {
				return err
			}
			p.progress("kernel", "extracting the ELF vmlinux")
			p.res.KernelInfo, err = ExtractVmlinux(deb.Vmlinuz, p.res.Kernel)
			return err
		})
		if err != nil {
			return err
		}
		err = p.stage(ctx, "debootstrap", func() error {
			p.progress("rootfs", fmt.Sprintf("debootstrap %s from %s (about a minute)", spec.Rootfs.Suite, spec.Rootfs.Mirror))
			r := spec.Rootfs
			if b.CacheDir != "" {
				r.CacheDir = filepath.Join(b.CacheDir, "debootstrap", r.Suite)
			}
			return Debootstrap(ctx, b.Runner, r, p.progress)
		})
		if err != nil {
			return err
		}
		err = p.stage(ctx, "customize", func() error {
			p.progress("customize", "installing the agent, sshd setup and user "+spec.Rootfs.User)
			return Customize(ctx, b.Runner, spec.Rootfs)
		})
		if err != nil {
			return err
		}
		if deb.ModulesDir != "" {
			if err := p.stage(ctx, "initrd", func() error { return p.debianInitrd(ctx, deb, spec) }); err != nil {
				return err
			}
		}
		// ext4 needs room for inodes, the journal and reserved blocks.
		return p.ext4(ctx, spec.Rootfs.Dir, spec.SizeBytes, 128<<20)
	})
}

// debianInitrd installs deb's modules into the tree and, when the kernel
// needs one to reach its root disk, builds the initrd.
func (p *pipeline) debianInitrd(ctx context.Context, deb DebianKernel, spec BuildSpec) error {
	p.progress("modules", "installing kernel modules "+deb.Release)
	if err := InstallModules(ctx, p.b.Runner, deb.ModulesDir, spec.Rootfs.Dir); err != nil {
		return err
	}
	ix, err := LoadModuleIndex(deb.ModulesDir)
	if err != nil {
		return err
	}
	if !NeedsInitrd(ix) {
		return nil
	}
	p.progress("initrd", "building the initrd")
	p.res.Initrd = filepath.Join(spec.OutDir, InitrdFile)
	ir, err := BuildInitrd(InitrdSpec{ModulesDir: deb.ModulesDir,
		Busybox: filepath.Join(spec.Rootfs.Dir, "bin", "busybox")}, p.res.Initrd)
	if err != nil {
		return err
	}
	for _, m := range ir.Modules {
		p.recipe.InitrdModules = append(p.recipe.InitrdModules, m.Name)
	}
	return nil
}
