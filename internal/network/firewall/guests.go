package firewall

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/network"
)

// Names of a bridge's sets.
const (
	// portsSet ("bridge" table) holds the taps Admit listed: the bridge
	// prerouting chain filters frames from these ports and leaves other
	// ports (another instance's) alone.
	portsSet = "ports"
	// guestsSet ("bridge banger") holds one tap . MAC . address binding per
	// admitted VM: what its port may send.
	guestsSet = "guests"
	// isolatedPortsSet ("bridge banger") and isolatedAddrsSet ("ip banger")
	// hold the isolated VMs.
	isolatedPortsSet = "isolated_ports"
	isolatedAddrsSet = "isolated_addrs"
)

// guestKeyType is the bindings' key: tap name . MAC . IPv4 address.
func guestKeyType() (nftables.SetDatatype, error) {
	return nftables.ConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr, nftables.TypeIPAddr)
}

// Guest is one VM's port on banger's bridge: the tap and the MAC and
// address banger gave the VM.
type Guest struct {
	// Bridge is the bridge whose tables admit the VM.
	Bridge string
	Tap    string
	MAC    net.HardwareAddr
	Addr   netip.Addr
	// Isolated also cuts the VM off from the other VMs (`--isolated`).
	Isolated bool
}

// Validate checks the tap name, the MAC (network.ValidateGuestMAC) and the
// address (IPv4).
func (g Guest) Validate() error {
	if err := network.ValidateBridgeName(g.Bridge); err != nil {
		return err
	}
	if err := network.ValidateTapName(g.Tap); err != nil {
		return err
	}
	if err := network.ValidateGuestMAC(g.MAC); err != nil {
		return err
	}
	if !g.Addr.Is4() {
		return fmt.Errorf("%w: address %v must be IPv4", network.ErrInvalid, g.Addr)
	}
	return nil
}

// Admit lets the VM's port send: IPv4 from its MAC and address, and ARP
// for them, nothing else (see Ensure). It lists the tap as this bridge's
// port first, so it may run before the tap exists (the daemon admits a
// port, then creates its tap). It replaces any earlier binding of
// the tap. With g.Isolated it also cuts the VM off from the other VMs:
// frames between its tap and any other bridge port are dropped, and so are
// packets the host would route between it and another guest; it still
// reaches the host's DNS and, through NAT, the outside. Without it, an
// earlier isolation of the tap or address is lifted. Idempotent; needs
// Ensure first (ErrNotEnsured). Admitted VMs survive Ensure but not Remove.
func Admit(ctx context.Context, g Guest) error {
	if err := admit(ctx, g); err != nil {
		return fmt.Errorf("admit %s (%s, %s): %w", g.Tap, g.MAC, g.Addr, err)
	}
	return nil
}

func admit(ctx context.Context, g Guest) error {
	c, err := connect(ctx, g.Validate())
	if err != nil {
		return err
	}
	s, err := findSets(c, TableName(g.Bridge))
	if err != nil {
		return err
	}
	if !s.complete() {
		return ErrNotEnsured
	}
	if err := c.SetAddElements(s.ports, []nftables.SetElement{{Key: ifname(g.Tap)}}); err != nil {
		return err
	}
	if err := replaceBinding(c, s.guests, g); err != nil {
		return err
	}
	if g.Isolated {
		for _, m := range s.isolation(g.Tap, g.Addr) {
			if err := c.SetAddElements(m.set, []nftables.SetElement{{Key: m.key}}); err != nil {
				return err
			}
		}
	} else if err := dropIsolation(c, s, g.Tap, g.Addr); err != nil {
		return err
	}
	return c.Flush()
}

// replaceBinding queues g's binding and the deletion of the tap's other
// bindings (an address or MAC it had before).
func replaceBinding(c *nftables.Conn, set *nftables.Set, g Guest) error {
	key := guestKey(g.Tap, g.MAC, g.Addr)
	old, err := bindingsOf(c, set, g.Tap)
	if err != nil {
		return err
	}
	var stale []nftables.SetElement
	for _, e := range old {
		if !bytes.Equal(e.Key, key) {
			stale = append(stale, e)
		}
	}
	if err := deleteElements(c, set, stale); err != nil {
		return err
	}
	return c.SetAddElements(set, []nftables.SetElement{{Key: key}})
}

