// Package qemu is banger's second VMM driver: qemu-system-x86_64 with the
// microvm machine (virtio-mmio devices, no PCI, no firmware to speak of).
// It boots the same LaunchSpec as Firecracker, runs on KVM when the host
// has usable KVM and under TCG software emulation when it does not, and is
// controlled over QMP. The guest agent is reached over vhost-vsock when the
// host has /dev/vhost-vsock, else over one virtio-serial port.
package qemu

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmproc"
)

// Socket file names inside LaunchSpec.RunDir.
const (
	qmpSocketName   = "qmp.sock"
	agentSocketName = "agent.sock"
)

// maxSocketPath is the longest path a Unix socket address holds
// (sun_path is 108 bytes with the terminating NUL).
const maxSocketPath = 107

// Defaults for Config's zero values.
const (
	DefaultBinary          = "qemu-system-x86_64"
	DefaultQMPReadyTimeout = 10 * time.Second
	DefaultStopTimeout     = 10 * time.Second
	DefaultSnapshotTimeout = 5 * time.Minute
)

// Owner is a uid/gid that sockets and log files are handed to, so an
// unprivileged owner can use a VM whose VMM was started by root.
type Owner = vmmproc.Owner

// Config configures the QEMU driver. The zero value runs
// qemu-system-x86_64 from $PATH with acceleration and agent transport
// detected from the host.
type Config struct {
	// BinaryPath is the QEMU binary; default qemu-system-x86_64.
	BinaryPath string
	// Accel forces an acceleration; empty detects it (Host.DetectAccel).
	Accel Accel
	// Transport forces the agent transport; empty detects it
	// (Host.DetectTransport).
	Transport Transport
	// TSCKHz overrides the host TSC frequency given to TCG guests; zero
	// reads it from the host (Host.TSCKHz).
	TSCKHz int
	// Owner, when set, receives the run dir, sockets and log files.
	Owner *Owner
	// QMPReadyTimeout bounds the wait for QMP to answer after the process
	// starts; default 10 s.
	QMPReadyTimeout time.Duration
	// StopTimeout is how long Stop waits for a clean guest shutdown when
	// the caller passes no timeout; default 10 s.
	StopTimeout time.Duration
	// SnapshotTimeout bounds writing a snapshot's state (CreateSnapshot)
	// and loading it (Restore); default 5 min, far above the seconds a
	// few GiB take, so only a stuck migration hits it.
	SnapshotTimeout time.Duration
	// Host is where detection looks; the zero value is the real host.
	Host Host
	// ConsoleLogMax caps the serial console log (vmmproc.CapLog); zero
	// means vmmproc.DefaultConsoleLogMax.
	ConsoleLogMax int64
	// Logger receives driver progress; default discards.
	Logger *slog.Logger
}

// Driver launches and adopts QEMU microvm VMMs. It implements vmm.Driver.
type Driver struct {
	cfg Config
	// files hands the VM's files to cfg.Owner; tests replace its Chown to
	// observe the hand-over without root.
	files vmmproc.HandOver
}

var (
	_ vmm.Driver      = (*Driver)(nil)
	_ vmm.Instance    = (*Instance)(nil)
	_ vmm.Pauser      = (*Instance)(nil)
	_ vmm.AgentDialer = (*Instance)(nil)
	_ vmm.Snapshotter = (*Instance)(nil)
	_ vmm.Restorer    = (*Driver)(nil)
)

