package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/privileged"
)

// RootHelperMain is `bangerd --root-helper`, run as root by
// banger-root-helper.service: it serves the privileged operations on
// layout's helper socket to the install owner recorded in install.toml, and
// to nobody else, until ctx is canceled. It tells systemd READY=1 once the
// socket accepts connections (the unit is Type=notify).
func RootHelperMain(ctx context.Context, layout paths.Layout, log *slog.Logger) error {
	ready := make(chan struct{})
	go notifyWhenReady(ctx, ready, os.Getenv("NOTIFY_SOCKET"), log)
	return rootHelper(ctx, layout, log, privileged.HostBackend(), ready)
}

// rootHelper is RootHelperMain with the backend injectable; ready, if
// non-nil, is closed once the socket accepts connections.
func rootHelper(ctx context.Context, layout paths.Layout, log *slog.Logger, backend privileged.Backend, ready chan<- struct{}) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if os.Geteuid() != 0 {
		return errors.New("the root helper must run as root; systemd starts it as banger-root-helper.service")
	}
	meta, err := installmeta.Read(layout.InstallMetaPath())
	if errors.Is(err, installmeta.ErrNotInstalled) {
		return fmt.Errorf("no system install (%s is missing): the root helper serves a system install only; run `sudo banger system install --owner USER`", layout.InstallMetaPath())
	}
	if err != nil {
		return err
	}
	if meta.OwnerUID <= 0 || meta.OwnerGID < 0 {
		return fmt.Errorf("install metadata %s names owner uid %d: the helper serves only a non-root owner; rerun `sudo banger system install --owner USER`", layout.InstallMetaPath(), meta.OwnerUID)
	}
	owner := privileged.Owner{UID: meta.OwnerUID, GID: meta.OwnerGID}
	if err := ensureRuntimeDir(layout.RuntimeDir, owner.GID); err != nil {
		return err
	}
	jailer := helperJailer(layout, log)
	local, err := privileged.NewLocal(privileged.Policy{
		Owner:      owner,
		StateDir:   layout.StateDir,
		RuntimeDir: layout.RuntimeDir,
		// The sockets that decide who talks to whom are never targets.
		Protected:         []string{layout.HelperSocketPath(), layout.SocketPath()},
		DeviceMapperMajor: privileged.DeviceMapperMajor("/proc/devices"),
		Jailer:            jailer,
	}, backend)
	if err != nil {
		return err
	}
	b := buildinfo.Current()
	srv, err := privileged.NewServer(privileged.ServerOptions{
		Ops:   local,
		Owner: owner,
		Info:  privileged.HelperInfo{Version: b.Version, Commit: b.Commit, BuiltAt: b.BuiltAt, Jailer: jailerPath(jailer)},
		Log:   log,
	})
	if err != nil {
		return err
	}
	ln, err := privileged.Listen(layout.HelperSocketPath(), owner.GID)
	if err != nil {
		return err
	}
	log.Info("root helper serving", "socket", layout.HelperSocketPath(), "owner", meta.OwnerUser,
		"owner_uid", owner.UID, "version", b.Version, "jailer", jailer != nil)
	if ready != nil {
		close(ready)
	}
	return srv.Serve(ctx, ln)
}

// ensureRuntimeDir makes the shared runtime dir root:<owner group> 01770 if
// it is missing. tmpfiles.d creates it at boot; this covers a helper started
// after someone removed it. An existing directory is left as it is.
func ensureRuntimeDir(dir string, gid int) error {
	fi, err := os.Lstat(dir)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil:
		return fmt.Errorf("%s exists and is not a directory", dir)
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("create runtime dir: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("create runtime dir: %w", err)
	}
	if err := os.Chown(dir, 0, gid); err != nil {
		return fmt.Errorf("create runtime dir: %w", err)
	}
	return os.Chmod(dir, 0o770|fs.ModeSticky)
}

// helperJailer reads the jailer policy from banger's config (root's file in
// a system install). A config the helper cannot use costs only the jailer:
// networking and disks must keep working, so it is logged, not fatal.
func helperJailer(layout paths.Layout, log *slog.Logger) *privileged.JailerPolicy {
	cfg, err := config.Load(layout.ConfigFile())
	if err != nil {
		log.Warn("no jailer: cannot read the config", "err", err)
		return nil
	}
	return usableJailer(cfg, layout, log)
}

// usableJailer is jailerPolicy, with a configured jailer that cannot be
// used (a binary not found) logged rather than fatal: everything else the
// process does must keep working, and the driver reports it again when a
// VM needs it.
func usableJailer(cfg config.Config, layout paths.Layout, log *slog.Logger) *privileged.JailerPolicy {
	p, err := jailerPolicy(cfg, layout)
	if err != nil {
		log.Warn("no jailer", "err", err)
		return nil
	}
	return p
}

func jailerPath(p *privileged.JailerPolicy) string {
	if p == nil {
		return ""
	}
	return p.Jailer
}
