package firecracker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmproc"
)

// apiSocketName is the API socket's file name inside LaunchSpec.RunDir.
const apiSocketName = "firecracker.sock"

// Defaults for Config's zero values.
const (
	DefaultBinary          = "firecracker"
	DefaultAPIReadyTimeout = 10 * time.Second
	DefaultStopTimeout     = 10 * time.Second
)

// Owner is a uid/gid that sockets and log files are handed to, so an
// unprivileged owner can use a VM whose VMM was started by root.
type Owner = vmmproc.Owner

// Config configures the Firecracker driver. The zero value runs
// "firecracker" from $PATH, unjailed, with the default timeouts.
type Config struct {
	// BinaryPath is the firecracker binary; default "firecracker".
	BinaryPath string
	// Jailer, when set, starts Firecracker through the jailer.
	Jailer *JailerConfig
	// Owner, when set, receives the run dir, sockets and log files. A jailed
	// Firecracker already runs as the owner and makes its sockets as the
	// owner, so this matters only to an unjailed VMM of a root daemon.
	Owner *Owner
	// APIReadyTimeout bounds the wait for the API socket to answer after
	// the process starts; default 10 s.
	APIReadyTimeout time.Duration
	// StopTimeout is how long Stop waits for a clean guest shutdown when the
	// caller passes no timeout; default 10 s.
	StopTimeout time.Duration
	// LogLevel is Firecracker's log level (LogLevel*); empty means Info.
	LogLevel string
	// ExtraEnv is added to the VMM's environment (the jailer clears it).
	ExtraEnv []string
	// ConsoleLogMax caps the serial console log (vmmproc.CapLog); zero
	// means vmmproc.DefaultConsoleLogMax.
	ConsoleLogMax int64
	// Logger receives driver progress; default discards.
	Logger *slog.Logger
}

// Driver launches and adopts Firecracker VMMs. It implements vmm.Driver.
type Driver struct {
	cfg Config
	// files hands the VM's files to cfg.Owner; tests replace its Chown to
	// observe the hand-over without root.
	files vmmproc.HandOver
}

var (
	_ vmm.Driver      = (*Driver)(nil)
	_ vmm.Restorer    = (*Driver)(nil)
	_ vmm.Instance    = (*Instance)(nil)
	_ vmm.Pauser      = (*Instance)(nil)
	_ vmm.Snapshotter = (*Instance)(nil)
	_ vmm.AgentDialer = (*Instance)(nil)
)

