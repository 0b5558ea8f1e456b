package doctor

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/firewall"
)

// NetVM is a running VM as the VM-network check sees it.
type NetVM struct {
	Name, ID string
	IP       netip.Addr
	MAC      string
}

// VMNetwork is what the VM-network check reads: this banger's settings
// and how to look at the host. RealVMNetwork fills the lookups.
type VMNetwork struct {
	// Enabled is false when network.enabled is "off".
	Enabled bool
	Bridge  string
	// Subnet is network.subnet as configured ("" is reported).
	Subnet string
	// StateDir is this banger's state directory: the mark its bridge and
	// taps carry (network.Owner).
	StateDir string
	// RunningVMs lists the daemon's running VMs; an error (no daemon)
	// skips the per-VM checks.
	RunningVMs func(ctx context.Context) ([]NetVM, error)
	// BridgeOwner is network.LinkOwner.
	BridgeOwner func(name string) (network.Owner, bool, error)
	// Taps is network.ListTapInfo.
	Taps func(ctx context.Context) ([]network.TapInfo, error)
	// Firewall is firewall.Inspect; nil when this process may not read
	// nftables (it needs root).
	Firewall func(ctx context.Context, bridge string) (firewall.Status, error)
}

// RealVMNetwork looks at this host, with the daemon's VM list from vms.
func RealVMNetwork(enabled bool, bridge, subnet, stateDir string, vms func(ctx context.Context) ([]NetVM, error)) VMNetwork {
	n := VMNetwork{
		Enabled: enabled, Bridge: bridge, Subnet: subnet, StateDir: stateDir, RunningVMs: vms,
		BridgeOwner: network.LinkOwner, Taps: network.ListTapInfo,
	}
	if os.Geteuid() == 0 {
		n.Firewall = firewall.Inspect
	}
	return n
}

// DaemonRunningVMs asks the daemon at c for its running VMs.
func DaemonRunningVMs(c *api.Client) func(ctx context.Context) ([]NetVM, error) {
	return func(ctx context.Context) ([]NetVM, error) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		vms, err := c.VMList(ctx)
		if err != nil {
			return nil, err
		}
		var out []NetVM
		for _, vm := range vms {
			if vm.State != api.VMRunning || vm.IP == "" {
				continue
			}
			ip, err := netip.ParseAddr(vm.IP)
			if err != nil {
				return nil, fmt.Errorf("vm %s has address %q: %w", vm.Name, vm.IP, err)
			}
			out = append(out, NetVM{Name: vm.Name, ID: vm.ID, IP: ip, MAC: vm.MAC})
		}
		return out, nil
	}
}

// VMNetworkCheck reports whether this banger's bridge, its running VMs'
// taps and its firewall tables are really there and its own: another
// banger on the host, or someone's `ip link del` or `nft flush ruleset`,
// can take them away while `vm list` still says running.
func VMNetworkCheck(n VMNetwork) Check {
	return Check{Name: "VM network of this banger", Run: func(ctx context.Context) Result {
		if !n.Enabled {
			return Result{Status: Pass, Summary: "VM networking is off"}
		}
		c := vmNetCheck{n: n, r: Result{Status: Pass}}
		c.run(ctx)
		return c.r
	}}
}

type vmNetCheck struct {
	n VMNetwork
	r Result
	// ready is true once the daemon has set up networking (our bridge
	// exists): missing pieces are failures from then on.
	ready bool
}

// problem records a failure, or a warning while networking is not set up.
func (c *vmNetCheck) problem(format string, args ...any) {
	if c.ready {
		c.r.Status = Fail
	} else if c.r.Status == Pass {
		c.r.Status = Warn
	}
	c.r.Details = append(c.r.Details, fmt.Sprintf(format, args...))
}

func (c *vmNetCheck) note(format string, args ...any) {
	c.r.Details = append(c.r.Details, fmt.Sprintf(format, args...))
}

