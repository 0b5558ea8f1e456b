// Package firewall keeps banger's nftables rules: masquerading NAT for the
// VM subnet, forwarding rules for the bridge, what guests may send to the
// host, per-VM anti-spoofing and per-VM isolation.
//
// Each banger bridge has its own two tables, named after it (TableName):
// "ip banger-banger0" (NAT, forward and input filtering, isolated
// addresses) and "bridge banger-banger0" (each VM's port pinned to its MAC
// and address, isolated bridge ports), built with the nftables netlink API
// in one atomic transaction. Two banger instances on one host (two users,
// or a system install next to a root user-mode daemon) use two bridges and
// so four tables side by side, and every rule matches only its own
// bridge's traffic or its own admitted ports, so neither can drop the
// other's. banger never flushes or edits any other table: Remove deletes
// its bridge's two tables and nothing else. Functions act on the current
// network namespace and need CAP_NET_ADMIN; the root helper calls them.
//
// Guests are hostile: a guest controls every byte its VM sends. The rules
// therefore assume nothing about guest frames that the host did not hand
// out itself (the tap, the MAC, the leased address).
//
// Rules in another table still apply to the same packets: a DROP policy in
// someone else's forward chain (Docker sets one in iptables' FORWARD) drops
// guest traffic whatever banger accepts. That is reported, not overridden.
package firewall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/network"
)

// tablePrefix starts every banger table's name.
const tablePrefix = "banger-"

// TableName is the name of both of a bridge's tables ("ip banger-banger0"
// and "bridge banger-banger0").
func TableName(bridge string) string { return tablePrefix + bridge }

// LegacyTableName is the one pair of tables ("ip banger", "bridge banger")
// banger used for the whole host before each bridge had its own. Ensure
// replaces them when they served its bridge, and leaves them to their
// banger otherwise.
const LegacyTableName = "banger"

// linkLocal is where cloud metadata services live (169.254.169.254):
// guests may not reach it through the host.
const linkLocal = "169.254.0.0/16"

// bridgeFilterPriority is the bridge family's "filter" priority: the
// prerouting chain runs before br_netfilter (priority 0) hands frames to
// iptables, so a spoofed frame is gone before anything else sees it.
const bridgeFilterPriority = -200

// ErrNotEnsured means Admit ran before Ensure created the bridge's tables.
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

// Ensure (re)builds the tables of cfg.Bridge in one atomic transaction, so
// there is never a moment with half the rules. It is idempotent, and keeps
// the VMs already registered with Admit. Tables an older banger made for
// the whole host (LegacyTableName) are deleted in the same transaction if
// they served cfg.Bridge, and their admitted VMs carried over. The rules:
//
//   - bridge prerouting: a frame entering a bridge from a port this
//     bridge's Admit listed (the "ports" set; "meta ibrname" would name the
//     bridge instead, but needs nft_meta_bridge, which not every kernel
//     has) passes only if it is IPv4 with the MAC and source address Admit
//     pinned to that port, or ARP (Ethernet/IPv4) whose Ethernet source and
//     sender hardware address are that MAC and whose sender address is
//     that address. Everything else from it is dropped: other ports'
//     addresses, forged MACs, ARP poisoning, IPv6 (banger gives guests
//     none), VLAN tags. Frames from other ports — another instance's taps —
//     are left to that instance's chain. The daemon admits a port before
//     it creates the tap, so none of its taps exists unlisted;
//   - input: from the bridge the host accepts replies (established or
//     related: port forwards and SSH connect to guests), DNS (UDP and TCP
//     53) and ICMP echo to the gateway, and drops everything else, so
//     host services listening on 0.0.0.0 stay out of guests' reach;
//   - postrouting: packets from the subnet leaving through any interface
//     but the bridge are masqueraded (guests reach whatever the host
//     reaches, through whichever uplink is current);
//   - forward: traffic from the bridge is dropped if its source is outside
//     the subnet or its destination is link-local (169.254.0.0/16, cloud
//     metadata) and accepted otherwise; traffic to the bridge is accepted
//     only as replies, so other machines cannot open connections to guests
//     through the host; traffic routed between two guests is dropped if
//     either is isolated;
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

