package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/dns"
	"github.com/banger-dev/banger/internal/network/firewall"
	"github.com/banger-dev/banger/internal/store"
)

// A VM's egress policy: what it may open connections to outside banger's
// bridge. It lives in the VM's network JSON (netSettings.Egress) beside
// isolation and forwards; no "egress" key means "allow", which is what
// every VM made before egress policies had. The firewall enforces it in
// the VM's own nftables table (firewall.ApplyEgress, through the root
// helper), and banger's DNS server answers a restricted VM only for the
// names its allowlist holds, adding their addresses to that table.

// maxEgressNames bounds a VM's allowed names (each costs a comparison per
// DNS question it asks).
const maxEgressNames = 64

// egressSettings is a VM's egress policy as stored and shown.
type egressSettings struct {
	// Mode is "allow", "deny" or "allowlist".
	Mode string `json:"mode"`
	// Allow are the allowlist's entries, normalized: "10.0.0.0/8",
	// "192.0.2.7:443", "example.com", "*.example.com:443".
	Allow []string `json:"allow,omitempty"`
}

// egressPolicy is egressSettings compiled: the networks for the firewall
// and the names for the DNS server.
type egressPolicy struct {
	mode  string
	nets  []firewall.EgressRule
	names []dns.NameRule
}

// parseEgress reads a user's --egress and --allow: no mode means the
// configured default (defMode), or "allowlist" when entries are given.
func parseEgress(mode string, allow []string, defMode string) (egressSettings, error) {
	if mode == "" {
		mode = defMode
		if len(allow) > 0 {
			mode = firewall.EgressAllowlist
		}
	}
	switch mode {
	case firewall.EgressAllow, firewall.EgressDeny, firewall.EgressAllowlist:
	default:
		return egressSettings{}, api.Errorf(api.CodeInvalidArgument, "egress mode %q is not allow, deny or allowlist", mode)
	}
	if len(allow) > 0 && mode != firewall.EgressAllowlist {
		return egressSettings{}, api.Errorf(api.CodeInvalidArgument, "--allow needs egress mode allowlist, not %s", mode).
			WithHint("use --egress allowlist --allow HOST|CIDR[:PORT]")
	}
	s := egressSettings{Mode: mode}
	for _, a := range allow {
		norm, err := normalizeAllow(a)
		if err != nil {
			return egressSettings{}, api.Errorf(api.CodeInvalidArgument, "--allow %s", err).
				WithHint("write a host name (example.com, *.example.com), an IPv4 address or network (10.0.0.0/8), optionally with :PORT")
		}
		s.Allow = append(s.Allow, norm)
	}
	if _, err := s.compile(); err != nil {
		return egressSettings{}, api.Errorf(api.CodeInvalidArgument, "%v", err)
	}
	return s, nil
}

// normalizeAllow reads one HOST|CIDR[:PORT] entry and writes it back in
// its one normal form.
func normalizeAllow(entry string) (string, error) {
	if r, ok, err := parseNetEntry(entry); ok {
		if err != nil {
			return "", err
		}
		return r.String(), nil
	}
	r, err := dns.ParseNameRule(entry)
	if err != nil {
		return "", err
	}
	return r.String(), nil
}

// parseNetEntry reads an address or network entry; ok is false when the
// entry is not one (a host name).
func parseNetEntry(entry string) (r firewall.EgressRule, ok bool, err error) {
	host, port := entry, ""
	if !isAddrOrPrefix(entry) {
		if i := strings.LastIndexByte(entry, ':'); i >= 0 {
			host, port = entry[:i], entry[i+1:]
		}
	}
	p, perr := netip.ParsePrefix(host)
	if perr != nil {
		a, aerr := netip.ParseAddr(host)
		if aerr != nil {
			return r, false, nil
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if !p.Addr().Is4() {
		return r, true, fmt.Errorf("%q: only IPv4 addresses are allowed (guests have no IPv6)", entry)
	}
	if p != p.Masked() {
		return r, true, fmt.Errorf("%q: network has host bits set; write %s", entry, p.Masked())
	}
	r.Net = p
	if port != "" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return r, true, fmt.Errorf("%q: port %q must be 1-65535", entry, port)
		}
		r.Port = uint16(n)
	}
	return r, true, nil
}

// isAddrOrPrefix reports whether s is an address or network as it is
// (IPv6 ones hold colons that are no port separator).
func isAddrOrPrefix(s string) bool {
	if _, err := netip.ParsePrefix(s); err == nil {
		return true
	}
	_, err := netip.ParseAddr(s)
	return err == nil
}

// compile splits the normalized entries into networks and names, within
// their bounds.
func (s egressSettings) compile() (egressPolicy, error) {
	p := egressPolicy{mode: s.Mode}
	for _, a := range s.Allow {
		if r, ok, err := parseNetEntry(a); ok {
			if err != nil {
				return p, err
			}
			p.nets = append(p.nets, r)
			continue
		}
		r, err := dns.ParseNameRule(a)
		if err != nil {
			return p, err
		}
		p.names = append(p.names, r)
	}
	if len(p.nets) > firewall.MaxEgressRules {
		return p, fmt.Errorf("%d addresses and networks in the allowlist; at most %d", len(p.nets), firewall.MaxEgressRules)
	}
	if len(p.names) > maxEgressNames {
		return p, fmt.Errorf("%d host names in the allowlist; at most %d", len(p.names), maxEgressNames)
	}
	return p, nil
}

