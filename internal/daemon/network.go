package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/dns"
	"github.com/banger-dev/banger/internal/network/firewall"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
)

// netOps is what VM networking needs from the privileged side, in the
// daemon's terms; privilegedNet (privileged_ports.go) maps it onto the
// root helper's menu (in-process for a root daemon).
type netOps interface {
	// EnsureBridge creates and marks this banger's bridge, with the
	// subnet's gateway address; EnableIPForward and EnsureNAT let its
	// VMs out. All idempotent.
	EnsureBridge(ctx context.Context, b network.Bridge) error
	EnableIPForward(ctx context.Context) error
	EnsureNAT(ctx context.Context, b network.Bridge) error
	// RouteDNS sends the host's queries for the VMs' domain to our
	// resolver on the bridge.
	RouteDNS(ctx context.Context, r dnsRoute) error
	// CreateTap creates (or re-attaches and re-marks) a VM's tap;
	// DeleteTap removes one of ours.
	CreateTap(ctx context.Context, t tapRequest) error
	DeleteTap(ctx context.Context, name string) error
	// Admit pins a VM's port on the bridge to its MAC and address (and
	// cuts it off from the other VMs when isolated); Evict drops that.
	// Both idempotent.
	Admit(ctx context.Context, g guestPort) error
	Evict(ctx context.Context, g guestPort) error
	// ApplyEgress replaces a VM's egress rules; LearnEgress adds addresses
	// its allowed names resolved to (egress.go). Evict removes both.
	ApplyEgress(ctx context.Context, e firewall.Egress) error
	LearnEgress(ctx context.Context, l firewall.LearnSpec) error
}

// guestPort is the firewall's view of a VM's port: its bridge, tap, MAC
// and address, and whether it is cut off from the other VMs.
type guestPort struct {
	Bridge, Tap, MAC string
	Addr             netip.Addr
	Isolated         bool
}

// tapRequest is a VM's tap on Bridge, owned by UID/GID so the
// unprivileged VMM can open it.
type tapRequest struct {
	Name, Bridge string
	UID, GID     int
}

// dnsRoute sends queries for Domain on Link to Server, port 53.
type dnsRoute struct {
	Link   string
	Server netip.Addr
	Domain string
}

// vmNetwork gives VMs a tap on banger's bridge, an address from the
// subnet (leases in SQLite), NAT to the outside and a DNS name.
type vmNetwork struct {
	log    *slog.Logger
	ops    netOps
	store  *store.Store
	bridge network.Bridge
	domain string
	uid    int
	gid    int
	// stateDir is what the root helper marks our bridge and taps with
	// (network.Owner): the state dir of this daemon, and of its helper.
	stateDir string

	mu  sync.Mutex
	dns *dns.Server
}

// netSetup is what setupNetwork needs from the daemon.
type netSetup struct {
	cfg      config.Network
	log      *slog.Logger
	store    *store.Store
	stateDir string
}