// connect opens a netlink connection to nftables for a request whose
// validation gave invalid (nil when it is valid) and that ctx still wants.
func connect(ctx context.Context, invalid error) (*nftables.Conn, error) {
	if invalid != nil {
		return nil, invalid
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return nftables.New()
}

func ensure(ctx context.Context, cfg Config) error {
	c, err := connect(ctx, cfg.Validate())
	if err != nil {
		return err
	}
	name := TableName(cfg.Bridge)
	kept, err := members(c, name)
	if err != nil {
		return err
	}
	legacy, err := legacyTables(c, cfg.Bridge)
	if err != nil {
		return err
	}
	if len(legacy) > 0 && kept.empty() {
		if kept, err = members(c, LegacyTableName); err != nil {
			return err
		}
	}

	ipT := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: name}
	brT := &nftables.Table{Family: nftables.TableFamilyBridge, Name: name}
	// Adding before deleting makes the delete valid whether or not the
	// table existed; the three steps commit together.
	for _, t := range []*nftables.Table{ipT, brT} {
		c.AddTable(t)
		c.DelTable(t)
		c.AddTable(t)
	}
	for _, t := range legacy {
		c.DelTable(t)
	}
	s, err := addSets(c, ipT, brT, kept)
	if err != nil {
		return err
	}
	for _, r := range rules(cfg, s, addChains(c, ipT, brT)) {
		c.AddRule(&nftables.Rule{Table: r.chain.Table, Chain: r.chain, Exprs: r.exprs})
	}
	return c.Flush()
}

// chains are banger's base chains.
type chains struct {
	post, fwd, input, brPre, brFwd *nftables.Chain
}

