package cli

import (
	"fmt"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
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
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", im.Name, config.ByteSize(im.SizeBytes), im.Source, im.CreatedAt.Local().Format("2006-01-02 15:04"))
					}
					return tw.Flush()
				})
			})
		},
	}
	addJSONFlag(list, g)
	cmd.AddCommand(list, newImageImportCmd(app, g), newImageDeleteCmd(app, g), newImageBuildCmd(app, g), newImageShowCmd(app, g))
	return cmd
}

func newImageImportCmd(app *App, g *globalFlags) *cobra.Command {
	var req api.ImageImportRequest
	cmd := &cobra.Command{
		Use:   "import NAME --kernel FILE --rootfs FILE [--initrd FILE]",
		Short: "Register an existing kernel, initrd and ext4 root filesystem as an image",
		Long: `Copy a kernel (ELF vmlinux or bzImage), an optional initrd and an ext4 root
filesystem into banger's image store under NAME. The rootfs should contain
banger-vsock-agent started at boot; VMs clone it, so the original is never
written.`,
		Example: `  banger image import base --kernel ./vmlinux --rootfs ./rootfs.ext4
  banger image import deb --kernel /boot/vmlinuz-6.1.0-28-amd64 --initrd ./initrd.img --rootfs ./deb.ext4`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			for _, p := range []*string{&req.Kernel, &req.Rootfs, &req.Initrd} {
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
	_ = cmd.MarkFlagRequired("kernel")
	_ = cmd.MarkFlagRequired("rootfs")
	addJSONFlag(cmd, g)
	return cmd
}

func newImageDeleteCmd(app *App, g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete an image (refused while VMs use it)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return app.withClient(cmd, g, func(c *api.Client) error {
				if err := c.ImageDelete(cmd.Context(), args[0]); err != nil {
					return err
				}
				fmt.Fprintf(app.Stdout, "%s: deleted\n", args[0])
				return nil
			})
		},
	}
}