// setupNetwork prepares the bridge, forwarding, NAT and the resolver. It
// returns nil (and logs why) when networking is off, or "auto" and no
// privileged operations are available; with "on" that is an error.
func setupNetwork(ctx context.Context, in netSetup, ops netOps, how string) (*vmNetwork, error) {
	cfg := in.cfg
	if cfg.Enabled == "off" {
		in.log.Info("vm networking off (network.enabled = \"off\")")
		return nil, nil
	}
	if ops == nil {
		if cfg.Enabled == "on" {
			return nil, fmt.Errorf("network.enabled is \"on\" but privileged operations are %s; run `sudo banger system install` or run bangerd as root", how)
		}
		in.log.Warn("vm networking unavailable; VMs get no network", "privileged", how)
		return nil, nil
	}
	subnet, err := network.ParseSubnet(cfg.Subnet)
	if err != nil {
		return nil, fmt.Errorf("network.subnet: %w", err)
	}
	routes, err := network.HostRoutes(ctx, cfg.Bridge)
	if err != nil {
		return nil, fmt.Errorf("read host routes: %w", err)
	}
	if err := network.CheckSubnet(subnet, routes); err != nil {
		return nil, fmt.Errorf("network.subnet %s: %w; choose another subnet in the config", subnet, err)
	}
	n := &vmNetwork{
		log: in.log.With("component", "network"), ops: ops, store: in.store,
		bridge: network.Bridge{Name: cfg.Bridge, Subnet: subnet}, domain: cfg.Domain,
		uid: os.Getuid(), gid: os.Getgid(), stateDir: in.stateDir,
	}
	steps := []struct {
		what string
		do   func() error
	}{
		{"create bridge " + cfg.Bridge, func() error {
			return ops.EnsureBridge(ctx, n.bridge)
		}},
		{"enable IPv4 forwarding", func() error { return ops.EnableIPForward(ctx) }},
		{"set up NAT", func() error { return ops.EnsureNAT(ctx, n.bridge) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return nil, fmt.Errorf("vm networking: %s: %w", s.what, err)
		}
	}
	if err := n.startDNS(ctx); err != nil {
		// Names are a convenience; VMs still work by address.
		n.log.Warn("DNS resolver not started; VMs resolve no .banger names", "err", err)
	} else {
		// Host integration: systemd-resolved sends *.<domain> to our resolver
		// on the bridge. Hosts without resolved simply don't get host-side
		// names; guests resolve either way.
		route := dnsRoute{Link: cfg.Bridge, Server: n.bridge.Gateway(), Domain: cfg.Domain}
		if err := ops.RouteDNS(ctx, route); err != nil {
			n.log.Info("host resolver not configured for ."+cfg.Domain+" names", "err", err)
		}
	}
	n.log.Info("vm networking ready", "bridge", cfg.Bridge, "subnet", subnet, "gateway", n.bridge.Gateway())
	return n, nil
}

func (n *vmNetwork) startDNS(ctx context.Context) error {
	gw := n.bridge.Gateway()
	srv, err := dns.NewServer(dns.Config{
		Domain: n.domain, Subnet: n.bridge.Subnet,
		Upstreams: &dns.ResolvConf{Exclude: []netip.Addr{gw}, Logger: n.log},
		Logger:    n.log,
	})
	if err != nil {
		return err
	}
	if err := srv.Start(netip.AddrPortFrom(gw, 53)); err != nil {
		return fmt.Errorf("listen on %s:53: %w", gw, err)
	}
	n.mu.Lock()
	n.dns = srv
	n.mu.Unlock()
	return n.syncRecords(ctx)
}

// syncRecords loads every leased VM's name into the resolver.
func (n *vmNetwork) syncRecords(ctx context.Context) error {
	srv := n.resolver()
	if srv == nil {
		return nil
	}
	vms, err := n.store.ListVMs(ctx)
	if err != nil {
		return err
	}
	leases, err := n.store.ListLeases(ctx)
	if err != nil {
		return err
	}
	byID := map[string]netip.Addr{}
	for _, l := range leases {
		byID[l.VMID] = l.IP
	}
	records := map[string]netip.Addr{}
	for _, vm := range vms {
		if ip, ok := byID[vm.ID]; ok {
			records[vm.Name] = ip
		}
	}
	return srv.SetRecords(records)
}

func (n *vmNetwork) resolver() *dns.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dns
}

// lease gives the VM its address (stable for the VM's life, as long as
// network.subnet does not change) and its name. A lease from an earlier
// subnet is replaced by one in the current subnet: the guest learns its
// address from the kernel command line at every boot, so the next start
// moves it.
func (n *vmNetwork) lease(ctx context.Context, vm store.VM) (store.Lease, error) {
	if l, err := n.store.GetLease(ctx, vm.ID); err == nil {
		if n.bridge.Subnet.Contains(l.IP) {
			return l, nil
		}
		if err := n.store.ReleaseLease(ctx, vm.ID); err != nil {
			return l, fmt.Errorf("release %s, outside network.subnet %s: %w", l.IP, n.bridge.Subnet, err)
		}
		n.log.Info("moving VM to the new subnet", "vm", vm.Name, "old", l.IP, "subnet", n.bridge.Subnet)
	}
	l, err := n.store.AllocateLease(ctx, vm.ID, network.MACAddress(vm.ID).String(), network.Candidates(n.bridge.Subnet))
	if errors.Is(err, store.ErrExhausted) {
		return l, api.Errorf(api.CodeFailedPrecondition, "subnet %s has no free address", n.bridge.Subnet).
			WithHint("delete unused VMs or configure a larger network.subnet")
	}
	if err != nil {
		return l, err
	}
	if srv := n.resolver(); srv != nil {
		if err := srv.Set(vm.Name, l.IP); err != nil {
			n.log.Warn("dns record", "vm", vm.Name, "err", err)
		}
	}
	return l, nil
}

