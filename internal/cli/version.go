package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newVersionCmd(app *App) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the full version, commit and build time",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if asJSON {
				return writeJSON(app.Stdout, app.Build)
			}
			fmt.Fprintf(app.Stdout, "Version:  %s\nCommit:   %s\nBuilt at: %s\n", app.Build.Version, app.Build.Commit, app.Build.BuiltAt)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print machine-readable JSON")
	return cmd
}
