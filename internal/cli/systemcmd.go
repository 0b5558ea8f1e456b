package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/banger-dev/banger/internal/api"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/install"
	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/privileged"
	"github.com/banger-dev/banger/internal/system"
)

// systemHost is what the system commands need from the machine beyond App;
// tests replace it.
type systemHost struct {
	euid       func() int
	executable func() (string, error)
	getenv     func(string) string
	// systemdRunning reports whether systemd is PID 1 here.
	systemdRunning func() bool
	runner         system.Runner
	lookupOwner    func(name string) (install.Owner, error)
	// teardownNetwork removes the bridge and NAT during uninstall.
	teardownNetwork func(ctx context.Context, layout paths.Layout) error
	// linkExists reports whether a network interface of that name exists.
	linkExists func(name string) bool
}

func defaultSystemHost() systemHost {
	return systemHost{
		euid:       os.Geteuid,
		executable: os.Executable,
		getenv:     os.Getenv,
		systemdRunning: func() bool {
			fi, err := os.Stat("/run/systemd/system")
			return err == nil && fi.IsDir()
		},
		runner:          system.ExecRunner{},
		lookupOwner:     install.LookupOwner,
		teardownNetwork: teardownNetwork,
		linkExists: func(name string) bool {
			_, err := os.Stat(filepath.Join("/sys/class/net", name))
			return err == nil
		},
	}
}

func newSystemCmd(app *App, g *globalFlags) *cobra.Command {
	return newSystemCmdWith(app, g, defaultSystemHost())
}

func newSystemCmdWith(app *App, g *globalFlags, h systemHost) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "system",
		Short: "Install, inspect, restart or remove the system-wide installation",
		Long: `System mode is how banger runs day to day: bangerd runs as your user under
systemd (bangerd.service) and a small root helper (banger-root-helper.service)
performs the few privileged steps for your uid only, so vm and image commands
never need sudo. See docs/privileges.md for the trust model.

  sudo banger system install --owner $USER   install or upgrade from this build
  banger system status                       units, helper, versions, owner
  sudo banger system restart                 restart both units
  sudo banger system uninstall [--purge]     remove (--purge also deletes VMs and images)`,
	}
	cmd.AddCommand(newSystemInstallCmd(app, g, h), newSystemStatusCmd(app, g, h),
		newSystemRestartCmd(app, h), newSystemUninstallCmd(app, g, h))
	return cmd
}

// addRootFlag adds the hidden --root used by tests to work on a scratch tree.
func addRootFlag(cmd *cobra.Command, root *string) {
	cmd.Flags().StringVar(root, "root", "", "operate on this directory as the system root (tests)")
	_ = cmd.Flags().MarkHidden("root")
}

func realRoot(root string) bool { return root == "" || root == "/" }

func requireRoot(h systemHost, what string) error {
	if h.euid() != 0 {
		return fmt.Errorf("banger system %s changes system files and must run as root: sudo banger system %s", what, what)
	}
	return nil
}

// systemctlFor returns the runner for systemctl, or nil for a scratch root.
func systemctlFor(h systemHost, root string) (system.Runner, error) {
	if !realRoot(root) {
		return nil, nil
	}
	if !h.systemdRunning() {
		return nil, errors.New("systemd is not running on this host, and system mode runs banger under systemd; use user mode (any banger command starts the daemon on demand)")
	}
	return h.runner, nil
}

