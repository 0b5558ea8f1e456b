package firewall

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/network"
)

// Egress modes: what a VM may open connections to outside banger's
// bridge. Traffic between VMs follows isolation, not egress; the host
// itself is guarded by the input chain either way.
const (
	// EgressAllow lets the VM reach anything NAT reaches (no egress table).
	EgressAllow = "allow"
	// EgressDeny drops everything the VM sends through the host, except
	// replies on connections opened towards it; banger's DNS on the
	// gateway still answers (input chain), but forwards nothing for it.
	EgressDeny = "deny"
	// EgressAllowlist lets the VM reach only its Allow entries and the
	// addresses its allowed names resolved to (Learn).
	EgressAllowlist = "allowlist"
)

// Bounds on what one VM's policy holds.
const (
	// MaxEgressRules bounds a VM's allowlist of addresses.
	MaxEgressRules = 64
	// MaxLearned bounds the addresses one Learn call adds.
	MaxLearned = 64
	// MinLearnedTTL and MaxLearnedTTL clamp how long a learned address
	// stays: a resolver's TTL of 0 would otherwise expire the address
	// before the guest connects.
	MinLearnedTTL = 30 * time.Second
	MaxLearnedTTL = 24 * time.Hour
)

// Names inside a VM's egress table.
const (
	egressSep         = "_"
	egressChain       = "egress"
	learnedSet        = "learned"
	learnedPortsSet   = "learned_ports"
	egressForwardName = "forward"
)

// EgressTableName is the name of the VM's own table ("ip
// banger-banger0_bgt-0123456789a"). '_' is in no bridge name, so one
// bridge's VM tables never look like another bridge's.
func EgressTableName(bridge, tap string) string {
	return TableName(bridge) + egressSep + tap
}

// EgressRule is one allowlist entry: an IPv4 network and, if Port is not
// 0, only that TCP or UDP port on it.
type EgressRule struct {
	Net  netip.Prefix
	Port uint16
}

// String is the entry as the user writes it ("10.0.0.0/8:443").
func (r EgressRule) String() string {
	s := r.Net.String()
	if r.Net.Bits() == 32 {
		s = r.Net.Addr().String()
	}
	if r.Port != 0 {
		s += fmt.Sprintf(":%d", r.Port)
	}
	return s
}

// Egress is a VM's egress policy as the firewall enforces it. Names in a
// user's allowlist are not here: banger's DNS server resolves them and
// hands the answers to Learn.
type Egress struct {
	Bridge string
	Tap    string
	// Addr is the VM's leased address: the bridge's prerouting chain pins
	// it to Tap, so at the IP layer (where the tap is no longer visible)
	// it names the VM.
	Addr netip.Addr
	Mode string
	// Allow is the allowlist's addresses (EgressAllowlist only).
	Allow []EgressRule
}

// Validate checks names, address, mode and bounds.
func (e Egress) Validate() error {
	if err := network.ValidateBridgeName(e.Bridge); err != nil {
		return err
	}
	if err := network.ValidateTapName(e.Tap); err != nil {
		return err
	}
	if !e.Addr.Is4() {
		return fmt.Errorf("%w: address %v must be IPv4", network.ErrInvalid, e.Addr)
	}
	switch e.Mode {
	case EgressAllow, EgressDeny:
		if len(e.Allow) > 0 {
			return fmt.Errorf("%w: egress mode %q takes no allowlist", network.ErrInvalid, e.Mode)
		}
	case EgressAllowlist:
	default:
		return fmt.Errorf("%w: egress mode %q is not allow, deny or allowlist", network.ErrInvalid, e.Mode)
	}
	if len(e.Allow) > MaxEgressRules {
		return fmt.Errorf("%w: %d allowlist entries, at most %d", network.ErrInvalid, len(e.Allow), MaxEgressRules)
	}
	for _, r := range e.Allow {
		if !r.Net.IsValid() || !r.Net.Addr().Is4() || r.Net != r.Net.Masked() {
			return fmt.Errorf("%w: allowlist entry %v must be an IPv4 network without host bits", network.ErrInvalid, r.Net)
		}
	}
	return nil
}

// ApplyEgress replaces the VM's egress rules in one transaction: the VM's
// table (EgressTableName) is deleted and, unless the mode is allow,
// created again with the new rules and empty learned sets. Connections the
// VM had open are forgotten by conntrack afterwards, so they are checked
// against the new policy at their next packet instead of riding on an
// "established" verdict. The VM's address must be admitted (Admit) for
// the rules to mean anything. Idempotent.
func ApplyEgress(ctx context.Context, e Egress) error {
	if err := applyEgress(ctx, e); err != nil {
		return fmt.Errorf("apply egress policy %s to %s (%s): %w", e.Mode, e.Tap, e.Addr, err)
	}
	return nil
}

