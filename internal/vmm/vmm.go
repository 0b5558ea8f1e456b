// Package vmm defines what banger needs from a virtual machine monitor: a
// narrow Driver that launches a VM from a LaunchSpec and hands back an
// Instance to supervise. Optional abilities (pause, snapshots, agent dialing)
// are separate small interfaces an Instance may also implement; callers check
// with a type assertion instead of every driver stubbing "not supported".
package vmm

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"time"
)

// ErrNotSupported is returned when a driver or instance lacks an optional ability.
var ErrNotSupported = errors.New("not supported by this VMM driver")

// Drive is one block device given to the guest.
type Drive struct {
	ID       string `json:"id"`
	Path     string `json:"path"`
	ReadOnly bool   `json:"read_only"`
}

// NetInterface attaches the guest to a host tap device.
type NetInterface struct {
	ID      string `json:"id"`
	TapName string `json:"tap_name"`
	MAC     string `json:"mac"`
}

// AgentChannel is how the host reaches the guest agent. Firecracker uses a
// hybrid vsock (a Unix socket on the host, UDSPath); QEMU uses vhost-vsock
// (GuestCID) or a virtio-serial port exposed as a Unix socket (UDSPath).
type AgentChannel struct {
	GuestCID uint32 `json:"guest_cid"`
	UDSPath  string `json:"uds_path"`
	Port     uint32 `json:"port"`
}

// LaunchSpec is everything a driver needs to boot one VM. It is the same for
// every driver; a driver ignores what it has no use for.
type LaunchSpec struct {
	VMID string `json:"vm_id"`
	Name string `json:"name"`

	KernelPath string `json:"kernel_path"`
	InitrdPath string `json:"initrd_path,omitempty"`
	BootArgs   string `json:"boot_args"`

	RootDrive   Drive          `json:"root_drive"`
	ExtraDrives []Drive        `json:"extra_drives,omitempty"`
	Network     []NetInterface `json:"network,omitempty"`

	VCPUs     int `json:"vcpus"`
	MemoryMiB int `json:"memory_mib"`

	Agent AgentChannel `json:"agent"`

	// RunDir is a per-VM directory owned by banger for sockets (API, QMP, vsock).
	RunDir string `json:"run_dir"`
	// SerialLogPath receives the guest serial console.
	SerialLogPath string `json:"serial_log_path"`
	// VMMLogPath receives the VMM's own log.
	VMMLogPath string `json:"vmm_log_path"`

	// OnSpawn, when set, is called with the VMM's process as soon as it
	// exists, before the driver configures it (API, QMP), so the caller can
	// record which process to stop if it dies before Launch returns. An
	// error aborts the launch: the process is killed.
	OnSpawn func(Process) error `json:"-"`
	// HeldFiles are inherited by the VMM process (as descriptors 3, 4, ...)
	// and held open by it for its whole life, unused: a lock on the VM's disk
	// then lasts exactly as long as the VMM. A driver whose VMM is started
	// by someone else (a jailer launched by the root helper) cannot pass them.
	HeldFiles []*os.File `json:"-"`
}

// Process identifies one VMM process for its whole life: a PID alone may be
// reused after the process exits, the pair with its start time cannot.
type Process struct {
	PID int `json:"pid"`
	// StartTime is field 22 of /proc/PID/stat (clock ticks after boot). Zero
	// means unknown: Attach then checks only the command line.
	StartTime uint64 `json:"start_time"`
}

// Capabilities describes what a driver can do on this host.
type Capabilities struct {
	Pause     bool `json:"pause"`
	Snapshots bool `json:"snapshots"`
	// Accel is the acceleration in use: "kvm" or "tcg".
	Accel string `json:"accel"`
}

// ExitStatus is how a VMM process ended.
type ExitStatus struct {
	// Code is the exit code, or -1 when the process died from a signal or
	// was not our child (see NotChild).
	Code int `json:"code"`
	// Signal names the signal that ended the process, if any.
	Signal string `json:"signal,omitempty"`
	// Err describes a supervision failure (e.g. the exit could not be observed).
	Err string `json:"err,omitempty"`
	// NotChild says the process was adopted (Attach), so it is not the
	// daemon's child and how it ended cannot be known: a guest that powered
	// off and a SIGKILL look the same.
	NotChild bool `json:"not_child,omitempty"`
}

// Clean reports whether the process is known to have exited by itself with
// code 0. An unknown exit is not clean.
func (e ExitStatus) Clean() bool {
	return e.Code == 0 && e.Signal == "" && e.Err == "" && !e.NotChild
}

func (e ExitStatus) String() string {
	switch {
	case e.Err != "":
		return e.Err
	case e.NotChild:
		return "exit status unknown (not our child)"
	case e.Signal != "":
		return "killed by signal " + e.Signal
	default:
		return "exited with code " + strconv.Itoa(e.Code)
	}
}

// Driver launches VMs with one VMM implementation.
type Driver interface {
	// Name is the config name of the driver: "firecracker" or "qemu".
	Name() string
	Capabilities() Capabilities
	// Launch starts the VMM and boots the guest. It returns once the VMM has
	// accepted the configuration and started the guest; guest readiness is
	// the agent's business.
	Launch(ctx context.Context, spec LaunchSpec) (Instance, error)
	// Attach adopts a VMM process that is still running from an earlier daemon
	// (reconcile after restart). It fails if the process is gone, started at
	// another time than proc.StartTime (when known), or is not this VM's VMM.
	Attach(ctx context.Context, spec LaunchSpec, proc Process) (Instance, error)
}

// Instance is one running VMM process.
type Instance interface {
	PID() int
	// Stop asks the guest to shut down and waits up to timeout for the VMM to
	// exit, then kills it. It returns once the process is gone.
	Stop(ctx context.Context, timeout time.Duration) error
	// Kill ends the VMM process immediately and waits for it to be gone.
	Kill() error
	// Done is closed when the VMM process has exited.
	Done() <-chan struct{}
	// Exit reports how the process ended; valid after Done is closed.
	Exit() ExitStatus
}

// Pauser is an Instance that can pause and resume its vCPUs.
type Pauser interface {
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
}

// SnapshotFiles names the files of one VMM snapshot. Firecracker writes
// the device state to State and guest memory to Memory; QEMU writes its
// whole migration stream (devices and memory) to State and leaves Memory
// unused. Both paths are host paths the caller chose (the driver maps them
// into a jail when it has one).
type SnapshotFiles struct {
	State  string `json:"state"`
	Memory string `json:"memory,omitempty"`
}

// Snapshotter is an Instance that can write a snapshot of its VM. The VM
// must be paused (Pauser) and stays paused; the caller copies the disk
// while it is, then resumes.
type Snapshotter interface {
	CreateSnapshot(ctx context.Context, files SnapshotFiles) error
}

// Restorer is a Driver that can start a VMM from a snapshot instead of
// booting a kernel. spec is the VM to run (its disk, tap, agent socket, run
// dir, vCPUs and memory, which must equal the snapshot's); the devices come
// back in the state they were saved in, attached to spec's host resources.
// The guest runs when Restore returns (its agent may need a moment to
// reopen its channel). OnSpawn and HeldFiles work as for Launch.
type Restorer interface {
	Restore(ctx context.Context, spec LaunchSpec, files SnapshotFiles) (Instance, error)
}

// AgentDialer is an Instance that can open a stream to the guest agent.
type AgentDialer interface {
	DialAgent(ctx context.Context) (net.Conn, error)
}
