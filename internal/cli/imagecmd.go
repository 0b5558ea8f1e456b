package cli

import (
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/termtext"
)

func newImageCmd(app *App, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "image",
		Aliases: []string{"images"},
		Short:   "Manage the images VMs boot from",
	}
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List images",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return app.withClient(cmd, g, func(c *api.Client) error {
				imgs, err := c.ImageList(cmd.Context())
				if err != nil {
					return err
				}
				return app.emit(g, api.ImageList{Images: imgs}, func() error {
					if len(imgs) == 0 {
						fmt.Fprintln(app.Stdout, "No images yet.")
						return nil
					}
					tw := tabwriter.NewWriter(app.Stdout, 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "NAME\tSIZE\tSOURCE\tCREATED")
					for _, im := range imgs {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", termtext.Line(im.Name), config.ByteSize(im.SizeBytes), termtext.Line(im.Source), im.CreatedAt.Local().Format("2006-01-02 15:04"))
					}
					return tw.Flush()
				})
			})
		},
	}
	addJSONFlag(list, g)
	cmd.AddCommand(list, newImageImportCmd(app, g), newImageDeleteCmd(app, g), newImageBuildCmd(app, g), newImageShowCmd(app, g), newImageWarmCmd(app, g),
		newImagePullCmd(app, g), newImagePruneCmd(app, g))
	return cmd
}

func newImageImportCmd(app *App, g *globalFlags) *cobra.Command {
	var (
		req       api.ImageImportRequest
		container api.ImagePullRequest
		pf        pullFlags
	)
	cmd := &cobra.Command{
		Use:   "import NAME (--kernel FILE --rootfs FILE [--initrd FILE | --modules DIR] | --oci-layout DIR[:TAG] | --docker-archive FILE)",
		Short: "Register an existing kernel, initrd and ext4 root filesystem as an image",
		Long: `Copy a kernel (ELF vmlinux or bzImage), an optional initrd and an ext4 root
filesystem into banger's image store under NAME. The rootfs should contain
banger-vsock-agent started at boot; VMs clone it, so the original is never
written. A kernel that loads virtio_blk and ext4 as modules (Debian's does)
cannot mount its root disk alone: pass its --initrd, or --modules DIR (its
lib/modules/RELEASE) and banger builds one; modules beside an unpacked
kernel package are found without --modules.

With --oci-layout (an OCI image layout, e.g. from skopeo copy or
buildah push) or --docker-archive (what docker save and podman save
write), the container image becomes an image as with ` + "`banger image pull`" + `.`,
		Example: `  banger image import base --kernel ./vmlinux --rootfs ./rootfs.ext4
  banger image import deb --kernel /boot/vmlinuz-6.1.0-28-amd64 --initrd ./initrd.img --rootfs ./deb.ext4
  banger image import app --oci-layout ./app-oci:1.0
  banger image import app --docker-archive ./app.tar`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			if container.OCILayout != "" || container.DockerArchive != "" {
				if req.Rootfs != "" || req.Initrd != "" || req.Modules != "" {
					return fmt.Errorf("--rootfs, --initrd and --modules do not apply to --oci-layout or --docker-archive: the container image is the root file system")
				}
				container.Name = req.Name
				if req.Kernel != "" {
					abs, err := filepath.Abs(req.Kernel)
					if err != nil {
						return err
					}
					container.Kernel = abs
				}
				return app.importContainer(cmd, g, container, &pf)
			}
			if req.Kernel == "" || req.Rootfs == "" {
				return fmt.Errorf("import needs --kernel FILE and --rootfs FILE, or --oci-layout DIR[:TAG], or --docker-archive FILE")
			}
			for _, p := range []*string{&req.Kernel, &req.Rootfs, &req.Initrd, &req.Modules} {
				if *p != "" {
					abs, err := filepath.Abs(*p)
					if err != nil {
						return err
					}
					*p = abs
				}
			}
			return app.withClient(cmd, g, func(c *api.Client) error {
				im, err := c.ImageImport(cmd.Context(), req, app.progress(g))
				if err != nil {
					return err
				}
				return app.emit(g, im, func() error {
					fmt.Fprintf(app.Stdout, "%s: imported (%s)\n", im.Name, config.ByteSize(im.SizeBytes))
					return nil
				})
			})
		},
	}
	cmd.Flags().StringVar(&req.Kernel, "kernel", "", "kernel image: ELF vmlinux or bzImage (required)")
	cmd.Flags().StringVar(&req.Rootfs, "rootfs", "", "ext4 root filesystem image (required)")
	cmd.Flags().StringVar(&req.Initrd, "initrd", "", "initial ramdisk (optional)")
	cmd.Flags().StringVar(&req.Modules, "modules", "", "the kernel's lib/modules/RELEASE, to build the initrd a modular kernel needs")
	cmd.Flags().StringVar(&container.OCILayout, "oci-layout", "", "an OCI image layout directory, optionally :TAG, to make the image from")
	cmd.Flags().StringVar(&container.DockerArchive, "docker-archive", "", "a docker save / podman save tar to make the image from")
	cmd.Flags().StringVar(&container.Platform, "platform", "", "os/arch to pick from a multi-platform layout (default linux/amd64)")
	cmd.Flags().StringVar(&pf.size, "size", "", "room to add to a container image's root file system, e.g. +1G")
	cmd.Flags().StringVar(&container.BootFrom, "boot-from", "", "with --oci-layout or --docker-archive: boot with this existing image's kernel and initrd")
	cmd.MarkFlagsMutuallyExclusive("oci-layout", "docker-archive")
	addJSONFlag(cmd, g)
	return cmd
}

func newImageDeleteCmd(app *App, g *globalFlags) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "delete NAME...",
		Aliases: []string{"rm"},
		Short:   "Delete images (asks first unless --force; refused while VMs use one)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			names := strings.Join(args, ", ")
			if err := app.confirm(confirmation{
				Given: force, Flag: "--force", Action: "delete image " + names,
				Question: "Delete image " + names + "? VMs can no longer be created from it.", Declined: "not deleted",
			}); err != nil {
				return err
			}
			return app.withClient(cmd, g, func(c *api.Client) error {
				for _, name := range args {
					if err := c.ImageDelete(cmd.Context(), name); err != nil {
						return err
					}
					fmt.Fprintf(app.Stdout, "%s: deleted\n", termtext.Line(name))
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "delete without asking")
	return cmd
}
