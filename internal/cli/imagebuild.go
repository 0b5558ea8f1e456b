package cli

import (
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/image"
	"github.com/banger-dev/banger/internal/termtext"
)

func newImageBuildCmd(app *App, g *globalFlags) *cobra.Command {
	var (
		req  api.ImageBuildRequest
		size string
	)
	cmd := &cobra.Command{
		Use:   "build NAME",
		Short: "Build an image from Debian with debootstrap, or a small busybox one",
		Long: `Build an image: a Debian root file system made with debootstrap from the
configured mirror, with the banger guest agent, sshd, a default user named
after you (passwordless sudo) and your --script hooks run inside it; a kernel
as an ELF vmlinux; and an initrd when the kernel's drivers are modules.
Building needs a daemon running as root.

The kernel is the microVM kernel once banger kernel build has made one (all
drivers built in, no initrd, the fastest boot), else Debian's
linux-image-amd64 with banger's initrd; --kernel microvm or --kernel debian
asks for one of them, --kernel FILE uses your own.

--from busybox builds a small image instead (10-30 s measured on a 2-core
machine; no root needed): a
static busybox, the guest agent and an init that runs it, with the kernel
chosen as above. It has no sshd: use banger vm exec and vm cp.`,
		Example: `  banger image build dev
  banger image build tiny --from busybox
  banger image build tiny-debian-kernel --from busybox --kernel debian
  banger image build tools --packages git,make,gcc --size 4G
  banger image build custom --script ./setup.sh --from debian:trixie`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			if size != "" {
				s, err := config.ParseSize(size)
				if err != nil {
					return fmt.Errorf("--size: %w", err)
				}
				req.SizeBytes = int64(s)
			}
			// The daemon reads the files, possibly from another working
			// directory: send absolute paths.
			for i, s := range req.Scripts {
				abs, err := filepath.Abs(s)
				if err != nil {
					return fmt.Errorf("--script %s: %w", s, err)
				}
				req.Scripts[i] = abs
			}
			if req.Kernel != "" && req.Kernel != image.KernelChoiceMicroVM && req.Kernel != image.KernelChoiceDebian {
				abs, err := filepath.Abs(req.Kernel)
				if err != nil {
					return fmt.Errorf("--kernel: %w", err)
				}
				req.Kernel = abs
			}
			return app.withClient(cmd, g, func(c *api.Client) error {
				start := time.Now()
				im, err := c.ImageBuild(cmd.Context(), req, app.progress(g))
				if err != nil {
					return err
				}
				if !g.json {
					fmt.Fprintf(app.Stderr, "built image %s in %s\n", im.Name, time.Since(start).Round(time.Second))
				}
				return app.printImage(g, im)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.From, "from", "", "base system: debian, debian:SUITE or busybox (default: debian, the configured suite)")
	f.StringSliceVar(&req.Packages, "packages", nil, "extra Debian packages, comma-separated")
	f.StringVar(&size, "size", "", "root file system size, e.g. 4G (default 2G; sparse)")
	f.StringArrayVar(&req.Scripts, "script", nil, "script to run inside the image after setup (repeatable)")
	f.StringVar(&req.Kernel, "kernel", "", "microvm (the kernel banger kernel build made; no initrd), debian (linux-image-amd64 with an initrd) or a kernel file (vmlinux or bzImage) (default: microvm once built, else debian)")
	f.StringVar(&req.User, "user", "", "default user's name (default: yours)")
	f.StringVar(&req.Timezone, "timezone", "", "time zone, e.g. Europe/Berlin (default Etc/UTC)")
	addJSONFlag(cmd, g)
	return cmd
}

func newImageShowCmd(app *App, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show one image in detail",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return app.withClient(cmd, g, func(c *api.Client) error {
				im, err := c.ImageShow(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				return app.printImage(g, im)
			})
		},
	}
	addJSONFlag(cmd, g)
	return cmd
}

func (app *App) printImage(g *globalFlags, im api.Image) error {
	return app.emit(g, im, func() error { return renderImage(app.Stdout, im) })
}

func renderImage(w io.Writer, im api.Image) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, termtext.Line(v))
		}
	}
	row("name", im.Name)
	row("id", im.ID)
	row("source", im.Source)
	row("size", config.ByteSize(im.SizeBytes).String())
	row("kernel", im.Kernel)
	row("initrd", im.Initrd)
	row("rootfs", im.Rootfs)
	renderOrigin(row, im.Origin)
	row("created", im.CreatedAt.Local().Format(time.DateTime))
	return tw.Flush()
}