func (c *vmNetCheck) run(ctx context.Context) {
	br := c.n.Bridge
	subnet, subnetErr := netip.ParsePrefix(c.n.Subnet)
	c.checkBridge(br)
	vms, vmErr := c.n.RunningVMs(ctx)
	if vmErr != nil {
		c.note("running VMs not checked: %v", vmErr)
	}
	if len(vms) > 0 {
		c.ready = true
	}
	c.checkTaps(ctx, vms)
	for _, vm := range vms {
		if subnetErr == nil && !subnet.Contains(vm.IP) {
			c.problem("VM %s still has %s from an earlier network.subnet, outside %s, and is unreachable: `banger vm restart %s` gives it an address in the new subnet", vm.Name, vm.IP, subnet, vm.Name)
		}
	}
	c.checkFirewall(ctx, vms)
	switch {
	case c.r.Status != Pass:
		c.r.Summary = fmt.Sprintf("%d problem(s) with bridge %s, its taps or its firewall", len(c.r.Details), br)
	default:
		c.r.Summary = fmt.Sprintf("bridge %s is this banger's; %d running VM(s) have their tap on it", br, len(vms))
	}
	if c.n.Firewall == nil {
		c.note("nftables tables not checked: reading them needs root (`sudo banger doctor`, with --system for a system install)")
	}
}

func (c *vmNetCheck) checkBridge(br string) {
	owner, marked, err := c.n.BridgeOwner(br)
	switch {
	case errors.As(err, new(netlink.LinkNotFoundError)):
		c.problem("bridge %s is not there (the daemon creates it when it starts with networking on)", br)
	case err != nil:
		c.note("bridge %s not checked: %v", br, err)
	case !marked:
		c.ready = true
		c.problem("bridge %s carries no banger mark; the daemon marks it as this banger's when it next starts", br)
	case owner.StateDir != c.n.StateDir:
		c.ready = true
		c.problem("bridge %s belongs to another banger (%s); set network.bridge and network.subnet in your config to use another", br, owner)
	default:
		c.ready = true
	}
}

func (c *vmNetCheck) checkTaps(ctx context.Context, vms []NetVM) {
	if len(vms) == 0 {
		return
	}
	taps, err := c.n.Taps(ctx)
	if err != nil {
		c.note("taps not checked: %v", err)
		return
	}
	byName := map[string]network.TapInfo{}
	for _, t := range taps {
		byName[t.Name] = t
	}
	for _, vm := range vms {
		name := network.TapName(vm.ID)
		t, ok := byName[name]
		switch {
		case !ok:
			c.problem("VM %s runs without its tap %s: it has no network; `banger vm restart %s` recreates it", vm.Name, name, vm.Name)
		case t.Master != c.n.Bridge:
			c.problem("VM %s's tap %s is not on bridge %s (on %q): it has no network; `banger vm restart %s` puts it back", vm.Name, name, c.n.Bridge, t.Master, vm.Name)
		case t.Marked && t.Owner.StateDir != c.n.StateDir:
			c.problem("VM %s's tap %s is marked as another banger's (%s)", vm.Name, name, t.Owner)
		}
	}
}

func (c *vmNetCheck) checkFirewall(ctx context.Context, vms []NetVM) {
	if c.n.Firewall == nil {
		return
	}
	st, err := c.n.Firewall(ctx, c.n.Bridge)
	if err != nil {
		c.note("nftables tables not checked: %v", err)
		return
	}
	for _, m := range st.Missing {
		c.problem("nftables: %s is missing; restarting bangerd (`sudo banger system restart` for a system install) rebuilds the tables", m)
	}
	for _, vm := range vms {
		mac, err := network.ParseGuestMAC(vm.MAC)
		if err != nil {
			c.note("VM %s not checked against the firewall: %v", vm.Name, err)
			continue
		}
		if !st.Admitted(network.TapName(vm.ID), mac, vm.IP) {
			c.problem("VM %s (%s) is not admitted to %s's firewall, which drops its traffic; restarting bangerd admits running VMs again", vm.Name, vm.IP, firewall.TableName(c.n.Bridge))
		}
	}
}