// Evict undoes Admit for the VM with tap and addr on bridge: every
// binding of the tap goes, its isolation, its place among the bridge's
// ports and its egress table (ApplyEgress). Idempotent: a VM that was never admitted, or missing tables, are
// not errors. Evict a port only once its tap is gone: a tap not listed
// passes the bridge's prerouting chain unfiltered.
func Evict(ctx context.Context, bridge, tap string, addr netip.Addr) error {
	if err := evict(ctx, bridge, tap, addr); err != nil {
		return fmt.Errorf("evict %s (%s): %w", tap, addr, err)
	}
	return nil
}

func evict(ctx context.Context, bridge, tap string, addr netip.Addr) error {
	if err := network.ValidateBridgeName(bridge); err != nil {
		return err
	}
	if err := network.ValidateTapName(tap); err != nil {
		return err
	}
	if !addr.Is4() {
		return fmt.Errorf("%w: address %v must be IPv4", network.ErrInvalid, addr)
	}
	c, err := connect(ctx, nil)
	if err != nil {
		return err
	}
	s, err := findSets(c, TableName(bridge))
	if err != nil {
		return err
	}
	if s.ports != nil {
		if err := deleteIfPresent(c, s.ports, ifname(tap)); err != nil {
			return err
		}
	}
	if s.guests != nil {
		old, err := bindingsOf(c, s.guests, tap)
		if err != nil {
			return err
		}
		if err := deleteElements(c, s.guests, old); err != nil {
			return err
		}
	}
	if s.isolatedPorts != nil && s.isolatedAddrs != nil {
		if err := dropIsolation(c, s, tap, addr); err != nil {
			return err
		}
	}
	if err := queueEgressRemoval(c, bridge, tap); err != nil {
		return err
	}
	return c.Flush()
}

// sets are a bridge's sets; nil where missing.
type sets struct {
	ports, guests, isolatedPorts, isolatedAddrs *nftables.Set
}

func (s sets) complete() bool {
	return s.ports != nil && s.guests != nil && s.isolatedPorts != nil && s.isolatedAddrs != nil
}

// membership is one element of one set.
type membership struct {
	set *nftables.Set
	key []byte
}

// isolation is what isolating the VM with tap and addr adds.
func (s sets) isolation(tap string, addr netip.Addr) []membership {
	a := addr.As4()
	return []membership{{s.isolatedPorts, ifname(tap)}, {s.isolatedAddrs, a[:]}}
}

// dropIsolation queues the deletion of the isolation elements of tap and
// addr that exist. Only existing ones: deleting an absent element fails
// the whole transaction with ENOENT.
func dropIsolation(c *nftables.Conn, s sets, tap string, addr netip.Addr) error {
	for _, m := range s.isolation(tap, addr) {
		if err := deleteIfPresent(c, m.set, m.key); err != nil {
			return err
		}
	}
	return nil
}

// deleteIfPresent queues the deletion of key from set if it is there.
func deleteIfPresent(c *nftables.Conn, set *nftables.Set, key []byte) error {
	elems, err := c.GetSetElements(set)
	if err != nil {
		return fmt.Errorf("list set %s: %w", set.Name, err)
	}
	for _, e := range elems {
		if bytes.Equal(e.Key, key) {
			return c.SetDeleteElements(set, []nftables.SetElement{{Key: key}})
		}
	}
	return nil
}

func deleteElements(c *nftables.Conn, set *nftables.Set, elems []nftables.SetElement) error {
	if len(elems) == 0 {
		return nil
	}
	return c.SetDeleteElements(set, elems)
}

// guestKey is a binding as the set stores it: each field padded to a
// multiple of 4 bytes (the MAC to 8).
func guestKey(tap string, mac net.HardwareAddr, addr netip.Addr) []byte {
	a := addr.As4()
	key := ifname(tap)
	key = append(key, mac...)
	key = append(key, 0, 0)
	return append(key, a[:]...)
}

// bindingsOf returns the bindings of tap in the guests set.
func bindingsOf(c *nftables.Conn, set *nftables.Set, tap string) ([]nftables.SetElement, error) {
	elems, err := c.GetSetElements(set)
	if err != nil {
		return nil, fmt.Errorf("list admitted guests: %w", err)
	}
	prefix := ifname(tap)
	var out []nftables.SetElement
	for _, e := range keysOnly(elems) {
		if bytes.HasPrefix(e.Key, prefix) {
			out = append(out, e)
		}
	}
	return out, nil
}

