package daemon

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/lifecycle"
	"github.com/banger-dev/banger/internal/network/portforward"
	"github.com/banger-dev/banger/internal/store"
)

// netSettings is the daemon's JSON in a VM's network column.
type netSettings struct {
	// Forwards are "HOSTADDR:HOSTPORT:GUESTPORT" specs, normalized.
	Forwards []string `json:"forwards,omitempty"`
	// Isolated VMs cannot reach other VMs (the host and NAT still work).
	Isolated bool `json:"isolated,omitempty"`
	// Egress is the VM's egress policy (egress.go); nil means allow.
	Egress *egressSettings `json:"egress,omitempty"`
}

func settingsOf(vm store.VM) netSettings {
	var s netSettings
	_ = json.Unmarshal(vm.Network, &s) // the store only holds valid JSON; unknown shapes mean "none"
	return s
}

func (s netSettings) json() json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

// parseForwards validates and normalizes user forward specs.
func parseForwards(specs []string) ([]string, error) {
	var out []string
	seen := map[uint16]string{}
	for _, raw := range specs {
		sp, err := portforward.ParseSpec(raw)
		if err != nil {
			return nil, api.Errorf(api.CodeInvalidArgument, "%v", err)
		}
		if prev, dup := seen[sp.HostPort]; dup {
			return nil, api.Errorf(api.CodeInvalidArgument, "host port %d is forwarded twice (%s and %s)", sp.HostPort, prev, raw)
		}
		seen[sp.HostPort] = raw
		out = append(out, sp.String())
	}
	return out, nil
}

// hostForwards runs the host port forwards of the VMs while they run.
type hostForwards struct {
	store *store.Store // a VM's lease: the address its forwards go to
	// off: the daemon has no VM networking, so nothing to forward to.
	off bool
	log *slog.Logger

	mu   sync.Mutex
	live map[string][]*portforward.Forwarder // VM ID → live forwards
}

func newHostForwards(st *store.Store, networked bool, log *slog.Logger) *hostForwards {
	return &hostForwards{store: st, off: !networked, log: log, live: map[string][]*portforward.Forwarder{}}
}

// start opens the VM's forwards; one that cannot listen (port taken)
// is logged and skipped rather than failing the VM.
func (h *hostForwards) start(ctx context.Context, vm store.VM) {
	if h.off {
		return
	}
	specs := settingsOf(vm).Forwards
	if len(specs) == 0 {
		return
	}
	lease, err := h.store.GetLease(ctx, vm.ID)
	if err != nil {
		h.log.Warn("port forwards need an address", "vm", vm.Name, "err", err)
		return
	}
	for _, raw := range specs {
		if err := h.startOne(vm, lease.IP, raw); err != nil {
			h.log.Warn("port forward not started", "vm", vm.Name, "forward", raw, "err", err)
		}
	}
}

func (h *hostForwards) startOne(vm store.VM, guest netip.Addr, raw string) error {
	sp, err := portforward.ParseSpec(raw)
	if err != nil {
		return err
	}
	f, err := portforward.Start(netip.AddrPortFrom(sp.HostAddr, sp.HostPort), netip.AddrPortFrom(guest, sp.GuestPort), h.log.With("vm", vm.Name))
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.live[vm.ID] = append(h.live[vm.ID], f)
	h.mu.Unlock()
	return nil
}

// stop closes every forward of the VM.
func (h *hostForwards) stop(id string) {
	h.mu.Lock()
	fs := h.live[id]
	delete(h.live, id)
	h.mu.Unlock()
	for _, f := range fs {
		if err := f.Stop(); err != nil {
			h.log.Warn("port forward not stopped cleanly", "vm_id", id, "err", err)
		}
	}
}

// PortForward adds (or with Remove, drops) a forward on a VM. It is
// persistent: it comes back whenever the VM runs.
func (m *vmManager) PortForward(ctx context.Context, req api.VMPortForwardRequest, _ api.Progress) (api.VM, error) {
	vm, err := m.get(ctx, req.Name)
	if err != nil {
		return api.VM{}, err
	}
	if m.net == nil {
		return api.VM{}, api.Errorf(api.CodeFailedPrecondition, "VM networking is off, so there is nothing to forward to").
			WithHint("see network.enabled in `banger config defaults`")
	}
	norm, err := parseForwards([]string{req.Spec})
	if err != nil {
		return api.VM{}, err
	}
	unlock := m.lock(vm.ID)
	defer unlock()
	if vm, err = m.store.GetVM(ctx, vm.ID); err != nil {
		return api.VM{}, err
	}
	if vm.State == lifecycle.Paused {
		return api.VM{}, pausedError(vm.Name)
	}
	s := settingsOf(vm)
	spec := norm[0]
	has := slices.Contains(s.Forwards, spec)
	switch {
	case req.Remove && !has:
		return api.VM{}, api.Errorf(api.CodeNotFound, "vm %q has no forward %s", vm.Name, spec)
	case req.Remove:
		s.Forwards = slices.DeleteFunc(s.Forwards, func(f string) bool { return f == spec })
	case has:
		return m.view(ctx, vm.ID)
	default:
		all, err := parseForwards(append(slices.Clone(s.Forwards), spec))
		if err != nil {
			return api.VM{}, err
		}
		s.Forwards = all
	}
	if err := m.store.UpdateVMNetwork(ctx, vm.ID, s.json()); err != nil {
		return api.VM{}, err
	}
	vm.Network = s.json()
	if m.instance(vm.ID) != nil {
		// Apply now: restart this VM's forwards from the new list.
		m.fwd.stop(vm.ID)
		lease, err := m.store.GetLease(ctx, vm.ID)
		if err == nil {
			for _, raw := range s.Forwards {
				if err := m.fwd.startOne(vm, lease.IP, raw); err != nil && raw == spec && !req.Remove {
					return api.VM{}, api.Errorf(api.CodeFailedPrecondition, "forward %s: %v", spec, err)
				}
			}
		}
	}
	return m.view(ctx, vm.ID)
}

// forwardsOf lists a VM's forwards for display.
func forwardsOf(vm store.VM) []string {
	return settingsOf(vm).Forwards
}
