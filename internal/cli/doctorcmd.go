package cli

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/doctor"
	"github.com/banger-dev/banger/internal/install"
	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/firewall"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/privileged"
)

func newDoctorCmd(app *App, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check the installation, the state database, the daemon and the host",
		Long: `doctor runs every health check and prints PASS, WARN or FAIL for each, with
details saying what to do. It exits non-zero when any check fails. It never
starts the daemon or changes anything.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			layout, err := app.Layout(g.system)
			if err != nil {
				return err
			}
			c := api.NewClient(layout.SocketPath())
			defer c.Close()
			daemonInfo := func(ctx context.Context) (buildinfo.Info, int, error) {
				ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				info, err := c.DaemonInfo(ctx)
				if errors.Is(err, api.ErrDaemonUnreachable) {
					err = errors.New("nothing answers on the socket")
				}
				return info.Build, info.PID, err
			}
			cfg, err := config.Load(layout.ConfigFile())
			if err != nil {
				return err
			}
			h := doctor.RealHost()
			helperInfo := func(ctx context.Context) (privileged.HelperInfo, error) {
				ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
				return privileged.NewClient(layout.HelperSocketPath()).Info(ctx)
			}
			report := doctor.Run(cmd.Context(), []doctor.Check{
				doctor.VersionCheck(app.Build, layout.InstallMetaPath()),
				doctor.SchemaCheck(layout.DBPath()),
				doctor.DaemonCheck(app.Build, layout.SocketPath(), layout.Mode == paths.ModeSystem, daemonInfo),
				doctor.KVMCheck(h),
				doctor.TunCheck(h, layout.InstallMetaPath(), os.Getuid()),
				doctor.VMMCheck(h, cfg.Firecracker.Binary, cfg.QEMU.Binary),
				doctor.HelperCheck(layout.InstallMetaPath(), os.Getuid(), helperInfo),
				doctor.JailerCheck(h, cfg.Firecracker.Jailer, installedHelperInfo(layout, helperInfo)),
				doctor.UnitsCheck(h, layout.InstallMetaPath(), []string{install.HelperUnit, install.DaemonUnit}),
				doctor.NetworkCheck(h, cfg.Network.Bridge, doctor.NetworkProbe{Name: "NAT", Present: func(ctx context.Context) (bool, error) {
					return firewall.Present(ctx, cfg.Network.Bridge)
				}}),
				doctor.NameResolutionCheck(h, nameSettings(cfg)),
				doctor.VMNetworkCheck(doctor.RealVMNetwork(cfg.Network.Enabled != "off", cfg.Network.Bridge, cfg.Network.Subnet, layout.StateDir, doctor.DaemonRunningVMs(c))),
				doctor.DiskSpaceCheck(h, layout.StateDir),
			})
			if err := app.emit(g, report, func() error { return report.Render(app.Stdout) }); err != nil {
				return err
			}
			if report.Failed() {
				return exitError{code: 1}
			}
			return nil
		},
	}
	addJSONFlag(cmd, g)
	return cmd
}

// installedHelperInfo is helperInfo on a system install and nil in user
// mode, where a root daemon launches the jailer itself.
func installedHelperInfo(layout paths.Layout, info doctor.HelperInfoFunc) doctor.HelperInfoFunc {
	if _, err := installmeta.Read(layout.InstallMetaPath()); err != nil {
		return nil
	}
	return info
}

// nameSettings is what the name-resolution check needs from the config
// (validated, so the subnet parses).
func nameSettings(cfg config.Config) doctor.NameSettings {
	s := doctor.NameSettings{Enabled: cfg.Network.Enabled != "off", Domain: cfg.Network.Domain, Bridge: cfg.Network.Bridge}
	if subnet, err := netip.ParsePrefix(cfg.Network.Subnet); err == nil {
		s.Gateway = network.Gateway(subnet)
	}
	return s
}
