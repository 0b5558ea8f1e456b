package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/paths"
)

// connect returns a client for a daemon of this very build, starting one in
// user mode when none answers and replacing one left over from an older build
// (the stale-daemon-after-rebuild case). State lives in SQLite and VMMs run in
// their own process groups, so replacing the daemon loses nothing.
func (app *App) connect(ctx context.Context, g *globalFlags) (*api.Client, paths.Layout, error) {
	layout, err := app.Layout(g.system)
	if err != nil {
		return nil, layout, err
	}
	c := api.NewClient(layout.SocketPath())
	info, err := c.DaemonInfo(ctx)
	switch {
	case err == nil && info.Build.SameBuild(app.Build):
		return c, layout, nil
	case err == nil:
		if layout.Mode == paths.ModeSystem {
			// The system daemon belongs to systemd; the CLI never replaces it.
			return c, layout, nil
		}
		fmt.Fprintf(app.Stderr, "banger: restarting the daemon: it runs %s, this CLI is %s\n",
			info.Build.Line("bangerd"), app.Build.Line("banger"))
		if err := stopDaemon(ctx, c, info.PID); err != nil {
			return nil, layout, fmt.Errorf("stop stale daemon (pid %d): %w", info.PID, err)
		}
	case errors.Is(err, api.ErrDaemonUnreachable):
		if layout.Mode == paths.ModeSystem {
			return nil, layout, fmt.Errorf("the system daemon is not running at %s; start it with `sudo systemctl start bangerd`", layout.SocketPath())
		}
	default:
		return nil, layout, err
	}
	if err := app.startDaemon(ctx, layout); err != nil {
		return nil, layout, err
	}
	return c, layout, nil
}

// stopDaemon asks the daemon to exit and waits until its process is gone.
func stopDaemon(ctx context.Context, c *api.Client, pid int) error {
	if _, err := c.DaemonShutdown(ctx); err != nil && !errors.Is(err, api.ErrDaemonUnreachable) {
		return err
	}
	c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("daemon pid %d did not exit within 20s", pid)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	if err != nil {
		return errors.Is(err, syscall.EPERM)
	}
	// A zombie (our own un-reaped child) counts as gone.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	for i := len(b) - 1; i > 0; i-- {
		if b[i] == ')' && i+2 < len(b) {
			return b[i+2] != 'Z'
		}
	}
	return true
}

// startDaemon launches bangerd detached (own session, log file) and waits
// until it answers.
func (app *App) startDaemon(ctx context.Context, layout paths.Layout) error {
	bin, err := app.DaemonBinary()
	if err != nil {
		return err
	}
	if err := layout.Ensure(); err != nil {
		return err
	}
	logf, err := os.OpenFile(layout.DaemonLogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open daemon log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(bin)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start daemon %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	c := api.NewClient(layout.SocketPath())
	defer c.Close()
	deadline := time.Now().Add(app.StartTimeout)
	for {
		if _, err := c.DaemonInfo(ctx); err == nil {
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("the daemon exited during start-up (%v); see %s", err, layout.DaemonLogPath())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(15 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the daemon did not answer within %s; see %s", app.StartTimeout, layout.DaemonLogPath())
		}
	}
}

// findDaemonBinary prefers $BANGER_DAEMON, then bangerd next to this
// executable (a build tree or /usr/local/bin), then $PATH.
func findDaemonBinary() (string, error) {
	if p := os.Getenv("BANGER_DAEMON"); p != "" {
		return p, nil
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "bangerd")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("bangerd")
	if err != nil {
		return "", errors.New("cannot find bangerd next to banger or on $PATH; run `make build` or install banger")
	}
	return p, nil
}

func stdinIsTerminal() bool { return term.IsTerminal(int(os.Stdin.Fd())) }
