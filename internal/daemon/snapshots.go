package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/lifecycle"
)

// registerSnapshots adds the pause, snapshot, rollback, fork and warm
// methods to the API server; the work is the lifecycle's.
func (d *Daemon) registerSnapshots(s *api.Server) {
	m := d.vms
	api.Handle(s, api.MethodVMPause, func(ctx context.Context, req api.VMRef, _ api.Progress) (api.VM, error) {
		vm, err := m.lc.Pause(ctx, req.Name)
		return m.present(ctx, vm, err)
	})
	api.Handle(s, api.MethodVMResume, func(ctx context.Context, req api.VMRef, _ api.Progress) (api.VM, error) {
		vm, err := m.lc.Resume(ctx, req.Name)
		return m.present(ctx, vm, err)
	})
	api.Handle(s, api.MethodVMSnapshot, func(ctx context.Context, req api.VMSnapshotRequest, p api.Progress) (api.Snapshot, error) {
		sn, err := m.lc.Snapshot(ctx, req.Name, req.Snapshot, progressTo(p))
		return snapshotToAPI(sn), apiError(err)
	})
	api.Handle(s, api.MethodVMRollback, func(ctx context.Context, req api.VMRollbackRequest, p api.Progress) (api.VM, error) {
		vm, err := m.lc.Rollback(ctx, req.Name, req.Snapshot, progressTo(p))
		return m.present(ctx, vm, err)
	})
	api.Handle(s, api.MethodVMFork, m.Fork)
	api.Handle(s, api.MethodSnapshotList, func(ctx context.Context, _ struct{}, _ api.Progress) (api.SnapshotList, error) {
		list, err := m.lc.ListSnapshots(ctx)
		out := api.SnapshotList{Snapshots: make([]api.Snapshot, 0, len(list))}
		for _, sn := range list {
			out.Snapshots = append(out.Snapshots, snapshotToAPI(sn))
		}
		return out, apiError(err)
	})
	api.Handle(s, api.MethodSnapshotShow, func(ctx context.Context, req api.SnapshotRef, _ api.Progress) (api.Snapshot, error) {
		sn, err := m.lc.GetSnapshot(ctx, req.Name)
		return snapshotToAPI(sn), apiError(err)
	})
	api.Handle(s, api.MethodSnapshotDelete, func(ctx context.Context, req api.SnapshotRef, _ api.Progress) (struct{}, error) {
		return struct{}{}, apiError(m.lc.DeleteSnapshot(ctx, req.Name))
	})
	api.Handle(s, api.MethodImageWarm, func(ctx context.Context, req api.ImageWarmRequest, p api.Progress) (api.Snapshot, error) {
		sn, err := m.lc.Warm(ctx, lifecycle.WarmRequest{
			Image: req.Image, VCPUs: req.VCPUs, MemoryMiB: req.MemoryMiB, DiskSizeBytes: req.DiskSizeBytes,
		}, progressTo(p))
		return snapshotToAPI(sn), apiError(err)
	})
}

// Fork starts new VMs from a snapshot or a VM. They keep the source's
// isolation and egress policy but not its port forwards: two VMs cannot listen on one host
// port, and a fork's forwards are its owner's to add.
func (m *vmManager) Fork(ctx context.Context, req api.VMForkRequest, p api.Progress) (api.VMList, error) {
	if err := lifecycle.ValidateName(req.Name); err != nil {
		return api.VMList{}, apiError(err)
	}
	lreq := lifecycle.ForkRequest{Source: req.Source, Name: req.Name, Count: req.Count, Labels: req.Labels}
	if src, ok := m.sourceSettings(ctx, req.Source); ok && (src.Isolated || src.Egress != nil) {
		lreq.Network = netSettings{Isolated: src.Isolated, Egress: src.Egress}.json()
	}
	vms, err := m.lc.Fork(ctx, lreq, progressTo(p))
	if err != nil {
		return api.VMList{}, apiError(forkFailure(err, vms))
	}
	out := api.VMList{VMs: make([]api.VM, 0, len(vms))}
	for _, vm := range vms {
		v, err := m.present(ctx, vm, nil)
		if err != nil {
			return out, err
		}
		out.VMs = append(out.VMs, v)
	}
	return out, nil
}

// forkFailure is the error of a fork of several VMs of which some were
// made: the call's answer is the error alone, so it names the VMs that
// exist and run, lest the user think nothing happened.
func forkFailure(err error, made []lifecycle.VM) error {
	if len(made) == 0 {
		return err
	}
	names := make([]string, len(made))
	for i, vm := range made {
		names[i] = vm.Name
	}
	return fmt.Errorf("%w; made and running: %s", err, strings.Join(names, ", "))
}

// sourceSettings are the network settings of a fork's source: the
// snapshot's as saved, or the VM's.
func (m *vmManager) sourceSettings(ctx context.Context, ref string) (netSettings, bool) {
	var s netSettings
	if sn, err := m.lc.GetSnapshot(ctx, ref); err == nil {
		return s, json.Unmarshal(sn.Network, &s) == nil
	}
	if vm, err := m.lc.Get(ctx, ref); err == nil {
		return settingsOf(toStoreVM(vm)), true
	}
	return s, false
}

// snapshotToAPI maps a snapshot to the wire.
func snapshotToAPI(sn lifecycle.Snapshot) api.Snapshot {
	out := api.Snapshot{
		ID: sn.ID, Name: sn.Name, VM: sn.VMName, VMID: sn.VMID, Image: sn.ImageName, VMM: sn.VMM,
		VCPUs: sn.VCPUs, MemoryMiB: sn.MemoryMiB, DiskSizeBytes: sn.DiskSizeBytes, Golden: sn.Golden,
		State: api.SnapshotState(sn.State), SizeBytes: sn.SizeBytes, CreatedAt: sn.CreatedAt,
	}
	if !sn.LastUsedAt.IsZero() {
		used := sn.LastUsedAt
		out.LastUsedAt = &used
	}
	return out
}
