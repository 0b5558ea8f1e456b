package lifecycle

import (
	"context"
	"errors"
	"os"

	"github.com/banger-dev/banger/internal/vmm"
)

// Store errors the Store port returns (wrapped or not).
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
)

// Store keeps VMs and images.
type Store interface {
	// GetVM finds a VM by ID or name; ErrNotFound when there is none.
	GetVM(ctx context.Context, ref string) (VM, error)
	ListVMs(ctx context.Context) ([]VM, error)
	// InsertVM records a new VM; ErrExists when its name is taken.
	InsertVM(ctx context.Context, vm VM) error
	// SaveVM writes the VM's observed state (State through ExitStatus).
	SaveVM(ctx context.Context, vm VM) error
	// DeleteVM removes the VM's record; ErrNotFound when there is none.
	DeleteVM(ctx context.Context, id string) error
	// GetImage finds an image by ID or name; ErrNotFound when there is none.
	GetImage(ctx context.Context, ref string) (Image, error)
}

// Files are a VM's files: its disk, its run dir (sockets), its state dir.
type Files interface {
	// CheckFits refuses a disk of size bytes that the host has no room for.
	CheckFits(size int64) error
	// Prepare gives a new VM its own disk.
	Prepare(ctx context.Context, vm VM, img Image) error
	// LockDisk locks the VM's disk for one VMM; the VMM inherits the
	// returned file and with it the lock. It fails when another process
	// holds the lock.
	LockDisk(id string) (*os.File, error)
	MakeRunDir(id string) error
	RemoveRunDir(id string)
	// RemoveAll removes every file of the VM: run dir, jail, state dir.
	RemoveAll(id string) error
	// CleanLeftovers removes the files of VMs not in known that no live
	// process uses.
	CleanLeftovers(known map[string]bool)
}

// Overlays attaches a VM's disk as a device for each boot (dm snapshots).
// A daemon without them boots the disk file itself.
type Overlays interface {
	// Attach builds the VM's disk device and returns its path; on error
	// nothing of it is left.
	Attach(ctx context.Context, vm VM, img Image) (string, error)
	Detach(ctx context.Context, id string)
	// CleanOrphans removes devices of VMs that are not running.
	CleanOrphans(ctx context.Context, running map[string]bool)
}

// Network connects a VM to the host's VM network while it runs.
type Network interface {
	// Bridge names what VMs attach to, for progress.
	Bridge() string
	// Attach creates the VM's port; it returns the interface its VMM gets
	// and the guest kernel arguments that configure it.
	Attach(ctx context.Context, vm VM) (vmm.NetInterface, []string, error)
	Detach(ctx context.Context, id string)
	// Forget drops the VM's name (DNS) and address for good.
	Forget(name string)
	// RemoveStaleTaps removes ports of VMs that are not running.
	RemoveStaleTaps(ctx context.Context, running map[string]bool)
}

// Forwards are a running VM's host port forwards.
type Forwards interface {
	Start(ctx context.Context, vm VM)
	Stop(id string)
}

// Driver is the VMM driver (vmm.Driver has these and more).
type Driver interface {
	Name() string
	Launch(ctx context.Context, spec vmm.LaunchSpec) (vmm.Instance, error)
	Attach(ctx context.Context, spec vmm.LaunchSpec, proc vmm.Process) (vmm.Instance, error)
}

// Specs turns a VM into what its VMM boots, and reads its console.
type Specs interface {
	LaunchSpec(vm VM, img Image) vmm.LaunchSpec
	// ConsoleExcerpt is the part of the VM's serial console a boot error
	// quotes ("" when there is nothing useful).
	ConsoleExcerpt(id string) string
}

// Agent reaches the guest agent.
type Agent interface {
	// Wait polls the agent until it answers (returning its version), the
	// VMM exits, or ctx ends.
	Wait(ctx context.Context, inst vmm.Instance) (string, error)
}

// Guest sets a guest up once its agent answers, and forgets it.
type Guest interface {
	Setup(ctx context.Context, vm VM, inst vmm.Instance, p Progress) error
	// Forget drops what the host keeps about the guest (pinned host keys).
	Forget(vm VM)
}

// Process is a live VMM process found on the host.
type Process struct {
	PID     int
	VMID    string
	Cmdline string
}

// Processes looks at the host's processes.
type Processes interface {
	// Scan maps VM IDs to the live VMM processes of this daemon's layout.
	Scan() map[string]Process
	// Alive reports whether pid runs (a zombie does not).
	Alive(pid int) bool
}

// Events tells watchers about changes.
type Events interface {
	Changed(vm VM)
	Deleted(vm VM)
}

// Report is one progress line of an operation. Done and Total count
// within a stage when known (bytes, steps).
type Report struct {
	VM, Stage, Message string
	Done, Total        int64
}

// Progress receives an operation's progress.
type Progress func(Report)
