package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/store"
)

// Main is bangerd's command line. It returns the exit code instead of
// exiting, so tests run it in-process and check the code. tweaks adjust the
// daemon's Options before it runs (a test main's crash points).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, tweaks ...func(*Options)) int {
	var (
		system          bool
		checkMigrations bool
		rootHelper      bool
		configPath      string
		code            int
	)
	build := buildinfo.Current()
	cmd := &cobra.Command{
		Use:   "bangerd",
		Short: "The banger daemon: VM and image lifecycle, state, VMM supervision",
		Long: `bangerd owns banger's state database and VMM processes and serves the API the
banger CLI uses. In user mode the CLI starts it on demand; in system mode
systemd runs it as bangerd.service.`,
		Version:       build.Version,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if rootHelper {
				// The helper only exists in system mode; the flag implies it.
				log := slog.New(slog.NewTextHandler(stderr, nil))
				return RootHelperMain(cmd.Context(), paths.System(os.Getenv("BANGER_SYSTEM_ROOT")), log)
			}
			layout, err := paths.Detect(system)
			if err != nil {
				return err
			}
			if checkMigrations {
				st, err := store.InspectSchemaState(layout.DBPath())
				if err != nil {
					code = 2
					return err
				}
				fmt.Fprintln(stdout, st.Line())
				code = st.ExitCode()
				return nil
			}
			opts := Options{Layout: layout, Build: build}
			if err := loadDaemonConfig(layout, configPath, &opts); err != nil {
				return err
			}
			opts.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: logLevel(opts.Config.Daemon.LogLevel)}))
			if opts.ConfigWarning != "" {
				opts.Log.Warn(opts.ConfigWarning)
			}
			ready, restartRequested := supervised(cmd.Context(), os.Getenv("NOTIFY_SOCKET"), &opts, opts.Log)
			for _, tweak := range tweaks {
				tweak(&opts)
			}
			if err := Run(cmd.Context(), opts, ready); err != nil {
				return err
			}
			if restartRequested() {
				code = ExitRestart
			}
			return nil
		},
	}
	cmd.SetVersionTemplate(build.Line("bangerd") + "\n")
	cmd.Flags().BoolVar(&system, "system", false, "use the system-wide layout (/etc/banger, /var/lib/banger, /run/banger)")
	cmd.Flags().BoolVar(&checkMigrations, "check-migrations", false,
		"classify the state database without changing it and exit: 0 compatible, 1 migrations needed, 2 incompatible")
	cmd.Flags().BoolVar(&rootHelper, "root-helper", false,
		"serve privileged operations for the install owner (run as root by banger-root-helper.service)")
	cmd.Flags().StringVar(&configPath, "config", "", "configuration file (default: config.toml in the config dir)")
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(stderr, "bangerd: %s\n", err)
		if errors.Is(err, ErrAlreadyRunning) {
			return 1
		}
		if code == 0 {
			code = 1
		}
	}
	return code
}

func logLevel(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return slog.LevelInfo
	}
	return l
}
