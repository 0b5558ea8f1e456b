package cli

import (
	"fmt"
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
			c, _, err := app.connect(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer c.Close()
			imgs, err := c.ImageList(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(app.Stdout, api.ImageList{Images: imgs})
			}
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
		},
	}
	addJSONFlag(list, g)
	cmd.AddCommand(list)
	return cmd
}
