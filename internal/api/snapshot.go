package api

import (
	"context"
	"time"
)

// Snapshot methods: pausing a VM, saving its state, and starting VMs from a
// saved state (rollback, fork, warm create). Part of the wire contract.
const (
	// MethodVMPause freezes a running VM's vCPUs (VMRef → VM, state paused).
	MethodVMPause = "vm.pause"
	// MethodVMResume lets a paused VM run again (VMRef → VM).
	MethodVMResume = "vm.resume"
	// MethodVMSnapshot saves a VM's memory, device state and disk at one
	// instant (VMSnapshotRequest → Snapshot, streams progress).
	MethodVMSnapshot = "vm.snapshot"
	// MethodVMRollback returns a VM to one of its snapshots, discarding its
	// current state (VMRollbackRequest → VM, streams progress).
	MethodVMRollback = "vm.rollback"
	// MethodVMFork starts new VMs from a snapshot, or from a VM by
	// snapshotting it first (VMForkRequest → VMList, streams progress).
	MethodVMFork = "vm.fork"
	// MethodSnapshotList lists snapshots (→ SnapshotList).
	MethodSnapshotList = "snapshot.list"
	// MethodSnapshotShow returns one snapshot (SnapshotRef → Snapshot).
	MethodSnapshotShow = "snapshot.show"
	// MethodSnapshotDelete removes a snapshot and its files (SnapshotRef).
	MethodSnapshotDelete = "snapshot.delete"
	// MethodImageWarm makes (or refreshes) an image's golden snapshot for
	// one VM shape (ImageWarmRequest → Snapshot, streams progress).
	MethodImageWarm = "image.warm"
)

// VMPaused is the state of a VM whose VMM runs but whose vCPUs are frozen:
// it keeps its memory, address and disk, and answers nothing until resumed.
const VMPaused VMState = "paused"

// SnapshotState is a snapshot's state: "saving" while its files are being
// written, "ready" once it can be restored.
type SnapshotState string

// Snapshot states.
const (
	SnapshotSaving SnapshotState = "saving"
	SnapshotReady  SnapshotState = "ready"
)

// Snapshot is one saved VM state: guest memory, device state and disk at
// the same instant.
type Snapshot struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// VM is the name of the VM it was taken of (kept for display after that
	// VM is gone) and VMID its ID.
	VM            string        `json:"vm"`
	VMID          string        `json:"vm_id"`
	Image         string        `json:"image"`
	VMM           string        `json:"vmm"`
	VCPUs         int           `json:"vcpus"`
	MemoryMiB     int           `json:"memory_mib"`
	DiskSizeBytes int64         `json:"disk_size_bytes"`
	Golden        bool          `json:"golden"`
	State         SnapshotState `json:"state"`
	// SizeBytes is what its files take on the host (blocks, not apparent size).
	SizeBytes int64     `json:"size_bytes"`
	CreatedAt time.Time `json:"created_at"`
	// LastUsedAt is when a warm create last started from this golden
	// snapshot; absent when none has. An image keeps its most recently
	// used golden snapshots (image.golden_snapshots of them).
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
}

// SnapshotList is the result of snapshot.list.
type SnapshotList struct {
	Snapshots []Snapshot `json:"snapshots"`
}

// SnapshotRef names one snapshot by name or ID.
type SnapshotRef struct {
	Name string `json:"name"`
}

// VMSnapshotRequest snapshots VM Name. Snapshot names the snapshot;
// "<vm>-<YYYYMMDD-HHMMSS>" (UTC) when empty.
type VMSnapshotRequest struct {
	Name     string `json:"name"`
	Snapshot string `json:"snapshot,omitempty"`
}

// VMRollbackRequest returns VM Name to Snapshot, which must be of that VM.
type VMRollbackRequest struct {
	Name     string `json:"name"`
	Snapshot string `json:"snapshot"`
}

// VMForkRequest starts new VMs from Source, a snapshot or a VM (a VM is
// snapshotted first). With Count 0 or 1 the new VM is called Name; with
// Count N > 1 they are Name-1 … Name-N.
type VMForkRequest struct {
	Source string `json:"source"`
	Name   string `json:"name"`
	Count  int    `json:"count,omitempty"`
	// Labels tag each new VM (see VMCreateRequest.Labels).
	Labels map[string]string `json:"labels,omitempty"`
}

// VMDeleteRequest deletes VM Name. A VM with snapshots is refused unless
// Force, which deletes its snapshots too. The wire shape extends VMRef, so
// a client that sends only the name still works.
type VMDeleteRequest struct {
	Name  string `json:"name"`
	Force bool   `json:"force,omitempty"`
}

// ImageWarmRequest makes the golden snapshot VMs of Image with this shape
// start from; zero sizes take the configured defaults.
type ImageWarmRequest struct {
	Image         string `json:"image"`
	VCPUs         int    `json:"vcpus,omitempty"`
	MemoryMiB     int    `json:"memory_mib,omitempty"`
	DiskSizeBytes int64  `json:"disk_size_bytes,omitempty"`
}

// VMPause freezes a running VM.
func (c *Client) VMPause(ctx context.Context, name string) (VM, error) {
	var out VM
	err := c.Call(ctx, MethodVMPause, VMRef{Name: name}, &out, nil)
	return out, err
}

// VMResume lets a paused VM run again.
func (c *Client) VMResume(ctx context.Context, name string) (VM, error) {
	var out VM
	err := c.Call(ctx, MethodVMResume, VMRef{Name: name}, &out, nil)
	return out, err
}

// VMSnapshot saves a VM's state, reporting progress to onEvent.
func (c *Client) VMSnapshot(ctx context.Context, req VMSnapshotRequest, onEvent func(Event)) (Snapshot, error) {
	var out Snapshot
	err := c.Call(ctx, MethodVMSnapshot, req, &out, onEvent)
	return out, err
}

// VMRollback returns a VM to one of its snapshots, reporting progress to onEvent.
func (c *Client) VMRollback(ctx context.Context, req VMRollbackRequest, onEvent func(Event)) (VM, error) {
	var out VM
	err := c.Call(ctx, MethodVMRollback, req, &out, onEvent)
	return out, err
}

// VMFork starts new VMs from a snapshot or VM, reporting progress to onEvent.
func (c *Client) VMFork(ctx context.Context, req VMForkRequest, onEvent func(Event)) ([]VM, error) {
	var out VMList
	err := c.Call(ctx, MethodVMFork, req, &out, onEvent)
	return out.VMs, err
}

// SnapshotList lists every snapshot.
func (c *Client) SnapshotList(ctx context.Context) ([]Snapshot, error) {
	var out SnapshotList
	err := c.Call(ctx, MethodSnapshotList, nil, &out, nil)
	return out.Snapshots, err
}

// SnapshotShow returns one snapshot.
func (c *Client) SnapshotShow(ctx context.Context, name string) (Snapshot, error) {
	var out Snapshot
	err := c.Call(ctx, MethodSnapshotShow, SnapshotRef{Name: name}, &out, nil)
	return out, err
}

// SnapshotDelete removes a snapshot and its files.
func (c *Client) SnapshotDelete(ctx context.Context, name string) error {
	return c.Call(ctx, MethodSnapshotDelete, SnapshotRef{Name: name}, nil, nil)
}

// ImageWarm makes an image's golden snapshot, reporting progress to onEvent.
func (c *Client) ImageWarm(ctx context.Context, req ImageWarmRequest, onEvent func(Event)) (Snapshot, error) {
	var out Snapshot
	err := c.Call(ctx, MethodImageWarm, req, &out, onEvent)
	return out, err
}
