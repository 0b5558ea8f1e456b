package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/paths"
)

func newConfigCmd(app *App, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show and change banger's configuration",
		Long: `banger reads config.toml. On a system install root's /etc/banger/config.toml
comes first and the owner's ~/.config/banger/config.toml is laid over it:
the owner changes VM defaults and their own settings there with
` + "`banger config set`" + `, without sudo, and the daemon restarts to apply them
(VMs keep running). Keys that change what the root helper does — the VMM
and its binaries, the network — stay root's (docs/privileges.md).`,
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
		Short: "Print the configuration file (and on a system install, the owner's layer after it)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			layout, err := app.Layout(g.system)
			if err != nil {
				return err
			}
			src := config.SourcesFor(layout)
			fmt.Fprintln(app.Stdout, src.Root)
			if src.Owner != "" {
				fmt.Fprintln(app.Stdout, src.Owner)
			}
			return nil
		},
	}, &cobra.Command{
		Use:   "check",
		Short: "Load and validate the configuration files; say whether the daemon runs with them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			layout, err := app.Layout(g.system)
			if err != nil {
				return err
			}
			src := config.SourcesFor(layout)
			if _, err := config.LoadSources(src); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "%s: ok\n", src.Root)
			if src.Owner != "" {
				fmt.Fprintf(app.Stdout, "%s: ok\n", src.Owner)
			}
			c := api.NewClient(layout.SocketPath())
			defer c.Close()
			info, err := c.DaemonInfo(cmd.Context())
			fmt.Fprintln(app.Stdout, daemonConfigLine(layout, info, err))
			return nil
		},
	},
		newConfigGetCmd(app, g), newConfigShowCmd(app, g),
		newConfigSetCmd(app, g), newConfigUnsetCmd(app, g), newConfigReloadCmd(app, g))
	return cmd
}

// daemonConfigLine says whether the running daemon uses the config file as
// it is now, and how to apply it when not. It never starts a daemon.
func daemonConfigLine(layout paths.Layout, info api.DaemonInfo, infoErr error) string {
	if infoErr != nil {
		return "daemon: not running; it loads this file when it starts"
	}
	return "daemon: " + daemonConfigState(layout, info)
}

// daemonConfigState is the running daemon's config against the file now.
func daemonConfigState(layout paths.Layout, info api.DaemonInfo) string {
	d := checkConfigDrift(layout, info)
	switch {
	case !d.known && info.ConfigFile != "" && info.ConfigFile != layout.ConfigFile():
		return "runs with another file, " + info.ConfigFile
	case !d.known:
		return "cannot tell which configuration it uses (it is older than this CLI)"
	case d.err != nil:
		return "runs with the configuration it started with; the file now has an error (`banger config check`)"
	case !d.changed:
		return "runs with this configuration"
	case layout.Mode == paths.ModeSystem:
		return "runs with an older version of these files; `banger config reload` applies it"
	}
	return "runs with an older version of this file; the next banger command restarts it to apply it"
}
