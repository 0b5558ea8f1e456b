package mcp

import (
	"context"
	"maps"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/lifecycle"
)

// VMInfo is a VM as the tools report it.
type VMInfo struct {
	Name      string            `json:"name" jsonschema:"the VM's name, which every other tool takes"`
	ID        string            `json:"id"`
	State     string            `json:"state" jsonschema:"creating, starting, running, paused, stopping, stopped, failed or deleting"`
	Image     string            `json:"image,omitempty"`
	VCPUs     int               `json:"vcpus"`
	MemoryMiB int               `json:"memory_mib"`
	DiskBytes int64             `json:"disk_bytes"`
	IP        string            `json:"ip,omitempty" jsonschema:"the VM's address on banger's bridge, when it has one"`
	DNSName   string            `json:"dns_name,omitempty"`
	Forwards  []string          `json:"forwards,omitempty" jsonschema:"host-to-guest TCP forwards, HOSTADDR:HOSTPORT:GUESTPORT"`
	Labels    map[string]string `json:"labels,omitempty"`
	Egress    string            `json:"egress,omitempty" jsonschema:"allow, deny or allowlist"`
	Allow     []string          `json:"allow,omitempty" jsonschema:"the allowlist, with egress allowlist"`
	ExpiresAt string            `json:"expires_at,omitempty" jsonschema:"RFC 3339 UTC time the daemon deletes or stops the VM (its ttl)"`
	CreatedAt string            `json:"created_at" jsonschema:"RFC 3339 UTC"`
	LastError string            `json:"last_error,omitempty"`
}