// setContents are the elements of a bridge's sets.
type setContents struct {
	ports, guests, isolatedPorts, isolatedAddrs []nftables.SetElement
}

func (s setContents) empty() bool {
	return len(s.ports)+len(s.guests)+len(s.isolatedPorts)+len(s.isolatedAddrs) == 0
}

// addSets adds banger's sets to a transaction that is rebuilding the
// tables, filled with kept.
func addSets(c *nftables.Conn, ipT, brT *nftables.Table, kept setContents) (sets, error) {
	keyType, err := guestKeyType()
	if err != nil {
		return sets{}, err
	}
	// Explicit set IDs keep the library from using its package-wide
	// counter; they only need to be unique within this transaction.
	s := sets{
		guests:        &nftables.Set{Table: brT, Name: guestsSet, ID: 1, KeyType: keyType, Concatenation: true},
		isolatedPorts: &nftables.Set{Table: brT, Name: isolatedPortsSet, ID: 2, KeyType: nftables.TypeIFName},
		isolatedAddrs: &nftables.Set{Table: ipT, Name: isolatedAddrsSet, ID: 3, KeyType: nftables.TypeIPAddr},
		ports:         &nftables.Set{Table: brT, Name: portsSet, ID: 4, KeyType: nftables.TypeIFName},
	}
	for _, p := range []struct {
		set   *nftables.Set
		elems []nftables.SetElement
	}{{s.guests, kept.guests}, {s.isolatedPorts, kept.isolatedPorts}, {s.isolatedAddrs, kept.isolatedAddrs}, {s.ports, kept.ports}} {
		if err := c.AddSet(p.set, p.elems); err != nil {
			return sets{}, err
		}
	}
	return s, nil
}

// members returns the elements of the sets in the tables named table,
// empty where missing, for Ensure to carry them over. Tables without a
// ports set (an older banger's) get one listing the guests' taps.
func members(c *nftables.Conn, table string) (setContents, error) {
	s, err := findSets(c, table)
	if err != nil {
		return setContents{}, err
	}
	var out setContents
	for _, p := range []struct {
		set *nftables.Set
		dst *[]nftables.SetElement
	}{{s.ports, &out.ports}, {s.guests, &out.guests}, {s.isolatedPorts, &out.isolatedPorts}, {s.isolatedAddrs, &out.isolatedAddrs}} {
		if p.set == nil {
			continue
		}
		elems, err := c.GetSetElements(p.set)
		if err != nil {
			return setContents{}, fmt.Errorf("list set %s: %w", p.set.Name, err)
		}
		*p.dst = keysOnly(elems)
	}
	if s.ports == nil {
		out.ports = portsOf(out.guests)
	}
	return out, nil
}

// portsOf lists the taps of guest bindings (their keys start with the
// tap's padded name), once each.
func portsOf(guests []nftables.SetElement) []nftables.SetElement {
	seen := map[string]bool{}
	var out []nftables.SetElement
	for _, g := range guests {
		if len(g.Key) < unix.IFNAMSIZ {
			continue
		}
		tap := string(g.Key[:unix.IFNAMSIZ])
		if !seen[tap] {
			seen[tap] = true
			out = append(out, nftables.SetElement{Key: []byte(tap)})
		}
	}
	return out
}

// findSets returns the sets of the tables named table, nil where missing
// (no tables yet, or tables made by an older banger).
func findSets(c *nftables.Conn, table string) (sets, error) {
	var s sets
	for _, f := range []struct {
		fam  nftables.TableFamily
		name string
		dst  **nftables.Set
	}{
		{nftables.TableFamilyBridge, portsSet, &s.ports},
		{nftables.TableFamilyBridge, guestsSet, &s.guests},
		{nftables.TableFamilyBridge, isolatedPortsSet, &s.isolatedPorts},
		{nftables.TableFamilyIPv4, isolatedAddrsSet, &s.isolatedAddrs},
	} {
		t, err := ownTable(c, f.fam, table)
		if err != nil {
			return sets{}, err
		}
		if t == nil {
			continue
		}
		all, err := c.GetSets(t)
		if err != nil {
			return sets{}, fmt.Errorf("list sets: %w", err)
		}
		for _, set := range all {
			if set.Name == f.name {
				*f.dst = set
			}
		}
	}
	return s, nil
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
