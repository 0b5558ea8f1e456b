// Package daemon is bangerd: it owns the state database, the VMM processes
// and the API socket, and runs every VM and image operation.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/privileged"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/vmm"
)

// Options configures a daemon. Everything with an outside effect is injected
// so tests can run a daemon in-process against temporary directories.
type Options struct {
	Layout paths.Layout
	Config config.Config
	// ConfigFile is the file Config came from ("" for defaults built in
	// code); daemon.info reports it with Config's fingerprint.
	ConfigFile string
	// OwnerConfigFile is the owner's layer over ConfigFile (system mode;
	// config.Sources), and ConfigWarning why it was left out of Config.
	OwnerConfigFile string
	ConfigWarning   string
	// RequestRestart, when set, lets daemon.reload apply a changed
	// configuration: it is called, then the daemon stops, and the
	// supervisor (systemd) starts it again. Nil: reload refuses.
	RequestRestart func()
	Log            *slog.Logger
	Build          buildinfo.Info
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Driver is the VMM driver; when nil the daemon picks one from Config.
	Driver vmm.Driver
	// Runner runs the daemon's own external commands (image builds,
	// mkfs/resize2fs on VM disks); system.ExecRunner when nil.
	Runner system.Runner
	// ShutdownGrace bounds how long in-flight calls may run after a stop
	// request; 10s when zero.
	ShutdownGrace time.Duration
	// CrashPoint, when set, is called as the VM lifecycle passes each named
	// step (Crash* constants). Only crash tests set it, from a test-only
	// main, to kill the daemon there; bangerd never does.
	CrashPoint func(step string)
}

// Daemon is one running bangerd.
type Daemon struct {
	opts      Options
	log       *slog.Logger
	now       func() time.Time
	store     *store.Store
	api       *api.Server
	schema    string // daemon.info's schema line, fixed after Open
	vms       *vmManager
	net       *vmNetwork    // nil: VMs get no network
	ttl       *lifetimes    // VM lifetimes (ttl.go); their scheduler runs once VMs are reconciled
	overlays  *overlayDisks // nil: VM disks are reflink or sparse clones
	events    *hub
	startedAt time.Time
	oci       ociState

	stopOnce sync.Once
	stop     chan struct{}
}

// Run takes the instance lock, opens (and migrates) the database, listens on
// the API socket and serves until ctx is canceled or a client asks the
// daemon to shut down. ready, if non-nil, is closed once the socket accepts
// connections.
func Run(ctx context.Context, opts Options, ready chan<- struct{}) error {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.ShutdownGrace == 0 {
		opts.ShutdownGrace = 10 * time.Second
	}
	if opts.Runner == nil {
		opts.Runner = system.ExecRunner{}
	}
	if err := opts.Layout.Ensure(); err != nil {
		return err
	}
	lock, err := acquireLock(opts.Layout.LockPath())
	if err != nil {
		return err
	}
	defer lock.release()

	st, err := store.Open(ctx, opts.Layout.DBPath(), store.WithClock(opts.Now))
	if err != nil {
		return fmt.Errorf("open state database: %w", err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			opts.Log.Warn("close state database", "err", err)
		}
	}()

	d := &Daemon{
		opts:      opts,
		log:       opts.Log,
		now:       opts.Now,
		store:     st,
		startedAt: opts.Now(),
		// Open applied every migration this binary knows and refuses newer
		// databases, so the schema cannot change while this daemon runs:
		// classify once, not on every daemon.info (which every CLI call makes).
		schema: schemaLine(opts.Layout.DBPath()),
		stop:   make(chan struct{}),
		events: newHub(),
	}
	d.cleanupImageWork()
	ops, how, err := d.privilegedOps()
	if err != nil {
		return err
	}
	d.log.Info("privileged operations", "via", how)
	driver := opts.Driver
	if driver == nil {
		// The jailer, if configured, is launched through ops.
		if driver, err = selectDriver(ctx, opts.Config, opts.Layout, opts.Log, ops); err != nil {
			// No VMM is not fatal: images, listing and doctor still work,
			// and VM operations say what is missing.
			d.log.Warn("no VMM driver", "err", err)
		}
	}
	if d.net, err = d.startNetwork(ctx, ops, how); err != nil {
		return err
	}
	d.overlays = chooseDisks(opts.Layout, diskPort(ops), opts.Runner, d.log)
	if d.net != nil {
		defer d.net.close()
	}
	// The lifetimes exist before the VM manager, which holds them; their
	// scheduler starts once reconcile is done (startLifetimes).
	d.ttl = newLifetimes(d.log, d.store, d.now)
	d.vms = newVMManager(d, driver)
	autostart, err := d.vms.lc.Reconcile(ctx)
	if err != nil {
		return fmt.Errorf("reconcile VMs: %w", err)
	}
	stopLifetimes, err := d.startLifetimes(ctx)
	if err != nil {
		return err
	}
	defer stopLifetimes()
	d.api = api.NewServer(d.log, d.now)
	d.register()

	ln, err := listenSocket(opts.Layout.SocketPath())
	if err != nil {
		return err
	}
	if len(autostart) > 0 {
		go d.vms.lc.Autostart(ctx, autostart)
	}
	return d.serve(ctx, ln, ready)
}