func vmInfo(vm api.VM) VMInfo {
	out := VMInfo{
		Name: vm.Name, ID: vm.ID, State: string(vm.State), Image: vm.Image,
		VCPUs: vm.VCPUs, MemoryMiB: vm.MemoryMiB, DiskBytes: vm.DiskSizeBytes,
		IP: vm.IP, DNSName: vm.DNSName, Forwards: vm.Forwards, Labels: vm.Labels,
		CreatedAt: vm.CreatedAt.UTC().Format(time.RFC3339), LastError: vm.LastError,
	}
	if vm.Egress != nil {
		out.Egress, out.Allow = vm.Egress.Mode, vm.Egress.Allow
	}
	if vm.Lifetime != nil && vm.Lifetime.ExpiresAt != nil {
		out.ExpiresAt = vm.Lifetime.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return out
}

// VMRef names the VM a tool acts on.
type VMRef struct {
	Name string `json:"name" jsonschema:"the VM's name"`
}

// CreateArgs are vm_create's arguments.
type CreateArgs struct {
	Name      string            `json:"name,omitempty" jsonschema:"VM name (lowercase letters, digits, dashes); default mcp-<8 hex digits>"`
	Image     string            `json:"image,omitempty" jsonschema:"image to boot; default from banger's config"`
	VCPUs     int               `json:"vcpus,omitempty" jsonschema:"virtual CPUs; default from banger's config"`
	MemoryMiB int               `json:"memory_mib,omitempty" jsonschema:"memory in MiB; default from banger's config"`
	Disk      string            `json:"disk,omitempty" jsonschema:"root disk size such as 8G; default from banger's config"`
	Cold      bool              `json:"cold,omitempty" jsonschema:"boot the kernel even when a saved (golden) state could start the VM warm in far less time"`
	Labels    map[string]string `json:"labels,omitempty" jsonschema:"extra key=value tags; creator is set by the server"`
	Egress    string            `json:"egress,omitempty" jsonschema:"what the VM may connect to outside: allow, deny or allowlist; default from banger's config"`
	Allow     []string          `json:"allow,omitempty" jsonschema:"with allowlist: HOST, *.SUFFIX, IPv4 address or CIDR, optionally :PORT"`
	TTL       string            `json:"ttl,omitempty" jsonschema:"delete the VM (or stop it, ttl_action) this long after creating it, e.g. 30m or 2h"`
	IdleTTL   string            `json:"idle_ttl,omitempty" jsonschema:"delete (or stop) the VM once it has run this long with nothing using it, e.g. 15m"`
	TTLAction string            `json:"ttl_action,omitempty" jsonschema:"delete (default) or stop"`
}

// ListArgs are vm_list's arguments.
type ListArgs struct {
	Labels map[string]string `json:"labels,omitempty" jsonschema:"only VMs carrying all these labels"`
}

// VMListResult is vm_list's result.
type VMListResult struct {
	VMs []VMInfo `json:"vms"`
}

// StopArgs are vm_stop's and vm_delete's arguments.
type StopArgs struct {
	Name  string `json:"name" jsonschema:"the VM's name"`
	Force bool   `json:"force,omitempty" jsonschema:"vm_stop: kill the VM without asking the guest to shut down; vm_delete: delete its snapshots too"`
}

// DeleteResult is vm_delete's result.
type DeleteResult struct {
	Deleted string `json:"deleted"`
}

// ForwardArgs are port_forward's arguments.
type ForwardArgs struct {
	Name   string `json:"name" jsonschema:"the VM's name"`
	Spec   string `json:"spec" jsonschema:"[HOSTADDR:]HOSTPORT:GUESTPORT; HOSTADDR defaults to 127.0.0.1"`
	Remove bool   `json:"remove,omitempty" jsonschema:"remove this forward instead of adding it"`
}

// SnapshotArgs are vm_snapshot's arguments.
type SnapshotArgs struct {
	Name     string `json:"name" jsonschema:"the VM's name"`
	Snapshot string `json:"snapshot,omitempty" jsonschema:"snapshot name; default <vm>-<UTC time>"`
}

// SnapshotInfo is a saved VM state.
type SnapshotInfo struct {
	Name      string `json:"name"`
	VM        string `json:"vm"`
	State     string `json:"state"`
	SizeBytes int64  `json:"size_bytes"`
	CreatedAt string `json:"created_at"`
}

// RollbackArgs are vm_rollback's arguments.
type RollbackArgs struct {
	Name     string `json:"name" jsonschema:"the VM's name"`
	Snapshot string `json:"snapshot" jsonschema:"a snapshot of this VM (from vm_snapshot)"`
}

// SnapshotDeleteArgs are snapshot_delete's arguments.
type SnapshotDeleteArgs struct {
	Snapshot string `json:"snapshot" jsonschema:"a snapshot of one of your VMs"`
}

// ForkArgs are vm_fork's arguments.
type ForkArgs struct {
	Source string `json:"source" jsonschema:"a VM of yours (snapshotted first) or a snapshot of one"`
	Name   string `json:"name" jsonschema:"the new VM's name; with count > 1 the VMs are NAME-1..NAME-N"`
	Count  int    `json:"count,omitempty" jsonschema:"how many VMs to make, 1-64; default 1"`
}

func (s *Server) addVMTools() {
	sdk.AddTool(s.srv, &sdk.Tool{Name: "vm_create", Description: "Create a microVM and boot it; returns it once its guest agent answers (about a second warm). Run commands in it with vm_exec and delete it with vm_delete when done."}, s.vmCreate)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "vm_list", Description: "List the VMs this agent created (every VM when the server runs with --all)."}, s.vmList)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "vm_show", Description: "Show one VM: state, address, shape, forwards, labels."}, s.vmShow)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "vm_start", Description: "Boot a stopped or failed VM and wait until its guest agent answers."}, s.vmStart)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "vm_stop", Description: "Shut a VM down (its disk is kept; vm_start boots it again)."}, s.vmStop)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "vm_delete", Description: "Delete a VM and its disk for good (stopping it first)."}, s.vmDelete)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "vm_pause", Description: "Freeze a running VM's CPUs; it keeps its memory and address."}, s.vmPause)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "vm_resume", Description: "Let a paused VM run again."}, s.vmResume)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "vm_snapshot", Description: "Save a VM's memory, devices and disk at one instant, to roll back to or fork from."}, s.vmSnapshot)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "snapshot_delete", Description: "Delete a snapshot of one of your VMs and its files (VMs forked from it are not affected)."}, s.snapshotDelete)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "vm_rollback", Description: "Return a VM to one of its snapshots, discarding its current state."}, s.vmRollback)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "vm_fork", Description: "Start new VMs from a snapshot of one of your VMs (or from the VM itself, snapshotted first); each gets its own identity, disk and address."}, s.vmFork)
	sdk.AddTool(s.srv, &sdk.Tool{Name: "port_forward", Description: "Forward a host TCP port to a port in the VM (or remove such a forward)."}, s.portForward)
}

