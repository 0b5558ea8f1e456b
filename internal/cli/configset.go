package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/system"
)

// This file is `banger config get/show/set/unset/reload`.

func newConfigGetCmd(app *App, g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get KEY",
		Short: "Print one key's value as the daemon would use it (e.g. vm.vcpus)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			cfg, _, err := app.effectiveConfig(g)
			if err != nil {
				return err
			}
			v, err := cfg.Get(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(app.Stdout, v)
			return nil
		},
	}
}

func newConfigShowCmd(app *App, g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "show",
		Short: "Print the configuration in effect (defaults, root's file, the owner's layer), as TOML",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, src, err := app.effectiveConfig(g)
			if err != nil {
				return err
			}
			b, err := toml.Marshal(cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "# the defaults, then %s%s\n", src.Root, present(src.Root))
			if src.Owner != "" {
				fmt.Fprintf(app.Stdout, "# then the owner's layer %s%s\n", src.Owner, present(src.Owner))
			}
			_, err = app.Stdout.Write(b)
			return err
		},
	}
}

func present(path string) string {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return " (absent)"
	}
	return ""
}

func (app *App) effectiveConfig(g *globalFlags) (config.Config, config.Sources, error) {
	layout, err := app.Layout(g.system)
	if err != nil {
		return config.Config{}, config.Sources{}, err
	}
	src := config.SourcesFor(layout)
	cfg, err := config.LoadSources(src)
	return cfg, src, err
}

func newConfigSetCmd(app *App, g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "set KEY VALUE...",
		Short: "Set a key in your configuration file and apply it (list keys take several values)",
		Long: `set writes KEY into your configuration file, keeping the rest of the file as
it is, and applies it: on a system install it writes the owner's layer
(~/.config/banger/config.toml, no sudo) and restarts the daemon through
systemd; in user mode the daemon restarts now. Running VMs keep running.

  banger config set vm.vcpus 4
  banger config set vm.disk_size 8G
  banger config set sync.paths ~/.gitconfig ~/.config/gh/`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			value, err := config.ParseValue(args[0], args[1:])
			if err != nil {
				return err
			}
			return app.editConfig(cmd.Context(), g, args[0], func(data []byte) ([]byte, error) {
				return config.SetKey(data, args[0], value)
			})
		},
	}
}

func newConfigUnsetCmd(app *App, g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "unset KEY",
		Short: "Remove a key from your configuration file (the default, or root's value, applies again)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return app.editConfig(cmd.Context(), g, args[0], func(data []byte) ([]byte, error) {
				return config.UnsetKey(data, args[0])
			})
		},
	}
}

func newConfigReloadCmd(app *App, g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "reload",
		Short: "Make the daemon apply the configuration files as they are now (VMs keep running)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			layout, err := app.Layout(g.system)
			if err != nil {
				return err
			}
			if _, err := config.LoadSources(config.SourcesFor(layout)); err != nil {
				return err
			}
			return app.applyConfig(cmd.Context(), g, layout)
		},
	}
}

// editTarget is the file `config set` writes for this caller, and the base
// configuration it is laid over (defaults in user mode, root's file in
// system mode).
type editTarget struct {
	file   string
	owner  bool
	base   config.Config
	layout paths.Layout
}

// configTarget picks the file the caller may edit: in user mode their
// config file; in system mode the owner's layer, and only for the owner —
// root's file is edited as root, by hand, because its keys reach the
// root helper.
func (app *App) configTarget(g *globalFlags) (editTarget, error) {
	layout, err := app.Layout(g.system)
	if err != nil {
		return editTarget{}, err
	}
	if layout.Mode != paths.ModeSystem {
		return editTarget{file: layout.ConfigFile(), base: config.Default(), layout: layout}, nil
	}
	meta, err := installmeta.Read(layout.InstallMetaPath())
	if err != nil {
		return editTarget{}, err
	}
	if os.Getuid() != meta.OwnerUID {
		return editTarget{}, fmt.Errorf("on this system install only its owner, %s, changes settings with `banger config set` (in ~%s/.config/banger/config.toml); root's are in %s, edited with sudo",
			meta.OwnerUser, meta.OwnerUser, layout.ConfigFile())
	}
	src := config.SourcesFor(layout)
	base, err := config.Load(src.Root)
	if err != nil {
		return editTarget{}, err
	}
	return editTarget{file: src.Owner, owner: true, base: base, layout: layout}, nil
}

