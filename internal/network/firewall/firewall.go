// Package firewall keeps banger's nftables rules: masquerading NAT for the
// VM subnet, forwarding rules for the bridge, and per-VM isolation.
//
// Everything lives in banger's own two tables, "ip banger" (NAT, forward
// filtering, isolated addresses) and "bridge banger" (isolated bridge
// ports), built with the nftables netlink API in one atomic transaction.
// banger never lists, flushes or edits any other table: Remove deletes its
// two tables and nothing else. Functions act on the current network
// namespace and need CAP_NET_ADMIN; the root helper calls them.
//
// Rules in another table still apply to the same packets: a DROP policy in
// someone else's forward chain (Docker sets one in iptables' FORWARD) drops
// guest traffic whatever banger accepts. That is reported, not overridden.
package firewall

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/network"
)

// TableName is the name of both of banger's tables ("ip banger" and
// "bridge banger").
const TableName = "banger"

// Names of the sets holding isolated VMs, one per table.
const (
	isolatedAddrsSet = "isolated_addrs"
	isolatedPortsSet = "isolated_ports"
)

// ErrNotEnsured means Isolate or Unisolate ran before Ensure created
// banger's tables.
var ErrNotEnsured = errors.New("banger's nftables tables do not exist")

// Config is what the rules are built from.
type Config struct {
	// Bridge is banger's bridge (network.ValidateBridgeName).
	Bridge string
	// Subnet is the VM subnet on it (network.ValidateSubnet).
	Subnet netip.Prefix
}

// Validate checks the bridge name and the subnet.
func (c Config) Validate() error {
	if err := network.ValidateBridgeName(c.Bridge); err != nil {
		return err
	}
	return network.ValidateSubnet(c.Subnet)
}

// Ensure (re)builds banger's tables for cfg in one atomic transaction, so
// there is never a moment with half the rules. It is idempotent, and keeps
// the isolated VMs already registered with Isolate. The rules:
//
//   - postrouting: packets from the subnet leaving through any interface
//     but the bridge are masqueraded (guests reach whatever the host
//     reaches, through whichever uplink is current);
//   - forward: traffic from the bridge is accepted if its source is in the
//     subnet and dropped otherwise (no spoofing); traffic to the bridge is
//     accepted only as replies (established/related), so other machines
//     cannot open connections to guests through the host; traffic routed
//     between two guests is dropped if either is isolated;
//   - bridge forward: frames to or from an isolated VM's tap are dropped,
//     so isolated guests cannot talk to other guests at layer 2.
//
// IPv4 forwarding must be on too (network.SetIPForward).
func Ensure(ctx context.Context, cfg Config) error {
	if err := ensure(ctx, cfg); err != nil {
		return fmt.Errorf("ensure nftables tables for %s on %s: %w", cfg.Subnet, cfg.Bridge, err)
	}
	return nil
}

