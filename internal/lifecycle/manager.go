package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
)

// Config holds the settings of the lifecycle.
type Config struct {
	// Defaults for what a create request leaves out.
	VCPUs         int
	MemoryMiB     int
	DiskSizeBytes int64
	Image         string

	BootTimeout time.Duration
	StopTimeout time.Duration
	// GoldenPerImage is how many golden snapshots (one per shape) an image
	// keeps: making one more deletes the least recently used. 0: no limit;
	// negative: warm creates are off (no golden snapshot is made or used).
	GoldenPerImage int
	// FormatBytes shows a byte count to people (the daemon passes
	// config.FormatBytes, banger's one way to).
	FormatBytes func(int64) string
}

// Ports are what the lifecycle acts through. Overlays and Network may be
// nil (the daemon has none); Driver may be nil (no VMM on this host: VMs
// can be created with NoStart, not booted).
type Ports struct {
	Store     Store
	Files     Files
	Overlays  Overlays
	Network   Network
	Forwards  Forwards
	Driver    Driver
	Specs     Specs
	Agent     Agent
	Guest     Guest
	Processes Processes
	Events    Events
	// Snapshots, SnapshotFiles and Identity make snapshots, rollback and
	// forks; nil Snapshots: this daemon has no snapshot support. Golden
	// (nil: no warm create) says which golden snapshot a create may start from.
	Snapshots     SnapshotStore
	SnapshotFiles SnapshotFiles
	Identity      Identity
	Golden        GoldenKeys
	Now           func() time.Time
	Log           *slog.Logger
	// NewID makes VM IDs (16 hex digits).
	NewID func() string
	// CrashPoint, when set, is called as an operation passes each named
	// step (Crash* constants); only crash tests set it.
	CrashPoint func(step string)
}

// Manager runs VM lifecycles. Operations on one VM are serialized by that
// VM's lock; operations on different VMs run concurrently.
type Manager struct {
	cfg   Config
	ports Ports

	mu        sync.Mutex
	locks     map[string]*sync.Mutex   // VM ID → operation lock
	snapLocks map[string]*sync.RWMutex // snapshot ID → readers (restores) or its writer
	instances map[string]vmm.Instance  // VM ID → running VMM
	watching  map[vmm.Instance]bool
	orphans   []Process
}

// New returns a Manager over ports.
func New(cfg Config, p Ports) *Manager {
	if p.Log == nil {
		p.Log = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, ports: p,
		locks: map[string]*sync.Mutex{}, snapLocks: map[string]*sync.RWMutex{}, instances: map[string]vmm.Instance{}, watching: map[vmm.Instance]bool{}}
}

// Lock takes the operation lock of VM id and returns its release.
func (m *Manager) Lock(id string) func() {
	m.mu.Lock()
	l, ok := m.locks[id]
	if !ok {
		l = &sync.Mutex{}
		m.locks[id] = l
	}
	m.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// lockSnapshot takes snapshot id's lock and returns its release: shared
// by the operations that read its files (restores), exclusive for the ones
// that write or remove them. A VM's lock, when needed, is taken first.
func (m *Manager) lockSnapshot(id string, exclusive bool) func() {
	m.mu.Lock()
	l, ok := m.snapLocks[id]
	if !ok {
		l = &sync.RWMutex{}
		m.snapLocks[id] = l
	}
	m.mu.Unlock()
	if exclusive {
		l.Lock()
		return l.Unlock
	}
	l.RLock()
	return l.RUnlock
}

// Instance returns the VMM this daemon supervises for VM id, or nil.
func (m *Manager) Instance(id string) vmm.Instance {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.instances[id]
}

func (m *Manager) setInstance(id string, inst vmm.Instance) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if inst == nil {
		delete(m.instances, id)
		return
	}
	m.instances[id] = inst
}

// Orphans lists the VMM processes reconcile found that nobody supervises.
func (m *Manager) Orphans() []Process {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Process(nil), m.orphans...)
}

// Get loads a VM by name or ID.
func (m *Manager) Get(ctx context.Context, ref string) (VM, error) {
	if ref == "" {
		return VM{}, Errorf(Invalid, "no VM name given")
	}
	vm, err := m.ports.Store.GetVM(ctx, ref)
	if errors.Is(err, ErrNotFound) {
		return vm, Errorf(NotFound, "no VM named %q", ref).WithHint("`banger vm list` shows your VMs")
	}
	return vm, err
}

// locked loads the VM ref names, takes its lock and loads it again: an
// operation that waited for the lock sees what the one before it left.
func (m *Manager) locked(ctx context.Context, ref string) (VM, func(), error) {
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return VM{}, nil, err
	}
	unlock := m.Lock(vm.ID)
	if vm, err = m.ports.Store.GetVM(ctx, vm.ID); err != nil {
		unlock()
		return VM{}, nil, err
	}
	return vm, unlock, nil
}

// record writes vm in state to, if the state machine allows it, and tells
// watchers. vm keeps its old state when the write fails.
func (m *Manager) record(ctx context.Context, vm *VM, to State) error {
	if !vm.State.CanBecome(to) {
		return fmt.Errorf("vm %q cannot go from %s to %s", vm.Name, vm.State, to)
	}
	next := *vm
	next.State = to
	if err := m.ports.Store.SaveVM(ctx, next); err != nil {
		return fmt.Errorf("record vm %q %s: %w", vm.Name, to, err)
	}
	*vm = next
	m.ports.Events.Changed(next)
	return nil
}

// deleteRecord removes the VM's record and tells watchers.
func (m *Manager) deleteRecord(ctx context.Context, vm VM) error {
	if err := m.ports.Store.DeleteVM(ctx, vm.ID); err != nil {
		return err
	}
	m.ports.Events.Deleted(vm)
	return nil
}

func (m *Manager) crash(step string) {
	if m.ports.CrashPoint != nil {
		m.ports.CrashPoint(step)
	}
}

func (m *Manager) driver() (Driver, error) {
	if m.ports.Driver == nil {
		return nil, Errorf(Unavailable, "no VMM is available on this host").
			WithHint("install firecracker (or qemu-system-x86), or set `vmm` and `firecracker.binary` in the config; `banger doctor` says what is missing")
	}
	return m.ports.Driver, nil
}

// cleanupContext is for undo and recording after a failure: a client that
// hung up must not stop the cleanup.
func cleanupContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// releaseRuntime frees what a VM holds only while it runs: its forwards,
// disk device, network port and run dir. Its disk, address and name stay.
func (m *Manager) releaseRuntime(ctx context.Context, id string) {
	m.ports.Forwards.Stop(id)
	if m.ports.Overlays != nil {
		m.ports.Overlays.Detach(ctx, id)
	}
	if m.ports.Network != nil {
		m.ports.Network.Detach(ctx, id)
	}
	m.ports.Files.RemoveRunDir(id)
}
