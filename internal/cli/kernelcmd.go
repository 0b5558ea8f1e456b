package cli

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/image"
	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/termtext"
)

// kernelSourceDir is where Debian's linux-source package puts its tarball.
const kernelSourceDir = "/usr/src"

func newKernelCmd(app *App, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kernel",
		Short: "Build the microVM guest kernel",
	}
	cmd.AddCommand(newKernelBuildCmd(app, g))
	return cmd
}

// kernelBuildOptions are `banger kernel build`'s inputs.
type kernelBuildOptions struct {
	Config string
	// Source is a source tarball; the newest /usr/src/linux-source-*.tar.*
	// when empty.
	Source string
	// CacheDir is banger's cache (StateDir/cache), where image builds look.
	CacheDir string
	Jobs     int
}

func newKernelBuildCmd(app *App, g *globalFlags) *cobra.Command {
	opts := kernelBuildOptions{}
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Build a kernel for microVMs from Debian's linux-source package",
		Long: `Build a guest kernel from the Linux source Debian's linux-source package puts
in /usr/src, with a configuration banger carries (--config microvm): virtio
over MMIO, block, network, vsock, console and rng drivers, ext4, PVH and ACPI,
all built in, so VMs boot without modules or an initrd. The result is an ELF
vmlinux that Firecracker and QEMU microvm both boot.

It runs here, as you (no root, no daemon), with make -j<CPUs>; the first build
takes several minutes (docs/kernel.md). The kernel is cached by source version
and configuration, so building again with the same inputs is immediate. Once
it is built, new images use it unless built with --kernel debian.

Needs: apt-get install linux-source build-essential bc flex bison libelf-dev libssl-dev`,
		Example: `  banger kernel build
  banger image build tiny --from busybox --kernel microvm`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.CacheDir == "" {
				layout, err := app.Layout(g.system)
				if err != nil {
					return err
				}
				opts.CacheDir = filepath.Join(layout.StateDir, "cache")
			}
			progress := func(stage, msg string) {
				fmt.Fprintf(app.Stderr, "%s: %s\n", stage, termtext.Line(msg))
			}
			k, err := buildKernel(cmd.Context(), system.ExecRunner{}, opts, progress)
			if err != nil {
				return err
			}
			return app.emit(g, k, func() error { return renderBuiltKernel(app.Stdout, k) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Config, "config", image.MicroVMConfig, "kernel configuration: "+strings.Join(image.KernelConfigNames(), ", "))
	f.StringVar(&opts.Source, "source", "", "Linux source tarball (default: the newest /usr/src/linux-source-*.tar.xz)")
	f.StringVar(&opts.CacheDir, "cache-dir", "", "cache to build into (default: banger's, where image builds look; scripts/kernel-build.sh points it at the tests' cache)")
	f.IntVar(&opts.Jobs, "jobs", 0, "parallel make jobs (default: the number of CPUs)")
	addJSONFlag(cmd, g)
	return cmd
}

// buildKernel finds the configuration and the source, and builds (or
// finds in the cache) the kernel.
func buildKernel(ctx context.Context, r system.Runner, opts kernelBuildOptions, progress image.Progress) (image.BuiltKernel, error) {
	cfg, err := image.LoadKernelConfig(opts.Config)
	if err != nil {
		return image.BuiltKernel{}, fmt.Errorf("--config: %w", err)
	}
	var src image.KernelSource
	if opts.Source != "" {
		abs, err := filepath.Abs(opts.Source)
		if err != nil {
			return image.BuiltKernel{}, fmt.Errorf("--source: %w", err)
		}
		src, err = image.DescribeKernelSource(ctx, r, abs)
		if err != nil {
			return image.BuiltKernel{}, fmt.Errorf("--source: %w", err)
		}
	} else if src, err = image.FindKernelSource(ctx, r, kernelSourceDir); err != nil {
		return image.BuiltKernel{}, err
	}
	progress("source", fmt.Sprintf("%s (%s %s), configuration %s", src.Tarball, dash(src.Package), src.Version, cfg.Name))
	return image.KernelBuilder{Runner: r, CacheDir: opts.CacheDir, Jobs: opts.Jobs}.Build(ctx, src, cfg, progress)
}

func renderBuiltKernel(w io.Writer, k image.BuiltKernel) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "vmlinux:\t%s\n", termtext.Line(k.Vmlinux))
	fmt.Fprintf(tw, "release:\t%s\n", termtext.Line(k.Release))
	fmt.Fprintf(tw, "config:\t%s (%s)\n", termtext.Line(k.Config), k.ConfigHash[:min(12, len(k.ConfigHash))])
	fmt.Fprintf(tw, "source:\t%s %s\n", termtext.Line(dash(k.SourcePackage)), termtext.Line(k.SourceVersion))
	built := fmt.Sprintf("%.0f s with -j%d", k.BuildSeconds, k.Jobs)
	if k.Cached {
		built += " (from the cache)"
	}
	fmt.Fprintf(tw, "built:\t%s\n", built)
	return tw.Flush()
}
