package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/lifecycle"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmproc"
)

// agentPort is the vsock port the guest agent listens on.
const agentPort = 1024

// vmManager serves the VM methods of the API over the lifecycle. It holds
// what those methods use; the lifecycle's ports are separate pieces built
// by newLifecycle (lifecycle_wiring.go).
type vmManager struct {
	lc    *lifecycle.Manager
	store *store.Store
	net   *vmNetwork    // nil: VMs get no network
	ttl   *lifetimes    // nil: VM lifetimes are not scheduled
	fwd   *hostForwards // the VMs' live port forwards
	// layout places each VM's serial log.
	layout paths.Layout
	// domain is the VMs' DNS domain, egress new VMs' default egress
	// policy (config network.domain and network.egress).
	domain string
	egress string
	now    func() time.Time
	log    *slog.Logger
}

// newVMManager wires the VM methods and the lifecycle under them from the
// daemon's pieces, which it reads once: d.net, d.overlays and d.ttl must
// be set (or left nil for good) before.
func newVMManager(d *Daemon, driver vmm.Driver) *vmManager {
	m := &vmManager{
		store: d.store, net: d.net, ttl: d.ttl,
		fwd:    newHostForwards(d.store, d.net != nil, d.log),
		layout: d.opts.Layout, domain: d.opts.Config.Network.Domain, egress: d.opts.Config.Network.Egress,
		now: d.now, log: d.log,
	}
	m.lc = newLifecycle(d, m.fwd, driver)
	return m
}

// lock takes the operation lock of VM id and returns its release.
func (m *vmManager) lock(id string) func() { return m.lc.Lock(id) }

func (m *vmManager) instance(id string) vmm.Instance { return m.lc.Instance(id) }

// get loads a VM by name or ID, turning "not found" into a user-facing error.
func (m *vmManager) get(ctx context.Context, name string) (store.VM, error) {
	vm, err := m.lc.Get(ctx, name)
	return toStoreVM(vm), apiError(err)
}

// Create maps a create request to the lifecycle's: the network settings
// are the daemon's business.
func (m *vmManager) Create(ctx context.Context, req api.VMCreateRequest, p api.Progress) (api.VM, error) {
	lreq := lifecycle.CreateRequest{
		Name: req.Name, Image: req.Image, VCPUs: req.VCPUs, MemoryMiB: req.MemoryMiB,
		DiskSizeBytes: req.DiskSizeBytes, Autostart: req.Autostart, NoStart: req.NoStart, Cold: req.Cold,
		Labels: req.Labels,
	}
	if err := lifecycle.ValidateName(req.Name); err != nil {
		return api.VM{}, apiError(err)
	}
	if len(req.Publish) > 0 || req.Isolated {
		if m.net == nil {
			return api.VM{}, api.Errorf(api.CodeFailedPrecondition, "--publish and --isolated need VM networking, which is off on this daemon").
				WithHint("see network.enabled in `banger config defaults`")
		}
		fwd, err := parseForwards(req.Publish)
		if err != nil {
			return api.VM{}, err
		}
		lreq.Network = netSettings{Forwards: fwd, Isolated: req.Isolated}.json()
	}
	var err error
	if lreq.Network, err = m.withEgress(req, lreq.Network); err != nil {
		return api.VM{}, err
	}
	life, err := parseLifetime(req.TTLSeconds, req.IdleTTLSeconds, req.TTLAction, m.now())
	if err != nil {
		return api.VM{}, err
	}
	vm, err := m.lc.Create(ctx, lreq, progressTo(p))
	if err == nil {
		err = m.armLifetime(ctx, vm, life)
	}
	return m.present(ctx, vm, err)
}

// Start boots a stopped or failed VM.
func (m *vmManager) Start(ctx context.Context, name string, p api.Progress) (api.VM, error) {
	vm, err := m.lc.Start(ctx, name, progressTo(p))
	return m.present(ctx, vm, err)
}

// Stop shuts a VM down.
func (m *vmManager) Stop(ctx context.Context, req api.VMStopRequest, p api.Progress) (api.VM, error) {
	vm, err := m.lc.Stop(ctx, req.Name, req.Force, time.Duration(req.TimeoutSeconds)*time.Second, progressTo(p))
	return m.present(ctx, vm, err)
}

// Restart stops (if running) and boots the VM again.
func (m *vmManager) Restart(ctx context.Context, name string, p api.Progress) (api.VM, error) {
	vm, err := m.lc.Restart(ctx, name, progressTo(p))
	return m.present(ctx, vm, err)
}

// Delete removes the VM, its disk and its files; a VM with snapshots
// only with req.Force, which deletes them too.
func (m *vmManager) Delete(ctx context.Context, req api.VMDeleteRequest, p api.Progress) error {
	return apiError(m.lc.Delete(ctx, req.Name, req.Force, progressTo(p)))
}