func ensure(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return err
	}
	ports, addrs, err := members(c)
	if err != nil {
		return err
	}

	ipT := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: TableName}
	brT := &nftables.Table{Family: nftables.TableFamilyBridge, Name: TableName}
	// Adding before deleting makes the delete valid whether or not the
	// table existed; the three steps commit together.
	for _, t := range []*nftables.Table{ipT, brT} {
		c.AddTable(t)
		c.DelTable(t)
		c.AddTable(t)
	}

	// Explicit set IDs keep the library from using its package-wide
	// counter; they only need to be unique within this transaction.
	addrSet := &nftables.Set{Table: ipT, Name: isolatedAddrsSet, ID: 1, KeyType: nftables.TypeIPAddr}
	if err := c.AddSet(addrSet, addrs); err != nil {
		return err
	}
	portSet := &nftables.Set{Table: brT, Name: isolatedPortsSet, ID: 2, KeyType: nftables.TypeIFName}
	if err := c.AddSet(portSet, ports); err != nil {
		return err
	}

	accept := nftables.ChainPolicyAccept
	post := c.AddChain(&nftables.Chain{
		Name: "postrouting", Table: ipT, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept,
	})
	fwd := c.AddChain(&nftables.Chain{
		Name: "forward", Table: ipT, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	})
	brFwd := c.AddChain(&nftables.Chain{
		Name: "forward", Table: brT, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	})

	rules := []struct {
		chain *nftables.Chain
		exprs [][]expr.Any
	}{
		{post, [][]expr.Any{
			join(saddrIn(cfg.Subnet, expr.CmpOpEq), oif(cfg.Bridge, expr.CmpOpNeq), counter(), []expr.Any{&expr.Masq{}}),
		}},
		{fwd, [][]expr.Any{
			join(iif(cfg.Bridge, expr.CmpOpEq), oif(cfg.Bridge, expr.CmpOpEq), addrLookup(12, addrSet), counter(), verdict(expr.VerdictDrop)),
			join(iif(cfg.Bridge, expr.CmpOpEq), oif(cfg.Bridge, expr.CmpOpEq), addrLookup(16, addrSet), counter(), verdict(expr.VerdictDrop)),
			join(iif(cfg.Bridge, expr.CmpOpEq), saddrIn(cfg.Subnet, expr.CmpOpNeq), counter(), verdict(expr.VerdictDrop)),
			join(iif(cfg.Bridge, expr.CmpOpEq), verdict(expr.VerdictAccept)),
			join(oif(cfg.Bridge, expr.CmpOpEq), ctEstablished(), verdict(expr.VerdictAccept)),
			join(oif(cfg.Bridge, expr.CmpOpEq), counter(), verdict(expr.VerdictDrop)),
		}},
		{brFwd, [][]expr.Any{
			join(metaLookup(expr.MetaKeyIIFNAME, portSet), counter(), verdict(expr.VerdictDrop)),
			join(metaLookup(expr.MetaKeyOIFNAME, portSet), counter(), verdict(expr.VerdictDrop)),
		}},
	}
	for _, r := range rules {
		for _, e := range r.exprs {
			c.AddRule(&nftables.Rule{Table: r.chain.Table, Chain: r.chain, Exprs: e})
		}
	}
	return c.Flush()
}

// Remove deletes banger's tables and with them every banger rule and set.
// Missing tables are not an error; no other table is touched.
func Remove(ctx context.Context) error {
	if err := remove(ctx); err != nil {
		return fmt.Errorf("remove banger's nftables tables: %w", err)
	}
	return nil
}

func remove(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return err
	}
	n := 0
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyBridge} {
		t, err := ownTable(c, fam)
		if err != nil {
			return err
		}
		if t != nil {
			c.DelTable(t)
			n++
		}
	}
	if n == 0 {
		return nil
	}
	return c.Flush()
}

// Present reports whether banger's NAT table exists, for doctor.
func Present(ctx context.Context) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("look up banger's nftables table: %w", err)
	}
	t, err := ownTable(c, nftables.TableFamilyIPv4)
	if err != nil {
		return false, fmt.Errorf("look up banger's nftables table: %w", err)
	}
	return t != nil, nil
}

// Isolate cuts the VM with tap and addr off from the other VMs: frames
// between its tap and any other bridge port are dropped, and so are packets
// the host would route between it and another guest. The VM still reaches
// the host (gateway, DNS) and, through NAT, the outside. Idempotent; needs
// Ensure first (ErrNotEnsured). The membership survives Ensure but not
// Remove.
func Isolate(ctx context.Context, tap string, addr netip.Addr) error {
	if err := setIsolated(ctx, tap, addr, true); err != nil {
		return fmt.Errorf("isolate %s (%s): %w", tap, addr, err)
	}
	return nil
}

// Unisolate undoes Isolate. Idempotent: a VM that is not isolated, or
// missing tables, are not errors.
func Unisolate(ctx context.Context, tap string, addr netip.Addr) error {
	if err := setIsolated(ctx, tap, addr, false); err != nil {
		return fmt.Errorf("unisolate %s (%s): %w", tap, addr, err)
	}
	return nil
}

