package daemon

import (
	"context"
	"errors"
	"log/slog"
	"os"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/sdnotify"
)

// ExitRestart is bangerd's exit status after daemon.reload asked systemd
// for a restart (see sdnotify.RestartExitStatus). VMs outlive the daemon
// (KillMode=process), so the new daemon adopts them, exactly as after
// `systemctl restart bangerd`.
const ExitRestart = sdnotify.RestartExitStatus

// reload is daemon.reload: load the configuration files as they are now
// and, when their values differ from the running ones, restart to apply
// them. A restart and not an in-place swap: the configuration is wired
// into the network, the VMM driver and the lifecycle when the daemon
// starts, and a fresh daemon is the one path to all of them that is
// already proven (it is what an update or a crash does).
func (d *Daemon) reload(ctx context.Context, _ struct{}, _ api.Progress) (api.ReloadResponse, error) {
	resp := api.ReloadResponse{PID: os.Getpid()}
	if d.opts.ConfigFile == "" {
		return resp, api.Errorf(api.CodeFailedPrecondition, "this daemon was given its configuration in code, not from files; there is nothing to reload")
	}
	cfg, err := config.LoadSources(config.Sources{Root: d.opts.ConfigFile, Owner: d.opts.OwnerConfigFile})
	if err != nil {
		return resp, &api.Error{Code: api.CodeInvalidArgument, Message: err.Error() + "; the daemon keeps the configuration it runs with",
			Hint: "fix the file (`banger config check` says what is wrong), then run the command again"}
	}
	resp.Fingerprint = cfg.Fingerprint()
	if resp.Fingerprint == d.opts.Config.Fingerprint() && d.opts.ConfigWarning == "" {
		return resp, nil
	}
	if d.opts.RequestRestart == nil {
		return resp, &api.Error{Code: api.CodeFailedPrecondition,
			Message: "this daemon was not started by systemd, so it cannot restart itself to apply the configuration",
			Hint:    "stop it (`banger daemon stop`); the next banger command starts one with the new configuration"}
	}
	d.log.Info("configuration changed; restarting to apply it", "fingerprint", resp.Fingerprint)
	d.opts.RequestRestart()
	// Stop after this reply is written, as daemon.shutdown does.
	d.requestStop()
	resp.Restarting = true
	return resp, nil
}

// loadDaemonConfig loads the daemon's configuration from its files: the
// one --config names, or the layout's sources (in system mode root's file
// and the owner's layer). An owner's layer that does not load is left out,
// with the reason kept for daemon.info and the log: the owner can fix
// their own file without sudo only if the daemon keeps running.
func loadDaemonConfig(layout paths.Layout, configPath string, opts *Options) error {
	src := config.Sources{Root: configPath}
	if configPath == "" {
		src = config.SourcesFor(layout)
	}
	cfg, err := config.LoadSources(src)
	var owner *config.OwnerLayerError
	if errors.As(err, &owner) {
		opts.ConfigWarning = owner.Error() + "; the daemon runs without it"
		err = nil
	}
	if err != nil {
		return err
	}
	opts.Config, opts.ConfigFile, opts.OwnerConfigFile = cfg, src.Root, src.Owner
	return nil
}

// supervised wires a daemon to systemd when $NOTIFY_SOCKET names one
// (bangerd.service is Type=notify): READY=1 once the API answers, and
// daemon.reload may restart it. It returns the channel to pass Run as
// ready, and whether a restart was requested once Run has returned.
func supervised(ctx context.Context, notifySocket string, opts *Options, log *slog.Logger) (ready chan struct{}, restartRequested func() bool) {
	ready = make(chan struct{})
	go notifyWhenReady(ctx, ready, notifySocket, log)
	if notifySocket == "" {
		return ready, func() bool { return false }
	}
	requested := make(chan struct{}, 1)
	opts.RequestRestart = func() {
		select {
		case requested <- struct{}{}:
		default:
		}
	}
	return ready, func() bool { return len(requested) > 0 }
}

// notifyWhenReady tells systemd READY=1 once ready is closed. A failure
// is logged: systemd then times the start out and says so itself.
func notifyWhenReady(ctx context.Context, ready <-chan struct{}, notifySocket string, log *slog.Logger) {
	select {
	case <-ready:
	case <-ctx.Done():
		return
	}
	if _, err := sdnotify.Notify(notifySocket, sdnotify.Ready); err != nil {
		log.Warn("cannot tell systemd the service is ready", "err", err)
	}
}