func newSystemInstallCmd(app *App, g *globalFlags, h systemHost) *cobra.Command {
	var owner, root string
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install or upgrade system mode from this build (as root)",
		Long: `install puts banger, bangerd and banger-vsock-agent at /usr/local, writes
/etc/banger/install.toml, creates /var/lib/banger (owned by the owner) and
/run/banger, writes and starts bangerd.service and banger-root-helper.service,
and the sysctl, modules-load and tmpfiles drop-ins. Running it again is safe:
it changes only what differs. If any step fails, everything it did is undone.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireRoot(h, "install"); err != nil {
				return err
			}
			if owner == "" {
				owner = h.getenv("SUDO_USER")
			}
			if owner == "" || owner == "root" {
				return errors.New("say who banger is for: sudo banger system install --owner YOUR_USER")
			}
			o, err := h.lookupOwner(owner)
			if err != nil {
				return err
			}
			src, err := sourceDir(h, root)
			if err != nil {
				return err
			}
			sc, err := systemctlFor(h, root)
			if err != nil {
				return err
			}
			res, err := install.Install(cmd.Context(), install.Options{
				Root: root, Owner: o, SourceDir: src, Build: app.Build, Systemctl: sc,
			})
			if err != nil {
				return err
			}
			return app.emit(g, res, func() error {
				printResult(app, res)
				if len(res.Changed) == 0 {
					fmt.Fprintf(app.Stdout, "banger is already installed for %s; nothing changed\n", o.User)
				} else {
					fmt.Fprintf(app.Stdout, "banger is installed for %s (uid %d); check it with `banger doctor`\n", o.User, o.UID)
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&owner, "owner", "", "the user banger is for (default: $SUDO_USER)")
	addRootFlag(cmd, &root)
	addJSONFlag(cmd, g)
	return cmd
}

// sourceDir is the directory holding this build's three binaries, or ""
// when this CLI is already the installed one (reinstall without upgrade).
func sourceDir(h systemHost, root string) (string, error) {
	exe, err := h.executable()
	if err != nil {
		return "", fmt.Errorf("find this program: %w", err)
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	dir := filepath.Dir(exe)
	installed := filepath.Dir(install.BangerPath)
	if !realRoot(root) {
		installed = filepath.Join(root, installed)
	}
	if dir == installed {
		return "", nil
	}
	return dir, nil
}

func printResult(app *App, res install.Result) {
	for _, c := range res.Changed {
		fmt.Fprintln(app.Stdout, c)
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(app.Stderr, "warning: %s\n", w)
	}
}

func newSystemStatusCmd(app *App, g *globalFlags, h systemHost) *cobra.Command {
	var root string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the installation: units, root helper, binaries, owner",
		Long: `status inspects the system installation without changing it. It exits 1
when it finds a problem, and prints what to do about each.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts := install.StatusOptions{Root: root}
			if realRoot(root) && h.systemdRunning() {
				opts.Runner = h.runner
			}
			layout := paths.System(root)
			opts.HelperInfo = func(ctx context.Context) (privileged.HelperInfo, error) {
				ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
				return privileged.NewClient(layout.HelperSocketPath()).Info(ctx)
			}
			st, err := install.ReadStatus(cmd.Context(), opts)
			if err != nil {
				return err
			}
			if err := app.emit(g, st, func() error { return st.Render(app.Stdout) }); err != nil {
				return err
			}
			if len(st.Problems) > 0 {
				return exitError{code: 1}
			}
			return nil
		},
	}
	addRootFlag(cmd, &root)
	addJSONFlag(cmd, g)
	return cmd
}

func newSystemRestartCmd(app *App, h systemHost) *cobra.Command {
	return &cobra.Command{
		Use:   "restart",
		Short: "Restart the root helper and the daemon (as root)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireRoot(h, "restart"); err != nil {
				return err
			}
			sc, err := systemctlFor(h, "")
			if err != nil {
				return err
			}
			if err := install.Restart(cmd.Context(), sc); err != nil {
				return err
			}
			fmt.Fprintf(app.Stdout, "restarted %s and %s\n", install.HelperUnit, install.DaemonUnit)
			return nil
		},
	}
}