// present shows the VM an operation left (with its lease), or its error.
func (m *vmManager) present(ctx context.Context, vm lifecycle.VM, err error) (api.VM, error) {
	if err != nil {
		return api.VM{}, apiError(err)
	}
	var lease *store.Lease
	if l, err := m.store.GetLease(ctx, vm.ID); err == nil {
		lease = &l
	}
	return m.toAPI(toStoreVM(vm), lease), nil
}

// waitForAgent polls the guest agent until it answers, the VMM exits, or ctx
// ends.
func waitForAgent(ctx context.Context, inst vmm.Instance) (agent.HealthInfo, error) {
	dialer, ok := inst.(vmm.AgentDialer)
	if !ok {
		return agent.HealthInfo{}, errors.New("this VMM driver cannot reach a guest agent")
	}
	// Same polling shape as the driver's API wait: tight first, then back off.
	delay, start := 2*time.Millisecond, time.Now()
	var lastErr error
	for {
		select {
		case <-inst.Done():
			return agent.HealthInfo{}, fmt.Errorf("the VMM exited during boot (%s)", inst.Exit())
		default:
		}
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := dialer.DialAgent(actx)
		if err == nil {
			var info agent.HealthInfo
			info, err = agent.Health(actx, conn)
			conn.Close()
			if err == nil {
				cancel()
				return info, nil
			}
		}
		cancel()
		lastErr = err
		select {
		case <-ctx.Done():
			return agent.HealthInfo{}, fmt.Errorf("the guest agent did not answer in time (last error: %v)", lastErr)
		case <-inst.Done():
		case <-time.After(delay):
		}
		if time.Since(start) > 250*time.Millisecond {
			delay = min(delay*2, 100*time.Millisecond)
		}
	}
}

// List returns every VM.
func (m *vmManager) List(ctx context.Context) ([]api.VM, error) {
	vms, err := m.store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	leases, err := m.store.ListLeases(ctx)
	if err != nil {
		return nil, err
	}
	byVM := map[string]*store.Lease{}
	for i := range leases {
		byVM[leases[i].VMID] = &leases[i]
	}
	out := make([]api.VM, 0, len(vms))
	for _, vm := range vms {
		out = append(out, m.toAPI(vm, byVM[vm.ID]))
	}
	return out, nil
}

// view loads a VM with its lease for display.
func (m *vmManager) view(ctx context.Context, id string) (api.VM, error) {
	vm, err := m.lc.Get(ctx, id)
	return m.present(ctx, vm, err)
}

func (m *vmManager) toAPI(vm store.VM, lease *store.Lease) api.VM {
	out := api.VM{
		ID: vm.ID, Name: vm.Name, State: apiState(vm.State), Image: vm.ImageName,
		VCPUs: vm.VCPUs, MemoryMiB: vm.MemoryMiB, DiskSizeBytes: vm.DiskSizeBytes, Autostart: vm.Autostart,
		VMM: vm.VMM, PID: vm.PID, CreatedAt: vm.CreatedAt, LastError: vm.LastError, ExitStatus: vm.ExitStatus,
		SerialLog: serialLogPath(m.layout, vm.ID),
		DNSName:   vm.Name + "." + m.domain,
		Forwards:  forwardsOf(vm),
		Isolated:  settingsOf(vm).Isolated,
		Labels:    vm.Labels,
		Egress:    egressView(vm),
		Lifetime:  m.ttl.view(vm.ID),
	}
	if lease != nil {
		out.IP, out.MAC = lease.IP.String(), lease.MAC
	}
	if !vm.StartedAt.IsZero() {
		t := vm.StartedAt
		out.StartedAt = &t
	}
	if !vm.StoppedAt.IsZero() {
		t := vm.StoppedAt
		out.StoppedAt = &t
	}
	return out
}

// Logs returns the tail of the VM's serial console.
func (m *vmManager) Logs(ctx context.Context, req api.VMLogsRequest, _ api.Progress) (api.VMLogs, error) {
	vm, err := m.get(ctx, req.Name)
	if err != nil {
		return api.VMLogs{}, err
	}
	lines := req.Lines
	if lines <= 0 {
		lines = 200
	}
	path := serialLogPath(m.layout, vm.ID)
	return api.VMLogs{Path: path, Text: tailFile(path, lines)}, nil
}

// serialLogPath is VM id's serial console log.
func serialLogPath(layout paths.Layout, id string) string {
	return layout.VMStateDir(id) + "/serial.log"
}

// tailFile returns up to n trailing lines of path ("" if unreadable).
func tailFile(path string, n int) string {
	// The window stays inside the half of the cap a console trim keeps.
	const window = 256 << 10
	b, err := vmmproc.ReadTail(path, window)
	if err != nil {
		return ""
	}
	s := strings.TrimRight(string(b), "\n")
	if s == "" {
		return ""
	}
	all := strings.Split(s, "\n")
	if len(all) > n {
		all = all[len(all)-n:]
	}
	return strings.Join(all, "\n") + "\n"
}