// egressOf is the VM's stored policy ("allow" when it has none).
func egressOf(vm store.VM) egressSettings {
	if e := settingsOf(vm).Egress; e != nil {
		return *e
	}
	return egressSettings{Mode: firewall.EgressAllow}
}

// withEgress adds the create request's egress policy to the VM's network
// JSON; an "allow" policy with nothing else leaves it as it was.
func (m *vmManager) withEgress(req api.VMCreateRequest, netJSON []byte) ([]byte, error) {
	s, err := parseEgress(req.Egress, req.Allow, m.egress)
	if err != nil || s.Mode == firewall.EgressAllow {
		return netJSON, err
	}
	if m.net == nil && (req.Egress != "" || len(req.Allow) > 0) {
		return nil, api.Errorf(api.CodeFailedPrecondition, "egress %s needs VM networking, which is off on this daemon", s.Mode).
			WithHint("see network.enabled in `banger config defaults`")
	}
	// A default policy is stored even without networking: a VM without a
	// network reaches nothing, and keeps its policy if networking comes on.
	var ns netSettings
	if len(netJSON) > 0 {
		ns = settingsOf(store.VM{Network: netJSON})
	}
	ns.Egress = &s
	return ns.json(), nil
}

// applyEgress enforces the VM's policy on its port: its firewall table
// (skipped for "allow" unless live, where there is nothing to remove
// yet) and its DNS restriction. Called before the tap exists, so the VM
// never runs under no policy, and live by `vm egress`.
func (n *vmNetwork) applyEgress(ctx context.Context, vm store.VM, tap string, l store.Lease, live bool) error {
	p, err := egressOf(vm).compile()
	if err != nil {
		return err
	}
	if live || p.mode != firewall.EgressAllow {
		e := firewall.Egress{Bridge: n.bridge.Name, Tap: tap, Addr: l.IP, Mode: p.mode, Allow: p.nets}
		if err := n.ops.ApplyEgress(ctx, e); err != nil {
			return err
		}
	}
	n.restrictNames(vm, tap, l.IP)
	return nil
}

// restrictNames tells the DNS server what the VM at addr may resolve. The
// firewall's table survives daemon restarts; this does not, so the daemon
// calls it again for running VMs at start (readmit).
func (n *vmNetwork) restrictNames(vm store.VM, tap string, addr netip.Addr) {
	srv := n.resolver()
	if srv == nil {
		return
	}
	p, err := egressOf(vm).compile()
	if err != nil || p.mode == firewall.EgressAllow {
		srv.Unrestrict(addr)
		return
	}
	srv.Restrict(addr, p.names, tapLearner{n: n, tap: tap})
}

// unrestrictNames lifts the DNS restriction of an address whose VM stopped
// or went away (another VM may get it next).
func (n *vmNetwork) unrestrictNames(addr netip.Addr) {
	if srv := n.resolver(); srv != nil {
		srv.Unrestrict(addr)
	}
}

// tapLearner adds a VM's resolved addresses to its firewall table.
type tapLearner struct {
	n   *vmNetwork
	tap string
}

func (t tapLearner) Learn(ctx context.Context, _ netip.Addr, addrs []firewall.Learned) error {
	return t.n.ops.LearnEgress(ctx, firewall.LearnSpec{Bridge: t.n.bridge.Name, Tap: t.tap, Addrs: addrs})
}

// Egress changes a VM's egress policy, live when it runs: the firewall
// swaps its rules in one transaction and forgets its open connections.
func (m *vmManager) Egress(ctx context.Context, req api.VMEgressRequest, _ api.Progress) (api.VM, error) {
	vm, err := m.get(ctx, req.Name)
	if err != nil {
		return api.VM{}, err
	}
	s, err := parseEgress(req.Mode, req.Allow, m.egress)
	if err != nil {
		return api.VM{}, err
	}
	if m.net == nil {
		return api.VM{}, api.Errorf(api.CodeFailedPrecondition, "VM networking is off, so there is no egress to control").
			WithHint("see network.enabled in `banger config defaults`")
	}
	unlock := m.lock(vm.ID)
	defer unlock()
	if vm, err = m.store.GetVM(ctx, vm.ID); err != nil {
		return api.VM{}, err
	}
	old := settingsOf(vm)
	ns := old
	ns.Egress = &s
	if err := m.store.UpdateVMNetwork(ctx, vm.ID, ns.json()); err != nil {
		return api.VM{}, err
	}
	if m.instance(vm.ID) != nil {
		if err := m.applyLiveEgress(ctx, vm, ns); err != nil {
			if rerr := m.store.UpdateVMNetwork(ctx, vm.ID, old.json()); rerr != nil {
				m.log.Warn("restore egress policy after a failed change", "vm", vm.Name, "err", rerr)
			}
			return api.VM{}, api.Errorf(api.CodeInternal, "apply egress policy to %s: %v", vm.Name, err)
		}
	}
	return m.view(ctx, vm.ID)
}

// applyLiveEgress applies ns's policy to the running vm.
func (m *vmManager) applyLiveEgress(ctx context.Context, vm store.VM, ns netSettings) error {
	l, err := m.store.GetLease(ctx, vm.ID)
	if err != nil {
		return fmt.Errorf("the VM has no address: %w", err)
	}
	vm.Network = ns.json()
	return m.net.applyEgress(ctx, vm, network.TapName(vm.ID), l, true)
}

// egressView is the VM's policy for the API.
func egressView(vm store.VM) *api.EgressPolicy {
	e := egressOf(vm)
	return &api.EgressPolicy{Mode: e.Mode, Allow: e.Allow}
}
