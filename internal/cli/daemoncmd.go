package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/doctor"
	"github.com/banger-dev/banger/internal/paths"
)

func newDaemonCmd(app *App, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Inspect and control the banger daemon (bangerd)",
		Long: `In user mode the daemon starts on demand with the first banger command and
keeps running in the background. These commands inspect and control it.`,
	}
	cmd.AddCommand(newDaemonStatusCmd(app, g), newDaemonStopCmd(app, g), newDaemonLogsCmd(app, g))
	return cmd
}

// daemonStatus is the --json shape of `banger daemon status`.
type daemonStatus struct {
	Running bool            `json:"running"`
	Socket  string          `json:"socket"`
	Current bool            `json:"current_build"`
	Info    *api.DaemonInfo `json:"info,omitempty"`
}

func newDaemonStatusCmd(app *App, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show whether the daemon runs, its pid, build and database (never starts it)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return app.probeDaemon(cmd, g, func(_ *api.Client, socket string, info api.DaemonInfo, err error) error {
				st := daemonStatus{Socket: socket}
				if err != nil && !errors.Is(err, api.ErrDaemonUnreachable) {
					return err
				}
				if err == nil {
					st.Running, st.Info, st.Current = true, &info, info.Build.SameBuild(app.Build)
				}
				return app.emit(g, st, func() error {
					if !st.Running {
						fmt.Fprintf(app.Stdout, "daemon: not running (socket %s)\n", st.Socket)
						return exitError{code: 3}
					}
					w := app.Stdout
					fmt.Fprintf(w, "daemon:   running, pid %d, up %s\n", info.PID, time.Since(info.StartedAt).Round(time.Second))
					fmt.Fprintf(w, "build:    %s\n", info.Build.Line("bangerd"))
					if !st.Current {
						fmt.Fprintf(w, "          (differs from this CLI, %s; %s)\n", app.Build.Line("banger"), doctor.BuildDriftAdvice(info.Mode == string(paths.ModeSystem)))
					}
					fmt.Fprintf(w, "mode:     %s\nsocket:   %s\ndatabase: %s\nschema:   %s\n", info.Mode, info.Socket, info.Database, info.Schema)
					if info.ConfigWarning != "" {
						fmt.Fprintf(w, "warning:  %s\n", info.ConfigWarning)
					}
					if layout, err := app.Layout(g.system); err == nil {
						fmt.Fprintf(w, "config:   %s\n", daemonConfigState(layout, info))
					}
					return nil
				})
			})
		},
	}
	addJSONFlag(cmd, g)
	return cmd
}

func newDaemonStopCmd(app *App, g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "stop",
		Short: "Stop the daemon; running VMs keep running and are adopted by the next daemon",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return app.probeDaemon(cmd, g, func(c *api.Client, _ string, info api.DaemonInfo, err error) error {
				if errors.Is(err, api.ErrDaemonUnreachable) {
					fmt.Fprintln(app.Stdout, "daemon: not running")
					return nil
				}
				if err != nil {
					return err
				}
				if err := stopDaemon(cmd.Context(), c, info.PID); err != nil {
					return err
				}
				fmt.Fprintf(app.Stdout, "daemon: stopped (pid %d)\n", info.PID)
				return nil
			})
		},
	}
}

// probeDaemon asks the daemon on the configured socket for its info without
// ever starting it, and hands fn the client, the socket path and the answer.
func (app *App) probeDaemon(cmd *cobra.Command, g *globalFlags, fn func(c *api.Client, socket string, info api.DaemonInfo, err error) error) error {
	layout, err := app.Layout(g.system)
	if err != nil {
		return err
	}
	c := api.NewClient(layout.SocketPath())
	defer c.Close()
	info, err := c.DaemonInfo(cmd.Context())
	return fn(c, layout.SocketPath(), info, err)
}

func newDaemonLogsCmd(app *App, g *globalFlags) *cobra.Command {
	var lines int
	cmd := &cobra.Command{
		Use:   "logs",
		Short: "Print the tail of the daemon's log",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			layout, err := app.Layout(g.system)
			if err != nil {
				return err
			}
			f, err := os.Open(layout.DaemonLogPath())
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("no daemon log at %s yet (in system mode use `journalctl -u bangerd`)", layout.DaemonLogPath())
			}
			if err != nil {
				return err
			}
			defer f.Close()
			text, err := tail(f, lines)
			if err != nil {
				return err
			}
			_, err = io.WriteString(app.Stdout, text)
			return err
		},
	}
	cmd.Flags().IntVarP(&lines, "lines", "n", 100, "how many trailing lines to print")
	return cmd
}

// tail returns the last n lines of r, reading at most the final 4 MiB.
func tail(f *os.File, n int) (string, error) {
	const window = 4 << 20
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	off := max(st.Size()-window, 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	s := strings.TrimRight(string(buf), "\n")
	if s == "" {
		return "", nil
	}
	all := strings.Split(s, "\n")
	if n > 0 && len(all) > n {
		all = all[len(all)-n:]
	}
	return strings.Join(all, "\n") + "\n", nil
}