func addChains(c *nftables.Conn, ipT, brT *nftables.Table) chains {
	accept := nftables.ChainPolicyAccept
	add := func(t *nftables.Table, name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: hook, Priority: prio, Policy: &accept})
	}
	return chains{
		post:  add(ipT, "postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource),
		fwd:   add(ipT, "forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter),
		input: add(ipT, "input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter),
		brPre: add(brT, "prerouting", nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityRef(bridgeFilterPriority)),
		brFwd: add(brT, "forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter),
	}
}

type rule struct {
	chain *nftables.Chain
	exprs []expr.Any
}

// rules lists every rule of banger's tables, in chain order (see Ensure).
func rules(cfg Config, s sets, ch chains) []rule {
	br := cfg.Bridge
	gw := network.Gateway(cfg.Subnet)
	drop, accept := verdict(expr.VerdictDrop), verdict(expr.VerdictAccept)
	fromGuests := iif(br, expr.CmpOpEq)
	toGateway := addrIs(offDaddr, gw)
	return []rule{
		{ch.brPre, join(metaNotIn(expr.MetaKeyIIFNAME, s.ports), accept)},
		{ch.brPre, join(etherType(unix.ETH_P_IP), pinned(s.guests, etherSaddr(), ipv4Saddr()), accept)},
		{ch.brPre, join(etherType(unix.ETH_P_ARP), arpIsEthernetIPv4(),
			pinned(s.guests, etherSaddr(), arpSpa()), pinned(s.guests, arpSha(), arpSpa()), accept)},
		{ch.brPre, join(counter(), drop)},

		{ch.input, join(fromGuests, ctEstablished(), accept)},
		{ch.input, join(fromGuests, toGateway, l4Proto(unix.IPPROTO_UDP), dport(53), accept)},
		{ch.input, join(fromGuests, toGateway, l4Proto(unix.IPPROTO_TCP), dport(53), accept)},
		{ch.input, join(fromGuests, toGateway, l4Proto(unix.IPPROTO_ICMP), icmpType(icmpEchoRequest), accept)},
		{ch.input, join(fromGuests, counter(), drop)},

		{ch.post, join(addrIn(offSaddr, cfg.Subnet, expr.CmpOpEq), oif(br, expr.CmpOpNeq), counter(), []expr.Any{&expr.Masq{}})},

		{ch.fwd, join(fromGuests, oif(br, expr.CmpOpEq), addrLookup(offSaddr, s.isolatedAddrs), counter(), drop)},
		{ch.fwd, join(fromGuests, oif(br, expr.CmpOpEq), addrLookup(offDaddr, s.isolatedAddrs), counter(), drop)},
		{ch.fwd, join(fromGuests, addrIn(offSaddr, cfg.Subnet, expr.CmpOpNeq), counter(), drop)},
		{ch.fwd, join(fromGuests, addrIn(offDaddr, netip.MustParsePrefix(linkLocal), expr.CmpOpEq), counter(), drop)},
		{ch.fwd, join(fromGuests, accept)},
		{ch.fwd, join(oif(br, expr.CmpOpEq), ctEstablished(), accept)},
		{ch.fwd, join(oif(br, expr.CmpOpEq), counter(), drop)},

		{ch.brFwd, join(metaLookup(expr.MetaKeyIIFNAME, s.isolatedPorts), counter(), drop)},
		{ch.brFwd, join(metaLookup(expr.MetaKeyOIFNAME, s.isolatedPorts), counter(), drop)},
	}
}

// Remove deletes the bridge's tables, its VMs' egress tables, and with them every rule and set of
// them, and an older banger's host-wide tables if they served this bridge.
// Missing tables are not an error; no other table is touched.
func Remove(ctx context.Context, bridge string) error {
	if err := remove(ctx, bridge); err != nil {
		return fmt.Errorf("remove nftables tables of %s: %w", bridge, err)
	}
	return nil
}

func remove(ctx context.Context, bridge string) error {
	c, err := connect(ctx, network.ValidateBridgeName(bridge))
	if err != nil {
		return err
	}
	doomed, err := legacyTables(c, bridge)
	if err != nil {
		return err
	}
	vmTables, err := egressTables(c, bridge)
	if err != nil {
		return err
	}
	doomed = append(doomed, vmTables...)
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyBridge} {
		t, err := ownTable(c, fam, TableName(bridge))
		if err != nil {
			return err
		}
		if t != nil {
			doomed = append(doomed, t)
		}
	}
	if len(doomed) == 0 {
		return nil
	}
	for _, t := range doomed {
		c.DelTable(t)
	}
	return c.Flush()
}

// Present reports whether the bridge's NAT table exists.
func Present(ctx context.Context, bridge string) (bool, error) {
	c, err := connect(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("look up nftables table %s: %w", TableName(bridge), err)
	}
	t, err := ownTable(c, nftables.TableFamilyIPv4, TableName(bridge))
	if err != nil {
		return false, fmt.Errorf("look up nftables table %s: %w", TableName(bridge), err)
	}
	return t != nil, nil
}

// ownTable returns the table of family named name, or nil if it does not
// exist.
func ownTable(c *nftables.Conn, fam nftables.TableFamily, name string) (*nftables.Table, error) {
	tables, err := c.ListTablesOfFamily(fam)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == name {
			return t, nil
		}
	}
	return nil, nil
}

// legacyTables returns an older banger's host-wide tables if they served
// bridge: its ip table's rules compare interface names with the bridge's.
// Tables serving another bridge belong to another banger and are left
// alone (they match only that bridge's traffic); nil if there are none.
func legacyTables(c *nftables.Conn, bridge string) ([]*nftables.Table, error) {
	ipT, err := ownTable(c, nftables.TableFamilyIPv4, LegacyTableName)
	if err != nil || ipT == nil {
		return nil, err
	}
	serves, err := namesInterface(c, ipT, bridge)
	if err != nil || !serves {
		return nil, err
	}
	out := []*nftables.Table{ipT}
	brT, err := ownTable(c, nftables.TableFamilyBridge, LegacyTableName)
	if err != nil {
		return nil, err
	}
	if brT != nil {
		out = append(out, brT)
	}
	return out, nil
}

// namesInterface reports whether any rule of t compares an interface name
// with name.
func namesInterface(c *nftables.Conn, t *nftables.Table, name string) (bool, error) {
	chains, err := c.ListChainsOfTableFamily(t.Family)
	if err != nil {
		return false, fmt.Errorf("list chains: %w", err)
	}
	want := ifname(name)
	for _, ch := range chains {
		if ch.Table.Name != t.Name {
			continue
		}
		rs, err := c.GetRules(t, ch)
		if err != nil {
			return false, fmt.Errorf("list rules of %s: %w", ch.Name, err)
		}
		for _, r := range rs {
			for _, e := range r.Exprs {
				if cmp, ok := e.(*expr.Cmp); ok && bytes.Equal(cmp.Data, want) {
					return true, nil
				}
			}
		}
	}
	return false, nil
}
