package cli

import (
	"context"
	"debug/buildinfo"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/install"
	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/paths"
)

// bangerModule is the Go module banger's binaries are built from; a binary
// at an install path is banger's only if its build info names it.
const bangerModule = "github.com/banger-dev/banger"

func newUninstallCmd(app *App, g *globalFlags) *cobra.Command {
	return newUninstallCmdWith(app, g, defaultSystemHost())
}

func newUninstallCmdWith(app *App, g *globalFlags, h systemHost) *cobra.Command {
	var yes, dryRun bool
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove a user-mode banger (what `make demo` set up): VMs, images, network, state, binaries",
		Long: `uninstall undoes a user-mode setup such as ` + "`sudo make demo`" + `: it deletes every
VM (stopping it) and every image through the daemon, stops the daemon,
removes banger's bridge, NAT and resolver settings (those named in its config,
when VM networking is on and this runs as root), its state, runtime and
config directories (database, disks, logs, SSH key, known_hosts), and the
binaries at /usr/local/bin/banger, /usr/local/bin/bangerd and
/usr/local/lib/banger/banger-vsock-agent if they are banger's. It touches
nothing else, and lists everything before asking; --dry-run only lists.
A system-mode install is removed with ` + "`sudo banger system uninstall --purge`" + ` instead.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.system {
				return errors.New("uninstall removes a user-mode setup; for system mode run `sudo banger system uninstall --purge`")
			}
			layout, err := app.Layout(false)
			if err != nil {
				return err
			}
			if _, err := installmeta.Read(layout.InstallMetaPath()); err == nil {
				return fmt.Errorf("banger is installed in system mode here (%s); remove it with `sudo banger system uninstall --purge`, then run this again for what remains", layout.InstallMetaPath())
			}
			return app.runUninstall(cmd.Context(), h, layout, yes, dryRun)
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "do not ask before removing")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be removed and remove nothing")
	return cmd
}

// uninstallPlan is everything uninstall removes, and what it leaves alone.
type uninstallPlan struct {
	VMs, Images []string
	// Bridge is banger's bridge to remove with its NAT ("" to leave the
	// network alone), and NetworkNote why it is left.
	Bridge, NetworkNote string
	Dirs                []string
	Binaries            []string
	// Kept are install paths holding something that is not banger's.
	Kept []string
}

func (p uninstallPlan) empty() bool {
	return len(p.VMs)+len(p.Images)+len(p.Dirs)+len(p.Binaries) == 0 && p.Bridge == ""
}

func (p uninstallPlan) print(w func(format string, a ...any)) {
	for _, vm := range p.VMs {
		w("  vm %s, with its disk\n", vm)
	}
	for _, im := range p.Images {
		w("  image %s\n", im)
	}
	if p.Bridge != "" {
		w("  bridge %s with banger's NAT, taps and resolver settings\n", p.Bridge)
	}
	for _, d := range p.Dirs {
		w("  %s\n", d)
	}
	for _, b := range p.Binaries {
		w("  %s\n", b)
	}
}

func (app *App) runUninstall(ctx context.Context, h systemHost, layout paths.Layout, yes, dryRun bool) error {
	var (
		c    *api.Client
		info api.DaemonInfo
	)
	// The daemon deletes VMs and images properly (VMM processes, taps,
	// leases, disks); it is started if there is state for it to manage.
	if exists(layout.StateDir) {
		var err error
		if c, _, err = app.connect(ctx, &globalFlags{}); err != nil {
			return fmt.Errorf("%w; nothing was removed", err)
		}
		defer c.Close()
		if info, err = c.DaemonInfo(ctx); err != nil {
			return fmt.Errorf("%w; nothing was removed", err)
		}
	}
	plan, err := planUninstall(ctx, c, h, layout)
	if err != nil {
		return fmt.Errorf("%w; nothing was removed", err)
	}
	out := func(format string, a ...any) { fmt.Fprintf(app.Stdout, format, a...) }
	for _, k := range plan.Kept {
		fmt.Fprintf(app.Stderr, "banger: keeping %s\n", k)
	}
	if plan.NetworkNote != "" {
		fmt.Fprintf(app.Stderr, "banger: %s\n", plan.NetworkNote)
	}
	if plan.empty() {
		out("nothing of banger's to remove here\n")
		return nil
	}
	if dryRun {
		out("would remove:\n")
		plan.print(out)
		return nil
	}
	if !yes && app.IsTerminal() {
		fmt.Fprintln(app.Stderr, "This removes:")
		plan.print(func(format string, a ...any) { fmt.Fprintf(app.Stderr, format, a...) })
	}
	if err := app.confirm(confirmation{
		Given: yes, Flag: "--yes (or see the list with --dry-run)", Action: "uninstall banger",
		Question: "Remove all of this? It cannot be undone.", Declined: "nothing removed",
	}); err != nil {
		return err
	}
	return app.uninstall(ctx, c, info, h, layout, plan)
}

// planUninstall lists what is there to remove. c is nil when there is no
// state (and so no daemon).
func planUninstall(ctx context.Context, c *api.Client, h systemHost, layout paths.Layout) (uninstallPlan, error) {
	var p uninstallPlan
	if c != nil {
		vms, err := c.VMList(ctx)
		if err != nil {
			return p, err
		}
		for _, vm := range vms {
			p.VMs = append(p.VMs, vm.Name)
		}
		imgs, err := c.ImageList(ctx)
		if err != nil {
			return p, err
		}
		for _, im := range imgs {
			p.Images = append(p.Images, im.Name)
		}
	}
	p.Bridge, p.NetworkNote = networkToRemove(layout, c != nil, h)
	for _, d := range []string{layout.StateDir, layout.RuntimeDir, layout.ConfigDir} {
		if exists(d) {
			p.Dirs = append(p.Dirs, d)
		}
	}
	for _, b := range []string{install.BangerPath, install.BangerdPath, install.AgentPath} {
		full := atRoot(layout.SystemRoot, b)
		if _, err := os.Lstat(full); err != nil {
			continue
		}
		if !isBangerBinary(full) {
			p.Kept = append(p.Kept, full+": not a banger binary")
			continue
		}
		p.Binaries = append(p.Binaries, full)
	}
	return p, nil
}

// networkToRemove is banger's bridge (with its NAT) when banger made it
// here: there is state, the config turns VM networking on and names that
// bridge, and the bridge exists. Removing it needs root; note says why it
// is left alone when it matters.
func networkToRemove(layout paths.Layout, hasState bool, h systemHost) (bridge, note string) {
	cfg, err := config.Load(layout.ConfigFile())
	switch {
	case err != nil:
		return "", fmt.Sprintf("leaving the network alone: %v", err)
	case !hasState, cfg.Network.Enabled == "off", !h.linkExists(cfg.Network.Bridge):
		// The host's network holds nothing of banger's to remove.
		return "", ""
	case h.euid() != 0:
		return "", fmt.Sprintf("leaving bridge %s alone: removing it needs root (sudo banger uninstall)", cfg.Network.Bridge)
	}
	return cfg.Network.Bridge, ""
}

// uninstall carries out the plan, VMs first, and keeps going past
// failures so one stuck piece does not leave everything behind.
func (app *App) uninstall(ctx context.Context, c *api.Client, info api.DaemonInfo, h systemHost, layout paths.Layout, p uninstallPlan) error {
	var errs []error
	done := func(format string, a ...any) { fmt.Fprintf(app.Stdout, "removed "+format+"\n", a...) }
	for _, vm := range p.VMs {
		if err := c.VMDelete(ctx, api.VMDeleteRequest{Name: vm, Force: true}, app.progress(&globalFlags{})); err != nil {
			errs = append(errs, fmt.Errorf("vm %s: %w", vm, err))
			continue
		}
		done("vm %s", vm)
	}
	for _, im := range p.Images {
		if err := c.ImageDelete(ctx, im); err != nil {
			errs = append(errs, fmt.Errorf("image %s: %w", im, err))
			continue
		}
		done("image %s", im)
	}
	if c != nil {
		if err := stopDaemon(ctx, c, info.PID); err != nil {
			// Its files cannot go while it runs and may recreate them.
			return errors.Join(append(errs, fmt.Errorf("stop the daemon (pid %d): %w; nothing else was removed", info.PID, err))...)
		}
		fmt.Fprintln(app.Stdout, "stopped the daemon")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w; the files were kept so you can retry", errors.Join(errs...))
	}
	if p.Bridge != "" {
		if err := h.teardownNetwork(ctx, layout); err != nil {
			errs = append(errs, fmt.Errorf("network: %w", err))
		} else {
			done("bridge %s and banger's NAT", p.Bridge)
		}
	}
	for _, path := range append(append([]string(nil), p.Dirs...), p.Binaries...) {
		if err := os.RemoveAll(path); err != nil {
			errs = append(errs, err)
			continue
		}
		done("%s", path)
	}
	// make demo's agent directory, if that left it empty.
	if agentDir := filepath.Dir(atRoot(layout.SystemRoot, install.AgentPath)); len(p.Binaries) > 0 {
		if err := os.Remove(agentDir); err == nil {
			done("%s", agentDir)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	fmt.Fprintln(app.Stdout, "banger is uninstalled from this machine")
	return nil
}

// isBangerBinary reports whether path is a Go binary built from banger's
// module, read from its embedded build info without running it.
func isBangerBinary(path string) bool {
	bi, err := buildinfo.ReadFile(path)
	return err == nil && (bi.Main.Path == bangerModule || strings.HasPrefix(bi.Path, bangerModule+"/"))
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return !errors.Is(err, fs.ErrNotExist)
}

// atRoot places an absolute system path under root ("" for the real one;
// BANGER_SYSTEM_ROOT in tests).
func atRoot(root, p string) string {
	if realRoot(root) {
		return p
	}
	return filepath.Join(root, p)
}
