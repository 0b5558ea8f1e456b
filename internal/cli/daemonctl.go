package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/termtext"
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
	info, err := probeDaemon(ctx, c)
	switch {
	case err == nil:
		why := app.restartReason(ctx, c, layout, info)
		if why == "" {
			return c, layout, nil
		}
		fmt.Fprintf(app.Stderr, "banger: restarting the daemon: %s\n", why)
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

// restartReason says why the running daemon should be replaced before
// this command ("" to keep it): it is from another build, or it runs with
// a config file that has changed since it started. The system daemon
// belongs to systemd and is never replaced; for a changed config the CLI
// says how to apply it instead.
func (app *App) restartReason(ctx context.Context, c *api.Client, layout paths.Layout, info api.DaemonInfo) string {
	if !info.Build.SameBuild(app.Build) {
		if layout.Mode == paths.ModeSystem {
			return ""
		}
		return fmt.Sprintf("it runs %s, this CLI is %s", info.Build.Line("bangerd"), app.Build.Line("banger"))
	}
	drift := checkConfigDrift(layout, info)
	switch {
	case drift.err != nil:
		fmt.Fprintf(app.Stderr, "banger: warning: %v; the daemon keeps the configuration it started with (`banger config check`)\n", drift.err)
		return ""
	case !drift.changed:
		return ""
	case layout.Mode == paths.ModeSystem:
		fmt.Fprintln(app.Stderr, "banger: warning: the daemon runs with an older version of its configuration files; `banger config reload` applies it")
		return ""
	}
	if busy := vmsInTransition(ctx, c); len(busy) > 0 {
		fmt.Fprintf(app.Stderr, "banger: warning: the daemon runs with an older %s; it is not restarted while %s starts or stops (`banger daemon stop` applies it)\n",
			layout.ConfigFile(), strings.Join(busy, ", "))
		return ""
	}
	return filepath.Base(layout.ConfigFile()) + " changed since it started"
}

// configDrift compares the config a daemon loaded with the file now.
type configDrift struct {
	// known is false when the daemon cannot say (an older build) or loaded
	// another file (bangerd --config).
	known   bool
	changed bool
	// err is the file's problem when it no longer loads.
	err error
}

func checkConfigDrift(layout paths.Layout, info api.DaemonInfo) configDrift {
	src := config.SourcesFor(layout)
	if info.ConfigFingerprint == "" || info.ConfigFile != src.Root || info.OwnerConfigFile != src.Owner {
		return configDrift{}
	}
	cfg, err := config.LoadSources(src)
	if err != nil {
		return configDrift{known: true, err: err}
	}
	return configDrift{known: true, changed: cfg.Fingerprint() != info.ConfigFingerprint}
}

// vmsInTransition names the VMs that are starting or stopping: a daemon
// restart would cut those operations short.
func vmsInTransition(ctx context.Context, c *api.Client) []string {
	vms, err := c.VMList(ctx)
	if err != nil {
		return nil
	}
	var busy []string
	for _, vm := range vms {
		if vm.State == api.VMStarting || vm.State == api.VMStopping {
			busy = append(busy, vm.Name)
		}
	}
	return busy
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

// probeDaemon asks the daemon who it is. A daemon that is dying at this
// moment (killed, or stopping) can still accept a connection and then drop
// it: its last threads hold the socket for a moment after the process is a
// zombie. That answer says nothing about the next daemon, so the probe is
// repeated until the socket answers or refuses, for up to a second.
func probeDaemon(ctx context.Context, c *api.Client) (api.DaemonInfo, error) {
	deadline := time.Now().Add(time.Second)
	for {
		info, err := c.DaemonInfo(ctx)
		if !errors.Is(err, api.ErrDaemonStopped) || time.Now().After(deadline) {
			return info, err
		}
		select {
		case <-ctx.Done():
			return info, err
		case <-time.After(20 * time.Millisecond):
		}
	}
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
	// Where this start's output begins, so a failure can quote its reason.
	logStart, _ := logf.Seek(0, io.SeekEnd)
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
			if reason := daemonStartFailure(layout.DaemonLogPath(), logStart); reason != "" {
				return fmt.Errorf("the daemon could not start: %s (log: %s)", reason, layout.DaemonLogPath())
			}
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

// daemonStartFailure returns the reason a daemon that just exited gave for
// it: the last "bangerd: …" line (what bangerd prints before exiting on an
// error) that it wrote to its log after offset. It reads at most the last
// 64 KiB, and the line is escaped: the log is ours, but it may quote
// anything.
func daemonStartFailure(logPath string, offset int64) string {
	f, err := os.Open(logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	const window = 64 << 10
	if fi, err := f.Stat(); err == nil && fi.Size()-offset > window {
		offset = fi.Size() - window
	}
	b, err := io.ReadAll(io.NewSectionReader(f, offset, window))
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if reason, ok := strings.CutPrefix(lines[i], "bangerd: "); ok {
			return termtext.Short(reason, 300)
		}
	}
	return ""
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
