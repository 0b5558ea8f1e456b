package firecracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
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
type Owner struct {
	UID, GID int
}

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
	// chown is os.Lchown; tests replace it to observe ownership hand-over
	// without root.
	chown func(path string, uid, gid int) error
}

var (
	_ vmm.Driver      = (*Driver)(nil)
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
	return &Driver{cfg: cfg, chown: os.Lchown}
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
	if err := d.validate(spec); err != nil {
		return nil, err
	}
	inst, err := d.startVMM(ctx, spec)
	if err != nil {
		return nil, err
	}
	// Under the jailer the spec now names the files staged into the jail.
	spec, l := inst.spec, inst.layout
	log := d.cfg.Logger.With("vm", spec.Name, "pid", inst.pid)
	log.Debug("firecracker started", "api_sock", l.apiSock)

	fail := func(step string, err error) (*Instance, error) {
		// Kill waits for the reaper, which removes the sockets.
		if kerr := inst.Kill(); kerr != nil {
			log.Warn("kill firecracker after failed launch", "err", kerr)
		}
		return nil, fmt.Errorf("%s: %w", step, err)
	}
	if spec.OnSpawn != nil {
		if err := spec.OnSpawn(inst.Process()); err != nil {
			return fail("record the firecracker process", err)
		}
	}
	if err := d.waitForAPI(ctx, inst, spec); err != nil {
		return fail("wait for API socket", err)
	}
	if err := d.handOver(l.apiSock); err != nil {
		return fail("hand over API socket", err)
	}
	if step, err := d.boot(ctx, inst.client, spec, l); err != nil {
		return fail(step, err)
	}
	if spec.Agent.UDSPath != "" {
		if err := d.handOver(spec.Agent.UDSPath); err != nil {
			return fail("hand over vsock socket", err)
		}
	}
	log.Info("firecracker guest started")
	return inst, nil
}

// startVMM starts the Firecracker process: through the jail launcher when
// jailed, else as our own child.
func (d *Driver) startVMM(ctx context.Context, spec vmm.LaunchSpec) (*Instance, error) {
	if d.cfg.Jailer != nil {
		return d.launchJailed(ctx, spec)
	}
	l, err := d.layoutFor(spec)
	if err != nil {
		return nil, err
	}
	if err := d.prepareFiles(spec, l); err != nil {
		return nil, err
	}
	return d.start(d.command(spec, l), spec, l)
}

func (d *Driver) validate(spec vmm.LaunchSpec) error {
	var missing []string
	for _, f := range [][2]string{
		{"vm_id", spec.VMID}, {"run_dir", spec.RunDir}, {"kernel_path", spec.KernelPath},
		{"root_drive.path", spec.RootDrive.Path}, {"serial_log_path", spec.SerialLogPath},
	} {
		if f[1] == "" {
			missing = append(missing, f[0])
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("launch spec is missing %s", strings.Join(missing, ", "))
	}
	if spec.VCPUs < 1 || spec.MemoryMiB < 1 {
		return fmt.Errorf("launch spec needs vcpus and memory_mib of at least 1 (got %d, %d)", spec.VCPUs, spec.MemoryMiB)
	}
	if !validInstanceID(spec.VMID) {
		return fmt.Errorf("vm id %q cannot be a firecracker instance id: use at most 64 letters, digits and hyphens", spec.VMID)
	}
	return nil
}

// prepareFiles creates the run dir and log files and frees the socket paths
// Firecracker will bind.
func (d *Driver) prepareFiles(spec vmm.LaunchSpec, l layout) error {
	if err := os.MkdirAll(spec.RunDir, 0o700); err != nil {
		return fmt.Errorf("create run dir: %w", err)
	}
	if err := d.handOver(spec.RunDir); err != nil {
		return err
	}
	if err := vmmproc.ReclaimSocket(l.apiSock, ErrSocketInUse); err != nil {
		if errors.Is(err, ErrSocketInUse) {
			return fmt.Errorf("another firecracker is using %s: %w", l.apiSock, ErrSocketInUse)
		}
		return fmt.Errorf("reclaim API socket: %w", err)
	}
	if spec.Agent.UDSPath != "" {
		if err := vmmproc.ReclaimSocket(spec.Agent.UDSPath, ErrSocketInUse); err != nil {
			return fmt.Errorf("reclaim vsock socket: %w", err)
		}
	}
	// Firecracker opens the log path but does not create it.
	for _, p := range []string{spec.SerialLogPath, spec.VMMLogPath} {
		if p == "" {
			continue
		}
		if err := createLog(p); err != nil {
			return err
		}
		if err := d.handOver(p); err != nil {
			return err
		}
	}
	return nil
}

// handOver gives path to Config.Owner, if one is set.
func (d *Driver) handOver(path string) error {
	o := d.cfg.Owner
	if o == nil {
		return nil
	}
	if err := d.chown(path, o.UID, o.GID); err != nil {
		return fmt.Errorf("chown %s to %d:%d: %w", path, o.UID, o.GID, err)
	}
	return nil
}
