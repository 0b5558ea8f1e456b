package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/termtext"
)

// explainDaemonStop follows an error that says the daemon stopped mid-call
// with where to look: the daemon's log, and for a VM command, `vm show` for
// the state the VM was left in (the next daemon reconciles it).
func (app *App) explainDaemonStop(cmd *cobra.Command, err error) {
	if cmd == nil || !errors.Is(err, api.ErrDaemonStopped) {
		return
	}
	system := false
	if f := cmd.Flag("system"); f != nil {
		system = f.Value.String() == "true"
	}
	hint := "the daemon's log is in the journal (`journalctl -u bangerd`)"
	if layout, lerr := app.Layout(system); lerr == nil && layout.Mode != paths.ModeSystem {
		hint = "the daemon's log is " + layout.DaemonLogPath()
	}
	if name := vmNameOf(cmd); name != "" {
		hint += fmt.Sprintf("; `banger vm show %s` tells the VM's state", name)
	}
	fmt.Fprintf(app.Stderr, "hint: %s\n", termtext.Escape(hint))
}

// vmNameOf is the VM a `banger vm ...` command named: its --name flag or
// first argument ("" for other commands). `vm snapshot`'s --name names the
// snapshot, so there the VM is the argument.
func vmNameOf(cmd *cobra.Command) string {
	if cmd.Parent() == nil || cmd.Parent().Name() != "vm" {
		return ""
	}
	if f := cmd.Flags().Lookup("name"); f != nil && f.Value.String() != "" && cmd.Name() != "snapshot" {
		return f.Value.String()
	}
	return cmd.Flags().Arg(0)
}
