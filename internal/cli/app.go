// Package cli is the banger command line. Cobra commands here only parse
// flags and print; the work happens in the daemon behind the typed API
// client, or in small functions that take plain option structs.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/termtext"
)

// App carries everything a command touches outside itself.
type App struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Build  buildinfo.Info
	// Layout resolves the directory layout (user or system mode).
	Layout func(system bool) (paths.Layout, error)
	// DaemonBinary finds bangerd for on-demand starts.
	DaemonBinary func() (string, error)
	// IsTerminal reports whether stdin is a terminal (for confirmations).
	IsTerminal func() bool
	// StartTimeout bounds waiting for an on-demand daemon.
	StartTimeout time.Duration
}

// DefaultApp is the App for the real process.
func DefaultApp() *App {
	return &App{
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		Build:        buildinfo.Current(),
		Layout:       paths.Detect,
		DaemonBinary: findDaemonBinary,
		IsTerminal:   stdinIsTerminal,
		StartTimeout: 15 * time.Second,
	}
}

// exitError carries a specific exit code out of a command without printing.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// Run executes the CLI with args and returns the process exit code.
func Run(ctx context.Context, app *App, args []string) int {
	root := newRoot(app)
	root.SetArgs(args)
	root.SetIn(app.Stdin)
	root.SetOut(app.Stdout)
	root.SetErr(app.Stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	printError(app.Stderr, err)
	app.explainDaemonStop(cmd, err)
	return 1
}

// printError prints one line a person can act on, plus the daemon's hint.
// Both may quote the guest (a serial-console tail, an agent's error), so
// they are escaped; newlines stay, for the multi-line ones.
func printError(w io.Writer, err error) {
	fmt.Fprintf(w, "banger: %s\n", termtext.Escape(err.Error()))
	var ae *api.Error
	if errors.As(err, &ae) && ae.Hint != "" {
		fmt.Fprintf(w, "hint: %s\n", termtext.Escape(ae.Hint))
	}
}

type globalFlags struct {
	system bool
	json   bool
}

func newRoot(app *App) *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "banger",
		Short: "Firecracker microVMs on your workstation",
		Long: `banger gives you real VMs (own kernel, disk, network and DNS name) as
persistent objects you create, start, stop and delete. Without usable KVM,
QEMU's software emulation boots the default image in 5-15 s (measured on a
2-core machine); KVM and Firecracker are much faster.

  banger vm create --name dev     create and boot a VM
  banger vm exec dev -- uname -a  run a command in it
  banger vm list                  see your VMs
  banger doctor                   check the host and the installation`,
		Version:       app.Build.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          runRoot(app, g),
	}
	// One line, no "banger version" prefix: the formatter owns the wording.
	root.SetVersionTemplate(app.Build.Line("banger") + "\n")
	root.PersistentFlags().BoolVar(&g.system, "system", false, "use the system-wide installation (/etc/banger, /var/lib/banger, /run/banger); the default for its owner (--system=false for a user-mode banger)")
	root.PersistentPreRun = func(cmd *cobra.Command, _ []string) {
		if f := cmd.Flag("system"); f != nil && !f.Changed {
			g.system = installmeta.OwnedBy(paths.System(os.Getenv("BANGER_SYSTEM_ROOT")), os.Getuid())
		}
	}
	root.AddCommand(
		newVersionCmd(app),
		newDaemonCmd(app, g),
		newDoctorCmd(app, g),
		newConfigCmd(app, g),
		newVMCmd(app, g),
		newSSHConfigCmd(app, g),
		newImageCmd(app, g),
		newKernelCmd(app, g),
		newSnapshotCmd(app, g),
		newMCPCmd(app, g),
		newRunCmd(app, g),
		newTUICmd(app, g),
		newSystemCmd(app, g),
		newUpdateCmd(app, g),
		newUninstallCmd(app, g),
	)
	rejectUnknownSubcommands(root)
	return root
}

// addJSONFlag adds --json to cmd, bound to g.json.
func addJSONFlag(cmd *cobra.Command, g *globalFlags) {
	cmd.Flags().BoolVar(&g.json, "json", false, "print machine-readable JSON on stdout")
}

// writeJSON prints v indented, with the characters encoding/json leaves
// literal but a terminal acts on escaped too (see termtext.JSON).
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(termtext.JSON(b), '\n'))
	return err
}

// withClient connects to the daemon (starting it when needed), runs fn with
// the client and closes it afterwards.
func (app *App) withClient(cmd *cobra.Command, g *globalFlags, fn func(*api.Client) error) error {
	c, _, err := app.connect(cmd.Context(), g)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(c)
}

// emit writes v as JSON on stdout under --json, and otherwise runs human.
func (app *App) emit(g *globalFlags, v any, human func() error) error {
	if g.json {
		return writeJSON(app.Stdout, v)
	}
	return human()
}