// attach pins the VM's port to its MAC and address (cut off from other VMs
// too when isolated), creates its tap and returns the interface for the
// launch spec and the guest's network boot parameters. The port is pinned
// before the tap exists: the bridge's firewall filters only ports it was
// told about (another banger's taps are not its business), so a tap of
// ours must never exist unlisted.
func (n *vmNetwork) attach(ctx context.Context, vm store.VM, isolated bool) (vmm.NetInterface, []string, error) {
	l, err := n.lease(ctx, vm)
	if err != nil {
		return vmm.NetInterface{}, nil, err
	}
	tap := network.TapName(vm.ID)
	if err := n.ops.Admit(ctx, n.portOf(tap, l, isolated)); err != nil {
		return vmm.NetInterface{}, nil, fmt.Errorf("admit %s to the bridge firewall: %w", tap, err)
	}
	if err := n.applyEgress(ctx, vm, tap, l, false); err != nil {
		n.evict(ctx, tap, l)
		return vmm.NetInterface{}, nil, fmt.Errorf("apply the egress policy of %s: %w", vm.Name, err)
	}
	if err := n.ops.CreateTap(ctx, n.tapFor(tap)); err != nil {
		n.evict(ctx, tap, l)
		return vmm.NetInterface{}, nil, fmt.Errorf("create tap %s: %w", tap, err)
	}
	return vmm.NetInterface{ID: "eth0", TapName: tap, MAC: l.MAC}, n.guestParams(l).Args(), nil
}

// guestParams is the guest's side of its network, from its lease: what a
// boot puts on the kernel command line and a fork sends as its identity.
func (n *vmNetwork) guestParams(l store.Lease) agent.BootParams {
	gw := n.bridge.Gateway()
	return agent.BootParams{
		Address: netip.PrefixFrom(l.IP, n.bridge.Subnet.Bits()),
		Gateway: gw,
		DNS:     []netip.Addr{gw},
		Domain:  n.domain,
	}
}

// portOf is the VM's port with tap on our bridge, from its lease.
func (n *vmNetwork) portOf(tap string, l store.Lease, isolated bool) guestPort {
	return guestPort{Bridge: n.bridge.Name, Tap: tap, MAC: l.MAC, Addr: l.IP, Isolated: isolated}
}

// tapFor is the request for a VM's tap on our bridge, owned by this daemon's
// user.
func (n *vmNetwork) tapFor(name string) tapRequest {
	return tapRequest{Name: name, Bridge: n.bridge.Name, UID: n.uid, GID: n.gid}
}

// detach removes the VM's tap and then its firewall bindings; the lease
// and DNS name stay with the VM.
func (n *vmNetwork) detach(ctx context.Context, vmID string) {
	n.dropTap(ctx, network.TapName(vmID), vmID)
}

// dropTap deletes a tap of ours and, once it is gone, its firewall
// bindings: a tap that stays keeps them, or it would pass unfiltered.
func (n *vmNetwork) dropTap(ctx context.Context, tap, vmID string) {
	if err := n.ops.DeleteTap(ctx, tap); err != nil {
		n.log.Warn("delete tap", "tap", tap, "err", err)
		return
	}
	if l, err := n.store.GetLease(ctx, vmID); err == nil {
		n.evict(ctx, tap, l)
	}
}