func setIsolated(ctx context.Context, tap string, addr netip.Addr, on bool) error {
	if err := network.ValidateTapName(tap); err != nil {
		return err
	}
	if !addr.Is4() {
		return fmt.Errorf("%w: address %v must be IPv4", network.ErrInvalid, addr)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return err
	}
	portSet, addrSet, err := isolationSets(c)
	if err != nil {
		return err
	}
	if portSet == nil || addrSet == nil {
		if on {
			return ErrNotEnsured
		}
		return nil
	}
	a4 := addr.As4()
	elems := []struct {
		set *nftables.Set
		key []byte
	}{{portSet, ifname(tap)}, {addrSet, a4[:]}}
	if on {
		for _, e := range elems {
			if err := c.SetAddElements(e.set, []nftables.SetElement{{Key: e.key}}); err != nil {
				return err
			}
		}
		return c.Flush()
	}
	// One transaction per element: deleting an absent element fails with
	// ENOENT and would take the other deletion down with it.
	for _, e := range elems {
		if err := c.SetDeleteElements(e.set, []nftables.SetElement{{Key: e.key}}); err != nil {
			return err
		}
		if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	return nil
}

// ownTable returns banger's table of family, or nil if it does not exist.
func ownTable(c *nftables.Conn, fam nftables.TableFamily) (*nftables.Table, error) {
	tables, err := c.ListTablesOfFamily(fam)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == TableName {
			return t, nil
		}
	}
	return nil, nil
}

// isolationSets returns the two isolation sets, nil where missing.
func isolationSets(c *nftables.Conn) (ports, addrs *nftables.Set, err error) {
	find := func(fam nftables.TableFamily, name string) (*nftables.Set, error) {
		t, err := ownTable(c, fam)
		if err != nil || t == nil {
			return nil, err
		}
		sets, err := c.GetSets(t)
		if err != nil {
			return nil, fmt.Errorf("list sets: %w", err)
		}
		for _, s := range sets {
			if s.Name == name {
				return s, nil
			}
		}
		return nil, nil
	}
	if ports, err = find(nftables.TableFamilyBridge, isolatedPortsSet); err != nil {
		return nil, nil, err
	}
	if addrs, err = find(nftables.TableFamilyIPv4, isolatedAddrsSet); err != nil {
		return nil, nil, err
	}
	return ports, addrs, nil
}

// members returns the elements of the isolation sets, empty if absent.
func members(c *nftables.Conn) (ports, addrs []nftables.SetElement, err error) {
	portSet, addrSet, err := isolationSets(c)
	if err != nil {
		return nil, nil, err
	}
	if portSet != nil {
		if ports, err = c.GetSetElements(portSet); err != nil {
			return nil, nil, fmt.Errorf("list isolated ports: %w", err)
		}
	}
	if addrSet != nil {
		if addrs, err = c.GetSetElements(addrSet); err != nil {
			return nil, nil, fmt.Errorf("list isolated addresses: %w", err)
		}
	}
	return keysOnly(ports), keysOnly(addrs), nil
}

// keysOnly strips what GetSetElements decodes beyond the key, so the
// elements can be fed back to AddSet.
func keysOnly(in []nftables.SetElement) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(in))
	for _, e := range in {
		out = append(out, nftables.SetElement{Key: e.Key})
	}
	return out
}

func join(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// ifname is an interface name as nftables compares it: NUL-padded to
// IFNAMSIZ.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func iif(name string, op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: ifname(name)},
	}
}

func oif(name string, op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: ifname(name)},
	}
}

// saddrIn matches (CmpOpEq) or excludes (CmpOpNeq) IPv4 sources in p.
func saddrIn(p netip.Prefix, op expr.CmpOp) []expr.Any {
	a := p.Addr().As4()
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: net.CIDRMask(p.Bits(), 32), Xor: make([]byte, 4)},
		&expr.Cmp{Op: op, Register: 1, Data: a[:]},
	}
}

// addrLookup matches when the IPv4 address at offset (12 source, 16
// destination) is in set.
func addrLookup(offset uint32, set *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
	}
}

func metaLookup(key expr.MetaKey, set *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
	}
}

func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{
			SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0),
		},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

func counter() []expr.Any { return []expr.Any{&expr.Counter{}} }

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }
