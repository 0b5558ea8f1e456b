// Package firewall keeps banger's nftables rules: masquerading NAT for the
// VM subnet, forwarding rules for the bridge, what guests may send to the
// host, per-VM anti-spoofing and per-VM isolation.
//
// Everything lives in banger's own two tables, "ip banger" (NAT, forward
// and input filtering, isolated addresses) and "bridge banger" (each VM's
// port pinned to its MAC and address, isolated bridge ports), built with
// the nftables netlink API in one atomic transaction. banger never lists,
// flushes or edits any other table: Remove deletes its two tables and
// nothing else. Functions act on the current network namespace and need
// CAP_NET_ADMIN; the root helper calls them.
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
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/network"
)

// TableName is the name of both of banger's tables ("ip banger" and
// "bridge banger").
const TableName = "banger"

// linkLocal is where cloud metadata services live (169.254.169.254):
// guests may not reach it through the host.
const linkLocal = "169.254.0.0/16"

// bridgeFilterPriority is the bridge family's "filter" priority: the
// prerouting chain runs before br_netfilter (priority 0) hands frames to
// iptables, so a spoofed frame is gone before anything else sees it.
const bridgeFilterPriority = -200

// ErrNotEnsured means Admit ran before Ensure created banger's tables.
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
// the VMs already registered with Admit. The rules:
//
//   - bridge prerouting: a frame entering a bridge from a banger tap (any
//     port named network.TapPrefix*; "meta ibrname" would name the bridge
//     instead, but needs nft_meta_bridge, which not every kernel has) passes
//     only if it is IPv4 with the MAC and source address Admit
//     pinned to that port, or ARP (Ethernet/IPv4) whose Ethernet source and
//     sender hardware address are that MAC and whose sender address is
//     that address. Everything else is dropped: other ports' addresses,
//     forged MACs, ARP poisoning, IPv6 (banger gives guests none), VLAN
//     tags, frames from ports nobody admitted;
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
	kept, err := members(c)
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
		{ch.brPre, join(iifPrefix(network.TapPrefix, expr.CmpOpNeq), accept)},
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