func newSystemUninstallCmd(app *App, g *globalFlags, h systemHost) *cobra.Command {
	var (
		root       string
		purge, yes bool
	)
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove system mode (as root); --purge also deletes VMs, images and config",
		Long: `uninstall stops and removes both units, the drop-ins, the binaries, the
install metadata, the runtime dir with the helper socket, and banger's bridge
and NAT. VMs, images and the database in /var/lib/banger and your
/etc/banger/config.toml are kept, so a later install picks them up, unless
--purge is given.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireRoot(h, "uninstall"); err != nil {
				return err
			}
			layout := paths.System(root)
			if purge && !yes {
				if !app.IsTerminal() {
					return fmt.Errorf("refusing to purge %s without confirmation: stdin is not a terminal; pass --yes", layout.StateDir)
				}
				fmt.Fprintf(app.Stderr, "Delete every VM, image and the database in %s, and %s? This cannot be undone. [y/N] ", layout.StateDir, layout.ConfigDir)
				answer, _ := bufio.NewReader(app.Stdin).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
					fmt.Fprintln(app.Stderr, "nothing removed")
					return exitError{code: 1}
				}
			}
			opts := install.UninstallOptions{Root: root, Purge: purge}
			// VMMs outlive the daemon (KillMode=process), so stop the VMs
			// through the daemon while it still runs.
			stopAllVMs(cmd.Context(), app, layout)
			if realRoot(root) {
				// A host without systemd may still hold files from an
				// install; remove them anyway.
				if h.systemdRunning() {
					opts.Systemctl = h.runner
				}
				opts.TeardownNetwork = func(ctx context.Context) error { return h.teardownNetwork(ctx, layout) }
			}
			res, err := install.Uninstall(cmd.Context(), opts)
			if jerr := app.emit(g, res, func() error { printResult(app, res); return nil }); jerr != nil {
				return jerr
			}
			if err != nil {
				return err
			}
			if !g.json {
				fmt.Fprintln(app.Stdout, "banger system mode is uninstalled")
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&purge, "purge", false, "also delete VMs, images, the database, the cache and /etc/banger")
	cmd.Flags().BoolVar(&yes, "yes", false, "do not ask before --purge")
	addRootFlag(cmd, &root)
	addJSONFlag(cmd, g)
	return cmd
}

// teardownNetwork undoes what the daemon set up on the host network, in
// the order docs/networking.md gives: resolver settings, banger's nftables
// tables, leftover taps, the bridge. It runs in-process (uninstall runs as
// root, and the helper is already stopped); ip_forward is left alone.
func teardownNetwork(ctx context.Context, layout paths.Layout) error {
	cfg, err := config.Load(layout.ConfigFile())
	if err != nil {
		return err
	}
	subnet, err := netip.ParsePrefix(cfg.Network.Subnet)
	if err != nil {
		return fmt.Errorf("network.subnet %q: %w", cfg.Network.Subnet, err)
	}
	ops, err := privileged.NewLocal(privileged.Policy{
		StateDir: layout.StateDir, RuntimeDir: layout.RuntimeDir,
	}, privileged.HostBackend())
	if err != nil {
		return err
	}
	bridge := cfg.Network.Bridge
	var errs []error
	if err := privileged.Do(ctx, ops, privileged.OpRevertResolver, privileged.LinkRef{Link: bridge}); err != nil && !errors.Is(err, privileged.ErrNotAvailable) {
		errs = append(errs, err)
	}
	errs = append(errs, privileged.Do(ctx, ops, privileged.OpRemoveNAT, privileged.NATSpec{Subnet: subnet, Bridge: bridge}))
	// Only this install's taps: another banger on the host may be using its own.
	taps, err := network.ListTapInfo(ctx)
	errs = append(errs, err)
	for _, tap := range taps {
		if tap.BelongsTo(bridge, layout.StateDir) {
			errs = append(errs, privileged.Do(ctx, ops, privileged.OpDeleteTap, privileged.Named{Name: tap.Name}))
		}
	}
	errs = append(errs, privileged.Do(ctx, ops, privileged.OpDeleteBridge, privileged.Named{Name: bridge}))
	return errors.Join(errs...)
}

// stopAllVMs asks a running daemon to stop every running VM; best effort,
// since uninstall must proceed even when the daemon is already gone.
func stopAllVMs(ctx context.Context, app *App, layout paths.Layout) {
	c := api.NewClient(layout.SocketPath())
	defer c.Close()
	vms, err := c.VMList(ctx)
	if err != nil {
		return
	}
	for _, vm := range vms {
		// A paused VM has a VMM too.
		if vm.State != api.VMRunning && vm.State != api.VMStarting && vm.State != api.VMPaused {
			continue
		}
		fmt.Fprintf(app.Stderr, "stopping vm %s\n", vm.Name)
		if _, err := c.VMStop(ctx, api.VMStopRequest{Name: vm.Name}, nil); err != nil {
			fmt.Fprintf(app.Stderr, "banger: stop vm %s: %v\n", vm.Name, err)
		}
	}
}
