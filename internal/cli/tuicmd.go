package cli

import (
	"errors"
	"os"
	"os/exec"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/tui"
)

func newTUICmd(app *App, g *globalFlags) *cobra.Command {
	var noMouse bool
	cmd := &cobra.Command{
		Use:   "tui",
		Short: "Browse and operate VMs and images in a terminal UI",
		Long: `Open banger's terminal UI: the VM list with live state, details and the
serial log of the selected VM, and actions to create, start, stop, restart,
delete, ssh into and exec in VMs; a second view lists images. Press ? inside
for the keys. Running banger with no arguments on a terminal opens it too.

NO_COLOR is respected.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !app.onTerminal() {
				return errors.New("banger tui needs a terminal on stdin and stdout; scripts can use `banger vm list --json`")
			}
			return app.runTUI(cmd, g, !noMouse)
		},
	}
	cmd.Flags().BoolVar(&noMouse, "no-mouse", false, "leave the mouse to the terminal (press m inside to toggle)")
	return cmd
}

// runRoot is plain `banger`: the TUI on a terminal, and the usage text
// everywhere else, so pipes and scripts see what they always saw.
func runRoot(app *App, g *globalFlags) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		if !app.onTerminal() {
			return cmd.Help()
		}
		return app.runTUI(cmd, g, true)
	}
}

// onTerminal reports whether both ends a TUI needs are a terminal.
func (app *App) onTerminal() bool {
	f, ok := app.Stdout.(*os.File)
	return app.IsTerminal() && ok && term.IsTerminal(int(f.Fd()))
}

func (app *App) runTUI(cmd *cobra.Command, g *globalFlags, mouse bool) error {
	return app.withClient(cmd, g, func(c *api.Client) error {
		var ssh, shell func(string) *exec.Cmd
		if hasCommand(cmd.Root(), "vm", "ssh") {
			ssh = app.selfCommand(g, "vm", "ssh")
		}
		if hasCommand(cmd.Root(), "vm", "exec") {
			shell = app.selfCommand(g, "vm", "exec", "-t")
		}
		return tui.Run(cmd.Context(), tui.Options{
			Client:       c,
			SSHCommand:   ssh,
			ShellCommand: shell,
			NoColor:      os.Getenv("NO_COLOR") != "",
			Mouse:        mouse,
			Input:        app.Stdin,
			Output:       app.Stdout,
		})
	})
}

// hasCommand reports whether root has the subcommand path, so the TUI
// offers ssh only once `banger vm ssh` exists instead of flashing cobra's
// "unknown command" before the screen comes back.
func hasCommand(root *cobra.Command, path ...string) bool {
	c := root
	for _, name := range path {
		var next *cobra.Command
		for _, sub := range c.Commands() {
			if sub.Name() == name {
				next = sub
			}
		}
		if next == nil {
			return false
		}
		c = next
	}
	return true
}

// selfCommand runs this binary's own `banger ARGS... NAME` (`vm ssh`,
// `vm exec -t`), so the TUI and the CLI share one path to a VM's shell
// (known_hosts, keys, terminal handling).
func (app *App) selfCommand(g *globalFlags, verb ...string) func(name string) *exec.Cmd {
	return func(name string) *exec.Cmd {
		self, err := os.Executable()
		if err != nil {
			self = os.Args[0]
		}
		args := append(append([]string{}, verb...), name)
		if g.system {
			args = append([]string{"--system"}, args...)
		}
		return exec.Command(self, args...)
	}
}