// evict drops the firewall bindings of a VM's port. Idempotent.
func (n *vmNetwork) evict(ctx context.Context, tap string, l store.Lease) {
	n.unrestrictNames(l.IP)
	if err := n.ops.Evict(ctx, n.portOf(tap, l, false)); err != nil {
		n.log.Warn("remove firewall bindings", "tap", tap, "err", err)
	}
}

// forget drops a deleted VM's name (its lease goes with its row).
func (n *vmNetwork) forget(name string) {
	if srv := n.resolver(); srv != nil {
		srv.Delete(name)
	}
}

// removeStaleTaps deletes this daemon's taps (and then their firewall
// bindings) of VMs that are not running, and admits and marks the taps of
// running ones again: the firewall keeps bindings across the daemon's own
// restarts, but not across an upgrade from a banger that had none, and a
// tap nobody admitted passes unfiltered. Taps of another banger on the
// host — marked with another owner, or unmarked on another bridge — are
// left alone: that banger's VMs may be using them.
func (n *vmNetwork) removeStaleTaps(ctx context.Context, running map[string]bool) {
	taps, err := network.ListTapInfo(ctx)
	if err != nil {
		n.log.Warn("list taps", "err", err)
		return
	}
	vms, leases, err := n.vmsByTap(ctx)
	if err != nil {
		n.log.Warn("list VMs for their taps", "err", err)
		return
	}
	for _, t := range taps {
		if !t.BelongsTo(n.bridge.Name, n.stateDir) {
			continue
		}
		vm, known := vms[t.Name]
		if !known || !running[vm.ID] {
			n.log.Info("removing stale tap", "tap", t.Name)
			n.dropTap(ctx, t.Name, vm.ID)
			continue
		}
		if l, leased := leases[t.Name]; leased {
			n.readmit(ctx, vm, t.Name, l)
		}
	}
}

// readmit pins a running VM's port again and re-attaches and marks its tap
// (CreateTap is idempotent). A VM whose address is outside the current
// subnet (network.subnet changed while it ran) keeps it until it restarts.
func (n *vmNetwork) readmit(ctx context.Context, vm store.VM, tap string, l store.Lease) {
	if !n.bridge.Subnet.Contains(l.IP) {
		n.log.Warn("VM keeps its address from an earlier network.subnet and is unreachable until restarted; `banger vm stop` and `vm start` give it one in the new subnet",
			"vm", vm.Name, "address", l.IP, "subnet", n.bridge.Subnet)
	}
	// Its egress table outlived the daemon in the kernel (rebuilding it
	// would drop learned addresses and open connections); its DNS
	// restriction did not.
	n.restrictNames(vm, tap, l.IP)
	if err := n.ops.Admit(ctx, n.portOf(tap, l, settingsOf(vm).Isolated)); err != nil {
		n.log.Warn("admit running VM's tap to the bridge firewall", "vm", vm.Name, "tap", tap, "err", err)
		return
	}
	if err := n.ops.CreateTap(ctx, n.tapFor(tap)); err != nil {
		n.log.Warn("re-attach running VM's tap", "vm", vm.Name, "tap", tap, "err", err)
	}
}

// vmsByTap maps tap names to their VMs and to those VMs' leases.
func (n *vmNetwork) vmsByTap(ctx context.Context) (map[string]store.VM, map[string]store.Lease, error) {
	vms, err := n.store.ListVMs(ctx)
	if err != nil {
		return nil, nil, err
	}
	leases, err := n.store.ListLeases(ctx)
	if err != nil {
		return nil, nil, err
	}
	byTap := make(map[string]store.VM, len(vms))
	for _, vm := range vms {
		byTap[network.TapName(vm.ID)] = vm
	}
	leaseByTap := make(map[string]store.Lease, len(leases))
	for _, l := range leases {
		leaseByTap[network.TapName(l.VMID)] = l
	}
	return byTap, leaseByTap, nil
}

func (n *vmNetwork) close() {
	if srv := n.resolver(); srv != nil {
		_ = srv.Close()
	}
}