// New returns a driver with cfg's zero values replaced by defaults.
func New(cfg Config) *Driver {
	if cfg.BinaryPath == "" {
		cfg.BinaryPath = DefaultBinary
	}
	if cfg.QMPReadyTimeout <= 0 {
		cfg.QMPReadyTimeout = DefaultQMPReadyTimeout
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	if cfg.SnapshotTimeout <= 0 {
		cfg.SnapshotTimeout = DefaultSnapshotTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Driver{cfg: cfg, files: vmmproc.HandOver{Owner: cfg.Owner, Chown: os.Lchown}}
}

// Name is the driver's config name.
func (d *Driver) Name() string { return "qemu" }

// Capabilities reports pause and snapshot support and the acceleration a
// launch would use now. A snapshot is QEMU's migration stream written to
// one file (SnapshotFiles.State; Memory is unused), restored with
// -incoming.
func (d *Driver) Capabilities() vmm.Capabilities {
	accel, _ := d.accel()
	return vmm.Capabilities{Pause: true, Snapshots: true, Accel: string(accel)}
}

func (d *Driver) accel() (Accel, string) {
	if d.cfg.Accel != "" {
		return d.cfg.Accel, "set in the configuration"
	}
	return d.cfg.Host.DetectAccel()
}

func (d *Driver) transport() (Transport, string) {
	if d.cfg.Transport != "" {
		return d.cfg.Transport, "set in the configuration"
	}
	return d.cfg.Host.DetectTransport()
}

// layout is where one VM's sockets are.
type layout struct {
	qmpSock   string
	agentSock string // empty unless the transport is virtio-serial
}

// plan is everything Launch decided before starting QEMU.
type plan struct {
	layout
	opts Options
}

// Launch starts QEMU for spec and returns once QMP reports the guest
// running. On any failure the process is killed and reaped and its sockets
// removed before the error, naming the failed step, is returned. QEMU runs
// in its own process group and outlives ctx and the daemon.
func (d *Driver) Launch(ctx context.Context, spec vmm.LaunchSpec) (vmm.Instance, error) {
	inst, err := d.start(ctx, spec, Options{}, guestRunning, nil)
	if err != nil {
		return nil, fmt.Errorf("launch qemu for vm %q: %w", spec.Name, err)
	}
	return inst, nil
}

// start is what Launch and Restore share: plan spec (want's Accel,
// Transport and Incoming, when set, are taken as given), write the files,
// spawn and supervise QEMU, wait until QMP reports a status ready accepts,
// run the caller's steps on the new instance, and hand the sockets over.
// Any failure kills QEMU and waits until it is gone (vmmproc.Boot).
func (d *Driver) start(ctx context.Context, spec vmm.LaunchSpec, want Options, ready func(Status) error, steps func(*Instance) []vmmproc.Step) (*Instance, error) {
	p, err := d.plan(spec, want)
	if err != nil {
		return nil, err
	}
	args, err := Args(spec, p.opts)
	if err != nil {
		return nil, err
	}
	if err := d.files.Prepare("qemu", spec, p.qmpSock, p.agentSock); err != nil {
		return nil, err
	}
	inst, err := d.newInstance(spec, p.layout, p.opts, func(cfg vmmproc.Config) (*vmmproc.Supervisor, error) {
		cmd := vmmproc.Command(d.cfg.BinaryPath, args, spec.HeldFiles)
		return vmmproc.Spawn(cmd, vmmLogPath(spec), cfg)
	})
	if err != nil {
		return nil, err
	}
	log := d.cfg.Logger.With("vm", spec.Name, "pid", inst.PID())
	log.Debug("qemu started", "accel", p.opts.Accel, "transport", p.opts.Transport, "qmp_sock", p.qmpSock, "incoming", p.opts.Incoming)

	all := []vmmproc.Step{{Name: "wait for QMP", Do: func(ctx context.Context) error {
		return vmmproc.WaitReady(ctx, inst.Supervisor, d.qmpReadiness(inst, ready))
	}}}
	if steps != nil {
		all = append(all, steps(inst)...)
	}
	all = append(all, vmmproc.Step{Name: "hand over sockets", Do: func(context.Context) error {
		for _, s := range []string{p.qmpSock, p.agentSock} {
			if s == "" {
				continue
			}
			if err := d.files.File(s); err != nil {
				return err
			}
		}
		return nil
	}})
	if err := vmmproc.Boot(ctx, inst.Supervisor, spec.OnSpawn, all...); err != nil {
		return nil, err
	}
	log.Info("qemu guest started", "accel", p.opts.Accel, "transport", p.opts.Transport, "restored", p.opts.Incoming != "")
	return inst, nil
}

// guestRunning is Launch's readiness: QEMU boots the guest at once.
func guestRunning(st Status) error {
	if !st.Running {
		return fmt.Errorf("guest is %s, not running", st.Status)
	}
	return nil
}

// vmmLogPath is where QEMU's stdout and stderr go: the VMM log, or the
// serial log when the spec has none.
func vmmLogPath(spec vmm.LaunchSpec) string {
	if spec.VMMLogPath != "" {
		return spec.VMMLogPath
	}
	return spec.SerialLogPath
}

// qmpReadiness is how start waits for QEMU: query-status over QMP until
// ready accepts the status, within QMPReadyTimeout.
func (d *Driver) qmpReadiness(inst *Instance, ready func(Status) error) vmmproc.Readiness {
	return vmmproc.Readiness{
		What:   "QMP",
		Socket: inst.layout.qmpSock,
		Probe: func(ctx context.Context) error {
			st, err := inst.Status(ctx)
			if err == nil {
				err = ready(st)
			}
			return err
		},
		Timeout: d.cfg.QMPReadyTimeout,
		LogPath: vmmLogPath(inst.spec),
	}
}

// plan validates spec and decides acceleration, agent transport and
// socket paths. want's Accel and Transport, when set, are used instead of
// the host's (a restore recreates the machine that was saved), and its
// Incoming is passed on.
func (d *Driver) plan(spec vmm.LaunchSpec, want Options) (plan, error) {
	if err := validate(spec); err != nil {
		return plan{}, err
	}
	accel, why := d.accel()
	if want.Accel != "" {
		accel, why = want.Accel, "the snapshot was taken under it"
	}
	tr, _ := d.transport()
	if want.Transport != "" {
		tr = want.Transport
	}
	p := plan{
		layout: layoutFor(spec, tr),
		opts:   Options{Accel: accel, Transport: tr, Incoming: want.Incoming},
	}
	p.opts.QMPSocket, p.opts.AgentSocket = p.qmpSock, p.agentSock
	for _, s := range []string{p.qmpSock, p.agentSock} {
		if len(s) > maxSocketPath {
			return plan{}, fmt.Errorf("socket path %s is longer than the %d bytes a Unix socket allows; use a shorter run dir", s, maxSocketPath)
		}
	}
	if accel == AccelTCG {
		p.opts.TSCKHz = d.cfg.TSCKHz
		if p.opts.TSCKHz <= 0 {
			khz, err := d.cfg.Host.TSCKHz()
			if err != nil {
				// The guest usually calibrates on its own; it only
				// sometimes hangs without the hint.
				d.cfg.Logger.Warn("no host TSC frequency for the TCG guest; it may hang calibrating", "vm", spec.Name, "err", err)
			}
			p.opts.TSCKHz = khz
		}
		d.cfg.Logger.Debug("using TCG", "vm", spec.Name, "reason", why)
	}
	return p, nil
}

func layoutFor(spec vmm.LaunchSpec, tr Transport) layout {
	l := layout{qmpSock: filepath.Join(spec.RunDir, qmpSocketName)}
	if tr == TransportSerial {
		l.agentSock = spec.Agent.UDSPath
		if l.agentSock == "" {
			l.agentSock = filepath.Join(spec.RunDir, agentSocketName)
		}
	}
	return l
}

func validate(spec vmm.LaunchSpec) error {
	if err := vmmproc.ValidateSpec(spec); err != nil {
		return err
	}
	// The id is QEMU's guest name and how Attach recognizes the process.
	if !validVMID(spec.VMID) {
		return fmt.Errorf("vm id %q must be at most 64 letters, digits, '-' and '_'", spec.VMID)
	}
	return nil
}

func validVMID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !isLetter(c) && !isDigit(c) && c != '-' && c != '_' {
			return false
		}
	}
	return true
}