func applyEgress(ctx context.Context, e Egress) error {
	c, err := connect(ctx, e.Validate())
	if err != nil {
		return err
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: EgressTableName(e.Bridge, e.Tap)}
	c.AddTable(t)
	c.DelTable(t)
	if e.Mode != EgressAllow {
		if err := addEgressTable(c, t, e); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return err
	}
	return forgetConnections(e.Addr)
}

// forgetConnections deletes the conntrack entries the VM's address
// opened, so a new policy applies to them too.
func forgetConnections(addr netip.Addr) error {
	f := &netlink.ConntrackFilter{}
	if err := f.AddIP(netlink.ConntrackOrigSrcIP, net.IP(addr.AsSlice())); err != nil {
		return err
	}
	if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, f); err != nil {
		return fmt.Errorf("forget the VM's connections: %w", err)
	}
	return nil
}

// The address . port key is loaded into two consecutive 32-bit registers
// (the port padded to 4 bytes), as learnedKeys lays the elements out.
const (
	regLearnedAddr = unix.NFT_REG32_00
	regLearnedPort = unix.NFT_REG32_01
)

// learnedPortsKeyType is address . port.
func learnedPortsKeyType() (nftables.SetDatatype, error) {
	return nftables.ConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
}

// addEgressTable queues the VM's table: a forward base chain that sends
// the VM's packets leaving the bridge to the egress chain, which accepts
// replies, the allowlist and learned addresses, and drops the rest.
func addEgressTable(c *nftables.Conn, t *nftables.Table, e Egress) error {
	c.AddTable(t)
	portsType, err := learnedPortsKeyType()
	if err != nil {
		return err
	}
	learned := &nftables.Set{Table: t, Name: learnedSet, ID: 1, KeyType: nftables.TypeIPAddr, HasTimeout: true}
	learnedPorts := &nftables.Set{Table: t, Name: learnedPortsSet, ID: 2, KeyType: portsType, Concatenation: true, HasTimeout: true}
	for _, s := range []*nftables.Set{learned, learnedPorts} {
		if err := c.AddSet(s, nil); err != nil {
			return err
		}
	}
	accept := nftables.ChainPolicyAccept
	fwd := c.AddChain(&nftables.Chain{Name: egressForwardName, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	eg := c.AddChain(&nftables.Chain{Name: egressChain, Table: t})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: join(
		iif(e.Bridge, expr.CmpOpEq), oif(e.Bridge, expr.CmpOpNeq), addrIs(offSaddr, e.Addr),
		[]expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: egressChain}})})
	for _, exprs := range egressRules(e, learned, learnedPorts) {
		c.AddRule(&nftables.Rule{Table: t, Chain: eg, Exprs: exprs})
	}
	return nil
}

// egressRules are the egress chain's rules, in order.
func egressRules(e Egress, learned, learnedPorts *nftables.Set) [][]expr.Any {
	accept, drop := verdict(expr.VerdictAccept), verdict(expr.VerdictDrop)
	out := [][]expr.Any{join(ctEstablished(), accept)}
	if e.Mode == EgressAllowlist {
		for _, r := range e.Allow {
			if r.Port == 0 {
				out = append(out, join(addrIn(offDaddr, r.Net, expr.CmpOpEq), accept))
				continue
			}
			for _, proto := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
				out = append(out, join(addrIn(offDaddr, r.Net, expr.CmpOpEq), l4Proto(proto), dport(r.Port), accept))
			}
		}
		out = append(out, join(addrLookup(offDaddr, learned), accept))
		for _, proto := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			out = append(out, join(l4Proto(proto), []expr.Any{
				&expr.Payload{DestRegister: regLearnedAddr, Base: expr.PayloadBaseNetworkHeader, Offset: offDaddr, Len: 4},
				&expr.Payload{DestRegister: regLearnedPort, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Lookup{SourceRegister: regLearnedAddr, SetName: learnedPorts.Name, SetID: learnedPorts.ID},
			}, accept))
		}
	}
	return append(out, join(counter(), drop))
}

// Learned is an address the VM may reach because an allowed name
// resolved to it: on Port only, or any port when Port is 0, for TTL
// (clamped to MinLearnedTTL–MaxLearnedTTL).
type Learned struct {
	Addr netip.Addr
	Port uint16
	TTL  time.Duration
}

// LearnSpec adds addresses to a VM's learned sets.
type LearnSpec struct {
	Bridge, Tap string
	Addrs       []Learned
}