func (d *Daemon) serve(ctx context.Context, ln net.Listener, ready chan<- struct{}) error {
	srv := &http.Server{
		Handler:           d.api,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	d.log.Info("bangerd serving", "socket", d.opts.Layout.SocketPath(), "pid", os.Getpid(),
		"version", d.opts.Build.Version, "commit", d.opts.Build.Commit, "mode", d.opts.Layout.Mode)
	if ready != nil {
		close(ready)
	}

	select {
	case <-ctx.Done():
		d.log.Info("bangerd stopping", "reason", "signal")
	case <-d.stop:
		d.log.Info("bangerd stopping", "reason", "daemon.shutdown")
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.opts.ShutdownGrace)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	// Remove the socket only after the listener is closed, so no client ever
	// sees a socket file nobody listens on while we are still alive.
	_ = os.Remove(d.opts.Layout.SocketPath())
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

func (d *Daemon) requestStop() {
	d.stopOnce.Do(func() { close(d.stop) })
}

func (d *Daemon) register() {
	api.Handle(d.api, api.MethodDaemonInfo, d.info)
	api.Handle(d.api, api.MethodDaemonShutdown, d.shutdown)
	api.Handle(d.api, api.MethodDaemonReload, d.reload)
	api.Handle(d.api, api.MethodEventsWatch, d.watch)
	api.Handle(d.api, api.MethodImageList, d.imageList)
	api.Handle(d.api, api.MethodImageImport, d.imageImport)
	api.Handle(d.api, api.MethodImageDelete, d.imageDelete)
	api.Handle(d.api, api.MethodImageBuild, d.imageBuild)
	api.Handle(d.api, api.MethodImageShow, d.imageShow)
	api.Handle(d.api, api.MethodImagePull, d.imagePull)
	api.Handle(d.api, api.MethodImagePrune, d.imagePrune)
	m := d.vms
	api.Handle(d.api, api.MethodVMCreate, m.Create)
	api.Handle(d.api, api.MethodVMList, func(ctx context.Context, _ struct{}, _ api.Progress) (api.VMList, error) {
		vms, err := m.List(ctx)
		return api.VMList{VMs: vms}, err
	})
	api.Handle(d.api, api.MethodVMShow, func(ctx context.Context, req api.VMRef, _ api.Progress) (api.VM, error) {
		vm, err := m.lc.Get(ctx, req.Name)
		return m.present(ctx, vm, err)
	})
	api.Handle(d.api, api.MethodVMStart, func(ctx context.Context, req api.VMRef, p api.Progress) (api.VM, error) {
		return m.Start(ctx, req.Name, p)
	})
	api.Handle(d.api, api.MethodVMStop, m.Stop)
	api.Handle(d.api, api.MethodVMRestart, func(ctx context.Context, req api.VMRef, p api.Progress) (api.VM, error) {
		return m.Restart(ctx, req.Name, p)
	})
	api.Handle(d.api, api.MethodVMDelete, func(ctx context.Context, req api.VMDeleteRequest, p api.Progress) (struct{}, error) {
		return struct{}{}, m.Delete(ctx, req, p)
	})
	api.Handle(d.api, api.MethodVMLogs, m.Logs)
	api.Handle(d.api, api.MethodVMPortForward, m.PortForward)
	api.Handle(d.api, api.MethodVMEgress, m.Egress)
	api.Handle(d.api, api.MethodVMTTL, m.TTL)
	d.registerAccess(d.api)
	d.registerSnapshots(d.api)
}

func (d *Daemon) info(ctx context.Context, _ struct{}, _ api.Progress) (api.DaemonInfo, error) {
	methods := d.api.Methods()
	sort.Strings(methods)
	return api.DaemonInfo{
		Build:     d.opts.Build,
		PID:       os.Getpid(),
		Mode:      string(d.opts.Layout.Mode),
		StartedAt: d.startedAt,
		Socket:    d.opts.Layout.SocketPath(),
		Database:  d.opts.Layout.DBPath(),
		Schema:    d.schema,
		VMM:       d.opts.Config.VMM,
		Methods:   methods,
		Orphans:   d.vms.orphanList(),

		ConfigFile:        d.opts.ConfigFile,
		ConfigFingerprint: d.opts.Config.Fingerprint(),
		OwnerConfigFile:   d.opts.OwnerConfigFile,
		ConfigWarning:     d.opts.ConfigWarning,
	}, nil
}

func (d *Daemon) shutdown(ctx context.Context, _ struct{}, _ api.Progress) (api.ShutdownResponse, error) {
	// Stop after this reply has been written: Shutdown waits for in-flight
	// handlers, including this one.
	d.requestStop()
	return api.ShutdownResponse{PID: os.Getpid()}, nil
}

func (d *Daemon) imageList(ctx context.Context, _ struct{}, _ api.Progress) (api.ImageList, error) {
	imgs, err := d.store.ListImages(ctx)
	if err != nil {
		return api.ImageList{}, err
	}
	out := api.ImageList{Images: make([]api.Image, 0, len(imgs))}
	for _, im := range imgs {
		out.Images = append(out.Images, imageToAPI(im))
	}
	return out, nil
}

func imageToAPI(im store.Image) api.Image {
	return api.Image{
		ID: im.ID, Name: im.Name, Kernel: im.KernelPath, Initrd: im.InitrdPath,
		Rootfs: im.RootfsPath, SizeBytes: im.RootfsSizeBytes, Source: im.Source, CreatedAt: im.CreatedAt,
		Origin: originToAPI(im),
	}
}

// privilegedOps picks how privileged operations are reached: in-process
// (root), the root helper (system install), or unavailable.
func (d *Daemon) privilegedOps() (privileged.Ops, string, error) {
	// Only a root daemon launches jailers itself; otherwise the helper does,
	// with its own (root's) reading of the config.
	var jailer *privileged.JailerPolicy
	if os.Getuid() == 0 {
		jailer = usableJailer(d.opts.Config, d.opts.Layout, d.log)
	}
	ops, how, err := privileged.ForDaemon(d.opts.Layout, privileged.Identity{UID: os.Getuid(), GID: os.Getgid()}, privileged.HostBackend(), jailer)
	if err != nil {
		return nil, "", fmt.Errorf("privileged operations: %w", err)
	}
	return ops, how, nil
}

// startNetwork sets up VM networking with ops, or returns nil without it.
func (d *Daemon) startNetwork(ctx context.Context, ops privileged.Ops, how string) (*vmNetwork, error) {
	in := netSetup{cfg: d.opts.Config.Network, log: d.log, store: d.store, stateDir: d.opts.Layout.StateDir}
	n, err := setupNetwork(ctx, in, netPort(ops), how)
	if err != nil && d.opts.Config.Network.Enabled == "auto" {
		d.log.Warn("vm networking disabled", "err", err)
		return nil, nil
	}
	return n, err
}

func schemaLine(db string) string {
	st, err := store.InspectSchemaState(db)
	if err != nil {
		return "unknown"
	}
	return st.Line()
}