// editConfig applies edit to the caller's config file, refuses a result
// that does not load (nothing is written then), writes it and applies it.
func (app *App) editConfig(ctx context.Context, g *globalFlags, key string, edit func([]byte) ([]byte, error)) error {
	t, err := app.configTarget(g)
	if err != nil {
		return err
	}
	if t.owner && !config.OwnerMaySet(key) {
		return fmt.Errorf("%w; then `sudo systemctl restart banger-root-helper bangerd` applies it", config.RootOnlyError(key))
	}
	data, err := os.ReadFile(t.file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", t.file, err)
	}
	out, err := edit(data)
	if errors.Is(err, config.ErrCannotEdit) {
		return fmt.Errorf("cannot change %q in %s without rewriting other lines (it uses a multi-line value, dotted keys or an inline table); edit the file by hand", key, t.file)
	}
	if err != nil {
		return err
	}
	if err := checkEdited(t, out); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(t.file), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(t.file), err)
	}
	if err := system.WriteFileAtomic(t.file, out, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", t.file, err)
	}
	fmt.Fprintf(app.Stdout, "%s: written\n", t.file)
	return app.applyConfig(ctx, g, t.layout)
}

// checkEdited loads the edited file as the daemon will.
func checkEdited(t editTarget, data []byte) error {
	if t.owner {
		if _, err := config.ApplyOwnerLayer(t.base, t.file, data); err != nil {
			return fmt.Errorf("%w; nothing was written", err)
		}
		return nil
	}
	cfg := t.base
	if err := config.Parse(data, &cfg); err != nil {
		return fmt.Errorf("config %s: %w; nothing was written", t.file, err)
	}
	return nil
}

// applyConfig makes a running daemon use the files as they are now. The
// system daemon restarts through systemd (daemon.reload); a user-mode one
// is replaced by the CLI, as any command does after an edit. No daemon:
// the next one loads the files.
func (app *App) applyConfig(ctx context.Context, g *globalFlags, layout paths.Layout) error {
	c := api.NewClient(layout.SocketPath())
	defer c.Close()
	info, err := c.DaemonInfo(ctx)
	if errors.Is(err, api.ErrDaemonUnreachable) {
		fmt.Fprintln(app.Stdout, "daemon: not running; it loads this configuration when it starts")
		return nil
	}
	if err != nil {
		return err
	}
	if layout.Mode != paths.ModeSystem {
		c2, _, err := app.connect(ctx, g)
		if err != nil {
			return err
		}
		c2.Close()
		fmt.Fprintln(app.Stdout, "daemon: "+daemonConfigAfter(layout, c))
		return nil
	}
	resp, err := c.DaemonReload(ctx)
	if err != nil {
		return err
	}
	if !resp.Restarting {
		fmt.Fprintln(app.Stdout, "daemon: already runs with this configuration")
		return nil
	}
	fmt.Fprintf(app.Stdout, "daemon: restarting (pid %d) to apply it; VMs keep running\n", info.PID)
	now, err := waitRestarted(ctx, c, info.PID, resp.Fingerprint, 60*time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(app.Stdout, "daemon: runs with the new configuration (pid %d)\n", now.PID)
	return nil
}

// daemonConfigAfter is the user-mode daemon's state once connect ran.
func daemonConfigAfter(layout paths.Layout, c *api.Client) string {
	info, err := c.DaemonInfo(context.Background())
	if err != nil {
		return "not running; it loads this configuration when it starts"
	}
	return daemonConfigState(layout, info)
}

// waitRestarted waits for the daemon that replaces oldPID to answer with
// the configuration whose fingerprint is want.
func waitRestarted(ctx context.Context, c *api.Client, oldPID int, want string, limit time.Duration) (api.DaemonInfo, error) {
	deadline := time.Now().Add(limit)
	for {
		info, err := c.DaemonInfo(ctx)
		if err == nil && info.PID != oldPID {
			if info.ConfigFingerprint != want {
				return info, fmt.Errorf("the restarted daemon (pid %d) does not run with the new configuration: %s", info.PID, orNone(info.ConfigWarning))
			}
			return info, nil
		}
		if time.Now().After(deadline) {
			return info, fmt.Errorf("the daemon did not come back within %s; `systemctl status bangerd` and `journalctl -u bangerd` say why", limit)
		}
		select {
		case <-ctx.Done():
			return info, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "it does not say why"
	}
	return s
}