func (s *Server) vmCreate(ctx context.Context, req *sdk.CallToolRequest, in CreateArgs) (*sdk.CallToolResult, VMInfo, error) {
	name := trimmed(in.Name)
	if name == "" {
		name = lifecycle.GeneratedName("mcp")
	}
	labels := maps.Clone(in.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[api.LabelCreator] = s.creator(req)
	if err := lifecycle.ValidateLabels(labels); err != nil {
		return nil, VMInfo{}, toolError(err)
	}
	creq := api.VMCreateRequest{Name: name, Image: in.Image, VCPUs: in.VCPUs, MemoryMiB: in.MemoryMiB, Cold: in.Cold, Labels: labels,
		Egress: in.Egress, Allow: in.Allow, TTLAction: in.TTLAction}
	if in.VCPUs < 0 || in.MemoryMiB < 0 {
		return nil, VMInfo{}, invalid("vcpus and memory_mib must be positive; leave them out for banger's defaults")
	}
	var err error
	if creq.TTLSeconds, err = seconds("ttl", in.TTL); err != nil {
		return nil, VMInfo{}, toolError(err)
	}
	if creq.IdleTTLSeconds, err = seconds("idle_ttl", in.IdleTTL); err != nil {
		return nil, VMInfo{}, toolError(err)
	}
	if in.Disk != "" {
		size, err := config.ParseSize(in.Disk)
		if err != nil {
			return nil, VMInfo{}, invalid("disk %q: %v", in.Disk, err)
		}
		creq.DiskSizeBytes = int64(size)
	}
	vm, err := s.opts.Daemon.VMCreate(ctx, creq, func(api.Event) {})
	if err != nil {
		return nil, VMInfo{}, toolError(err)
	}
	return nil, vmInfo(vm), nil
}

// seconds parses a duration argument ("30m"); "" is 0, no limit.
func seconds(arg, d string) (int64, error) {
	if d == "" {
		return 0, nil
	}
	v, err := time.ParseDuration(d)
	if err != nil || v < time.Second {
		return 0, invalid("%s %q: give a duration of at least a second, such as 30m or 2h", arg, d)
	}
	return int64(v / time.Second), nil
}

func (s *Server) vmList(ctx context.Context, req *sdk.CallToolRequest, in ListArgs) (*sdk.CallToolResult, VMListResult, error) {
	vms, err := s.opts.Daemon.VMList(ctx)
	if err != nil {
		return nil, VMListResult{}, toolError(err)
	}
	out := VMListResult{VMs: []VMInfo{}}
	for _, vm := range vms {
		if s.mine(req, vm) && vm.HasLabels(in.Labels) {
			out.VMs = append(out.VMs, vmInfo(vm))
		}
	}
	return nil, out, nil
}

func (s *Server) vmShow(ctx context.Context, req *sdk.CallToolRequest, in VMRef) (*sdk.CallToolResult, VMInfo, error) {
	vm, err := s.ownedVM(ctx, req, trimmed(in.Name))
	if err != nil {
		return nil, VMInfo{}, toolError(err)
	}
	return nil, vmInfo(vm), nil
}

// onOwned runs op on VM in.Name when the agent may touch it.
func (s *Server) onOwned(ctx context.Context, req *sdk.CallToolRequest, name string, op func(name string) (api.VM, error)) (*sdk.CallToolResult, VMInfo, error) {
	vm, err := s.ownedVM(ctx, req, trimmed(name))
	if err != nil {
		return nil, VMInfo{}, toolError(err)
	}
	vm, err = op(vm.Name)
	if err != nil {
		return nil, VMInfo{}, toolError(err)
	}
	return nil, vmInfo(vm), nil
}

func quiet(api.Event) {}

func (s *Server) vmStart(ctx context.Context, req *sdk.CallToolRequest, in VMRef) (*sdk.CallToolResult, VMInfo, error) {
	return s.onOwned(ctx, req, in.Name, func(name string) (api.VM, error) { return s.opts.Daemon.VMStart(ctx, name, quiet) })
}

func (s *Server) vmStop(ctx context.Context, req *sdk.CallToolRequest, in StopArgs) (*sdk.CallToolResult, VMInfo, error) {
	return s.onOwned(ctx, req, in.Name, func(name string) (api.VM, error) {
		return s.opts.Daemon.VMStop(ctx, api.VMStopRequest{Name: name, Force: in.Force}, quiet)
	})
}

func (s *Server) vmPause(ctx context.Context, req *sdk.CallToolRequest, in VMRef) (*sdk.CallToolResult, VMInfo, error) {
	return s.onOwned(ctx, req, in.Name, func(name string) (api.VM, error) { return s.opts.Daemon.VMPause(ctx, name) })
}

func (s *Server) vmResume(ctx context.Context, req *sdk.CallToolRequest, in VMRef) (*sdk.CallToolResult, VMInfo, error) {
	return s.onOwned(ctx, req, in.Name, func(name string) (api.VM, error) { return s.opts.Daemon.VMResume(ctx, name) })
}

func (s *Server) vmRollback(ctx context.Context, req *sdk.CallToolRequest, in RollbackArgs) (*sdk.CallToolResult, VMInfo, error) {
	return s.onOwned(ctx, req, in.Name, func(name string) (api.VM, error) {
		return s.opts.Daemon.VMRollback(ctx, api.VMRollbackRequest{Name: name, Snapshot: in.Snapshot}, quiet)
	})
}

func (s *Server) portForward(ctx context.Context, req *sdk.CallToolRequest, in ForwardArgs) (*sdk.CallToolResult, VMInfo, error) {
	return s.onOwned(ctx, req, in.Name, func(name string) (api.VM, error) {
		return s.opts.Daemon.VMPortForward(ctx, api.VMPortForwardRequest{Name: name, Spec: in.Spec, Remove: in.Remove})
	})
}

func (s *Server) vmDelete(ctx context.Context, req *sdk.CallToolRequest, in StopArgs) (*sdk.CallToolResult, DeleteResult, error) {
	vm, err := s.ownedVM(ctx, req, trimmed(in.Name))
	if err != nil {
		return nil, DeleteResult{}, toolError(err)
	}
	if err := s.opts.Daemon.VMDelete(ctx, api.VMDeleteRequest{Name: vm.Name, Force: in.Force}, quiet); err != nil {
		return nil, DeleteResult{}, toolError(err)
	}
	return nil, DeleteResult{Deleted: vm.Name}, nil
}

func (s *Server) vmSnapshot(ctx context.Context, req *sdk.CallToolRequest, in SnapshotArgs) (*sdk.CallToolResult, SnapshotInfo, error) {
	vm, err := s.ownedVM(ctx, req, trimmed(in.Name))
	if err != nil {
		return nil, SnapshotInfo{}, toolError(err)
	}
	snap, err := s.opts.Daemon.VMSnapshot(ctx, api.VMSnapshotRequest{Name: vm.Name, Snapshot: in.Snapshot}, quiet)
	if err != nil {
		return nil, SnapshotInfo{}, toolError(err)
	}
	return nil, SnapshotInfo{Name: snap.Name, VM: snap.VM, State: string(snap.State), SizeBytes: snap.SizeBytes,
		CreatedAt: snap.CreatedAt.UTC().Format(time.RFC3339)}, nil
}

func (s *Server) vmFork(ctx context.Context, req *sdk.CallToolRequest, in ForkArgs) (*sdk.CallToolResult, VMListResult, error) {
	source := trimmed(in.Source)
	if err := s.checkForkSource(ctx, req, source); err != nil {
		return nil, VMListResult{}, toolError(err)
	}
	labels := map[string]string{api.LabelCreator: s.creator(req)}
	vms, err := s.opts.Daemon.VMFork(ctx, api.VMForkRequest{Source: source, Name: trimmed(in.Name), Count: in.Count, Labels: labels}, quiet)
	out := VMListResult{VMs: []VMInfo{}}
	for _, vm := range vms {
		out.VMs = append(out.VMs, vmInfo(vm))
	}
	if err != nil {
		return nil, out, toolError(err)
	}
	return nil, out, nil
}

// checkForkSource allows a VM of the agent's, or a snapshot of one.
func (s *Server) checkForkSource(ctx context.Context, req *sdk.CallToolRequest, source string) error {
	if s.opts.All {
		return nil
	}
	if source == "" {
		return invalid("no source given: name one of your VMs or a snapshot of one")
	}
	exists, err := s.ownedSnapshot(ctx, req, source)
	if !exists {
		_, err = s.ownedVM(ctx, req, source)
	}
	return err
}

// ownedSnapshot allows a snapshot of one of the agent's VMs (any with
// --all). A snapshot whose VM is gone, or another creator's, looks missing;
// exists says whether the daemon has a snapshot of that name at all.
func (s *Server) ownedSnapshot(ctx context.Context, req *sdk.CallToolRequest, name string) (exists bool, err error) {
	snap, err := s.opts.Daemon.SnapshotShow(ctx, name)
	if err != nil {
		return !api.IsCode(err, api.CodeNotFound), err
	}
	if s.opts.All {
		return true, nil
	}
	vm, err := s.opts.Daemon.VMShow(ctx, snap.VMID)
	if err != nil || !s.mine(req, vm) {
		return true, notYours("snapshot", name)
	}
	return true, nil
}

func (s *Server) snapshotDelete(ctx context.Context, req *sdk.CallToolRequest, in SnapshotDeleteArgs) (*sdk.CallToolResult, DeleteResult, error) {
	name := trimmed(in.Snapshot)
	if name == "" {
		return nil, DeleteResult{}, toolError(invalid("no snapshot given: name a snapshot of one of your VMs"))
	}
	if _, err := s.ownedSnapshot(ctx, req, name); err != nil {
		return nil, DeleteResult{}, toolError(err)
	}
	if err := s.opts.Daemon.SnapshotDelete(ctx, name); err != nil {
		return nil, DeleteResult{}, toolError(err)
	}
	return nil, DeleteResult{Deleted: name}, nil
}