// Validate checks names and bounds.
func (l LearnSpec) Validate() error {
	if err := network.ValidateBridgeName(l.Bridge); err != nil {
		return err
	}
	if err := network.ValidateTapName(l.Tap); err != nil {
		return err
	}
	if len(l.Addrs) == 0 || len(l.Addrs) > MaxLearned {
		return fmt.Errorf("%w: %d learned addresses, want 1 to %d", network.ErrInvalid, len(l.Addrs), MaxLearned)
	}
	for _, a := range l.Addrs {
		if !a.Addr.Is4() {
			return fmt.Errorf("%w: learned address %v must be IPv4", network.ErrInvalid, a.Addr)
		}
	}
	return nil
}

// ClampTTL is ttl within MinLearnedTTL–MaxLearnedTTL.
func ClampTTL(ttl time.Duration) time.Duration {
	return min(max(ttl, MinLearnedTTL), MaxLearnedTTL)
}

// Learn adds addresses to the VM's learned sets with their TTLs, renewing
// the timeout of those already there. The VM must be in allowlist mode
// (ErrNotEnsured otherwise: it has no table).
func Learn(ctx context.Context, l LearnSpec) error {
	if err := learn(ctx, l); err != nil {
		return fmt.Errorf("learn egress addresses for %s: %w", l.Tap, err)
	}
	return nil
}

func learn(ctx context.Context, l LearnSpec) error {
	c, err := connect(ctx, l.Validate())
	if err != nil {
		return err
	}
	t, err := ownTable(c, nftables.TableFamilyIPv4, EgressTableName(l.Bridge, l.Tap))
	if err != nil {
		return err
	}
	if t == nil {
		return ErrNotEnsured
	}
	all, err := c.GetSets(t)
	if err != nil {
		return fmt.Errorf("list sets: %w", err)
	}
	byName := map[string]*nftables.Set{}
	for _, s := range all {
		byName[s.Name] = s
	}
	learned, learnedPorts := byName[learnedSet], byName[learnedPortsSet]
	if learned == nil || learnedPorts == nil {
		return ErrNotEnsured
	}
	for _, p := range []struct {
		set  *nftables.Set
		keys []learnedKey
	}{{learned, learnedKeys(l.Addrs, false)}, {learnedPorts, learnedKeys(l.Addrs, true)}} {
		if err := renew(c, p.set, p.keys); err != nil {
			return err
		}
	}
	return c.Flush()
}

type learnedKey struct {
	key []byte
	ttl time.Duration
}

// learnedKeys are the keys of addrs for the set with (withPort) or without
// ports: address, or address . port padded to 4 bytes.
func learnedKeys(addrs []Learned, withPort bool) []learnedKey {
	var out []learnedKey
	for _, a := range addrs {
		if (a.Port != 0) != withPort {
			continue
		}
		b := a.Addr.As4()
		key := append([]byte(nil), b[:]...)
		if withPort {
			key = append(key, byte(a.Port>>8), byte(a.Port), 0, 0)
		}
		out = append(out, learnedKey{key, ClampTTL(a.TTL)})
	}
	return out
}

// renew queues keys into set with their timeouts; a key already there is
// deleted first, since adding an existing element keeps its old timeout.
func renew(c *nftables.Conn, set *nftables.Set, keys []learnedKey) error {
	if len(keys) == 0 {
		return nil
	}
	have, err := c.GetSetElements(set)
	if err != nil {
		return fmt.Errorf("list set %s: %w", set.Name, err)
	}
	var stale, fresh []nftables.SetElement
	for _, k := range keys {
		for _, h := range have {
			if bytes.Equal(h.Key, k.key) {
				stale = append(stale, nftables.SetElement{Key: k.key})
				break
			}
		}
		fresh = append(fresh, nftables.SetElement{Key: k.key, Timeout: k.ttl})
	}
	if err := deleteElements(c, set, stale); err != nil {
		return err
	}
	return c.SetAddElements(set, fresh)
}

// queueEgressRemoval queues the deletion of tap's egress table if it
// exists (Evict).
func queueEgressRemoval(c *nftables.Conn, bridge, tap string) error {
	t, err := ownTable(c, nftables.TableFamilyIPv4, EgressTableName(bridge, tap))
	if err != nil || t == nil {
		return err
	}
	c.DelTable(t)
	return nil
}

// egressTables are the VM egress tables of bridge (Remove).
func egressTables(c *nftables.Conn, bridge string) ([]*nftables.Table, error) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	prefix := TableName(bridge) + egressSep
	var out []*nftables.Table
	for _, t := range tables {
		if strings.HasPrefix(t.Name, prefix) {
			out = append(out, t)
		}
	}
	return out, nil
}
