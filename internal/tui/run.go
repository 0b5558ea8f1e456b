package tui

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/colorprofile"
)

// Options configures Run.
type Options struct {
	// Client talks to the daemon; *api.Client in the real program.
	Client Client
	// SSHCommand returns the command that opens an interactive session in
	// the named VM over ssh. The TUI suspends while it runs, and uses it
	// only when the VM can take ssh (an address and a pinned host key).
	SSHCommand func(name string) *exec.Cmd
	// ShellCommand returns the command that opens a login shell in the
	// named VM through its guest agent (`banger vm exec -t NAME`): the
	// shell for VMs without sshd or network.
	ShellCommand func(name string) *exec.Cmd
	// NoColor renders without colors (bold and reverse video only), for
	// NO_COLOR users and dumb terminals.
	NoColor bool
	// Mouse starts with mouse reporting on (click to select, wheel to move);
	// `m` toggles it so the terminal's own text selection stays reachable.
	Mouse bool
	// Input and Output default to the terminal.
	Input  io.Reader
	Output io.Writer
}

// inboxSize bounds messages from long-running calls waiting for the UI;
// when it is full the event stream simply waits.
const inboxSize = 256

// Run shows the TUI until the user quits or ctx ends. Bubble Tea restores
// the terminal on every exit path, including a panic in any update, view or
// command, which Run turns into an error instead of a crash.
func Run(ctx context.Context, opts Options) error {
	if opts.Client == nil {
		return errors.New("tui: no daemon client")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	inbox := make(chan tea.Msg, inboxSize)
	m := newModel(ctx, opts, deps{
		inbox: inbox,
		now:   time.Now,
		after: func(d time.Duration, msg tea.Msg) tea.Cmd {
			return tea.Tick(d, func(time.Time) tea.Msg { return msg })
		},
	})
	popts := []tea.ProgramOption{tea.WithContext(ctx)}
	if opts.NoColor {
		popts = append(popts, tea.WithColorProfile(colorprofile.Ascii))
	}
	if opts.Input != nil {
		popts = append(popts, tea.WithInput(opts.Input))
	}
	if opts.Output != nil {
		popts = append(popts, tea.WithOutput(opts.Output))
	}
	p := tea.NewProgram(m, popts...)

	// Forward the inbox to the program. Send blocks while a suspended
	// shell session owns the terminal, which back-pressures the event stream
	// instead of dropping events.
	go func() {
		for {
			select {
			case msg := <-inbox:
				p.Send(msg)
			case <-ctx.Done():
				return
			}
		}
	}()

	_, err := p.Run()
	switch {
	case errors.Is(err, tea.ErrProgramPanic):
		return fmt.Errorf("the TUI hit a bug and stopped (the terminal was restored; the trace is above): %w", err)
	case errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil:
		return nil
	case err != nil:
		return fmt.Errorf("tui: %w", err)
	}
	return nil
}
