package lifecycle

import (
	"context"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
)

// SnapshotState is a snapshot's state as last recorded.
type SnapshotState string

// The snapshot states. A snapshot is recorded Saving before any of its
// files exist; reconcile removes a snapshot still Saving (the daemon died
// mid-save) together with its files, so there is never half a snapshot.
const (
	SnapshotSaving SnapshotState = "saving"
	SnapshotReady  SnapshotState = "ready"
)

// Snapshot is one saved VM state: guest memory, device state and the VM's
// disk at the same instant. Fork and warm create start new VMs from it;
// rollback returns its VM to it.
type Snapshot struct {
	ID, Name string
	// VMID and VMName are the VM it was taken of. The VM may be gone since
	// (a golden snapshot's throwaway VM, or a VM deleted with --force
	// keeping nothing); VMName stays for display.
	VMID, VMName       string
	ImageID, ImageName string
	// VMM is the driver that wrote it; only that driver restores it.
	VMM              string
	VCPUs, MemoryMiB int
	DiskSizeBytes    int64
	// Golden marks an image's warm-start snapshot (made by warm create or
	// `banger image warm`); Key says what it is valid for (image, kernel,
	// agent and VMM versions, vCPUs, memory, disk size): a golden snapshot
	// whose Key differs from the current one is stale and not used.
	Golden bool
	Key    string
	// Network is the VM's network settings at save time (opaque, as VM.Network).
	Network []byte
	State   SnapshotState
	// SizeBytes is what its files take on the host (blocks, not apparent size).
	SizeBytes int64
	CreatedAt time.Time
	// LastUsedAt is when a warm create last restored it (zero: never);
	// only golden snapshots are used this way.
	LastUsedAt time.Time
}

// SnapshotStore keeps snapshots (the same database as the VMs).
type SnapshotStore interface {
	// InsertSnapshot records a new snapshot; ErrExists when its name is taken.
	InsertSnapshot(ctx context.Context, s Snapshot) error
	SaveSnapshot(ctx context.Context, s Snapshot) error
	// GetSnapshot finds a snapshot by ID or name; ErrNotFound when none.
	GetSnapshot(ctx context.Context, ref string) (Snapshot, error)
	ListSnapshots(ctx context.Context) ([]Snapshot, error)
	// DeleteSnapshot removes the record; ErrNotFound when there is none.
	DeleteSnapshot(ctx context.Context, id string) error
}

// SnapshotFiles are a snapshot's files under the state dir.
type SnapshotFiles interface {
	// Paths are where the VMM writes (and reads) snapshot id's state.
	Paths(id string) vmm.SnapshotFiles
	// CheckFits refuses a save of about size bytes the host has no room for.
	CheckFits(id string, size int64) error
	// Make creates snapshot id's directory, empty.
	Make(id string) error
	// SaveDisk copies VM vmID's disk into snapshot id (reflink when the
	// file system can, else a sparse copy). The VM is paused meanwhile.
	SaveDisk(ctx context.Context, vmID, id string) error
	// RestoreDisk replaces VM vmID's disk with a copy of snapshot id's,
	// atomically (the VM's old disk stays whole until the new one is). A
	// new VM (fork, warm create) has no disk nor state dir yet: the copy is
	// its disk, made as Files.Prepare would make one (reflink, else sparse).
	RestoreDisk(ctx context.Context, id, vmID string) error
	// Verify checks that snapshot s's files are all there and plausible,
	// so a restore is refused before anything of the target VM changes.
	Verify(s Snapshot) error
	// Size is what snapshot id's files take on the host.
	Size(id string) int64
	// Remove deletes snapshot id's files (a missing one is not an error).
	Remove(id string) error
	// CleanLeftovers removes snapshot dirs that no snapshot in known owns.
	CleanLeftovers(known map[string]bool)
}

// Identity gives a VM restored from a snapshot of another VM (fork, warm
// create) its own identity once its agent answers: hostname, MAC and
// address, machine-id, fresh SSH host keys (re-pinned on the host),
// reseeded RNG and the host's time; then the usual guest setup.
type Identity interface {
	Reidentify(ctx context.Context, vm VM, inst vmm.Instance, p Progress) error
}

// GoldenKeys says what golden snapshot a VM of image img with vm's shape
// may start from: "" when warm starts are impossible for it.
type GoldenKeys interface {
	Key(vm VM, img Image) string
}
