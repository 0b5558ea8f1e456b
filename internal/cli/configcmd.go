package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/config"
)

func newConfigCmd(app *App, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show banger's configuration",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "defaults",
		Short: "Print every configuration key with its default value, as TOML",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			b, err := config.DefaultTOML()
			if err != nil {
				return err
			}
			_, err = app.Stdout.Write(b)
			return err
		},
	}, &cobra.Command{
		Use:   "path",
		Short: "Print the path of the configuration file",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			layout, err := app.Layout(g.system)
			if err != nil {
				return err
			}
			fmt.Fprintln(app.Stdout, layout.ConfigFile())
			return nil
		},
	}, &cobra.Command{
		Use:   "check",
		Short: "Load and validate the configuration file",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			layout, err := app.Layout(g.system)
			if err != nil {
				return err
			}
			if _, err := config.Load(layout.ConfigFile()); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "%s: ok\n", layout.ConfigFile())
			return nil
		},
	})
	return cmd
}