// New returns a driver with cfg's zero values replaced by defaults.
func New(cfg Config) *Driver {
	if cfg.BinaryPath == "" {
		cfg.BinaryPath = DefaultBinary
	}
	if cfg.APIReadyTimeout <= 0 {
		cfg.APIReadyTimeout = DefaultAPIReadyTimeout
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Driver{cfg: cfg, files: vmmproc.HandOver{Owner: cfg.Owner, Chown: os.Lchown}}
}

// Name is the driver's config name.
func (d *Driver) Name() string { return "firecracker" }

// Capabilities reports what Firecracker offers; it always needs KVM.
func (d *Driver) Capabilities() vmm.Capabilities {
	return vmm.Capabilities{Pause: true, Snapshots: true, Accel: "kvm"}
}

// Launch starts Firecracker for spec, configures the VM through the API and
// starts the guest. On any failure the process is killed and reaped and its
// sockets removed before the error, naming the failed step, is returned.
// The VMM runs in its own process group and outlives ctx and the daemon.
func (d *Driver) Launch(ctx context.Context, spec vmm.LaunchSpec) (vmm.Instance, error) {
	inst, err := d.launch(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("launch firecracker for vm %q: %w", spec.Name, err)
	}
	return inst, nil
}

func (d *Driver) launch(ctx context.Context, spec vmm.LaunchSpec) (*Instance, error) {
	return d.run(ctx, spec, "booted", d.bootSteps)
}

// configurer builds the API calls that bring a started Firecracker to a
// running guest: a boot (bootSteps) or a snapshot restore (restoreSteps).
// spec and l are as the VMM sees them (jail paths when jailed).
type configurer func(spec vmm.LaunchSpec, l layout, c *Client) ([]vmmproc.Step, error)

// run is what Launch and Restore share: validate spec, start the VMM, wait
// for its API, configure it, and hand the sockets to the owner. On any
// failure the VMM is killed and reaped before the error returns.
func (d *Driver) run(ctx context.Context, spec vmm.LaunchSpec, done string, configure configurer) (*Instance, error) {
	if err := d.validate(spec); err != nil {
		return nil, err
	}
	inst, err := d.startVMM(ctx, spec)
	if err != nil {
		return nil, err
	}
	// Under the jailer the spec now names the files staged into the jail.
	spec, l := inst.spec, inst.layout
	log := d.cfg.Logger.With("vm", spec.Name, "pid", inst.PID())
	log.Debug("firecracker started", "api_sock", l.apiSock)

	steps := []vmmproc.Step{
		{Name: "wait for API socket", Do: func(ctx context.Context) error {
			return vmmproc.WaitReady(ctx, inst.Supervisor, d.apiReadiness(inst))
		}},
		{Name: "hand over API socket", Do: func(context.Context) error { return d.files.File(l.apiSock) }},
	}
	config, err := configure(spec, l, inst.client)
	if err != nil {
		// Reported as a step so the VMM, already running, is killed.
		config = []vmmproc.Step{{Name: "translate paths into the jail", Do: func(context.Context) error { return err }}}
	}
	steps = append(steps, config...)
	if spec.Agent.UDSPath != "" {
		steps = append(steps, vmmproc.Step{Name: "hand over vsock socket", Do: func(context.Context) error {
			return d.files.File(spec.Agent.UDSPath)
		}})
	}
	if err := vmmproc.Boot(ctx, inst.Supervisor, spec.OnSpawn, steps...); err != nil {
		return nil, err
	}
	log.Info("firecracker guest " + done)
	return inst, nil
}

// startVMM starts the Firecracker process: through the jail launcher when
// jailed, else as our own child with its output appended to the serial
// log (Firecracker writes the guest's serial console to its stdout).
func (d *Driver) startVMM(ctx context.Context, spec vmm.LaunchSpec) (*Instance, error) {
	if d.cfg.Jailer != nil {
		return d.launchJailed(ctx, spec)
	}
	l, err := d.layoutFor(spec)
	if err != nil {
		return nil, err
	}
	if err := d.files.Prepare("firecracker", spec, l.apiSock, spec.Agent.UDSPath); err != nil {
		return nil, err
	}
	if err := linkDrives(spec); err != nil {
		return nil, err
	}
	return d.newInstance(spec, l, func(cfg vmmproc.Config) (*vmmproc.Supervisor, error) {
		return vmmproc.Spawn(d.command(spec, l), spec.SerialLogPath, cfg)
	})
}

// command builds the VMM command line.
func (d *Driver) command(spec vmm.LaunchSpec, l layout) *exec.Cmd {
	cmd := vmmproc.Command(d.cfg.BinaryPath, []string{"--api-sock", l.apiSockArg, "--id", spec.VMID}, spec.HeldFiles)
	// Drives are given to Firecracker relative to the run dir (driveLink).
	cmd.Dir = spec.RunDir
	if len(d.cfg.ExtraEnv) > 0 {
		cmd.Env = append(os.Environ(), d.cfg.ExtraEnv...)
	}
	return cmd
}

// apiReadiness is how Launch waits for the API: GET / until Firecracker
// answers, within APIReadyTimeout.
func (d *Driver) apiReadiness(inst *Instance) vmmproc.Readiness {
	return vmmproc.Readiness{
		What:   "its API",
		Socket: inst.layout.apiSock,
		Probe: func(ctx context.Context) error {
			_, err := inst.client.InstanceInfo(ctx)
			return err
		},
		Timeout: d.cfg.APIReadyTimeout,
		LogPath: inst.spec.SerialLogPath,
	}
}

func (d *Driver) validate(spec vmm.LaunchSpec) error {
	if err := vmmproc.ValidateSpec(spec); err != nil {
		return err
	}
	if !validInstanceID(spec.VMID) {
		return fmt.Errorf("vm id %q cannot be a firecracker instance id: use at most 64 letters, digits and hyphens", spec.VMID)
	}
	for _, dr := range drives(spec) {
		if !validDeviceID(dr.ID) {
			return fmt.Errorf("drive id %q cannot be a firecracker drive id: use only letters, digits and underscores", dr.ID)
		}
	}
	return nil
}
