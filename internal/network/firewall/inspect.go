package firewall

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/network"
)

// Status is what Inspect found of a bridge's tables.
type Status struct {
	// Missing names each table, chain or set Ensure makes that is not
	// there ("table ip banger-banger0", "chain bridge banger-banger0
	// prerouting"); empty when all are.
	Missing []string
	// Guests are the admitted VMs' bindings (Bridge, Tap, MAC, Addr; not
	// Isolated).
	Guests []Guest
}

// Admitted reports whether tap is bound to mac and addr.
func (s Status) Admitted(tap string, mac net.HardwareAddr, addr netip.Addr) bool {
	for _, g := range s.Guests {
		if g.Tap == tap && g.MAC.String() == mac.String() && g.Addr == addr {
			return true
		}
	}
	return false
}

// Inspect reads the bridge's tables for doctor: what Ensure makes that is
// missing, and the admitted guests. It changes nothing; reading nftables
// needs CAP_NET_ADMIN.
func Inspect(ctx context.Context, bridge string) (Status, error) {
	st, err := inspect(ctx, bridge)
	if err != nil {
		return Status{}, fmt.Errorf("inspect nftables tables of %s: %w", bridge, err)
	}
	return st, nil
}

func inspect(ctx context.Context, bridge string) (Status, error) {
	c, err := connect(ctx, network.ValidateBridgeName(bridge))
	if err != nil {
		return Status{}, err
	}
	name := TableName(bridge)
	var st Status
	for _, want := range []struct {
		fam    nftables.TableFamily
		label  string
		chains []string
		sets   []string
	}{
		{nftables.TableFamilyIPv4, "ip", []string{"postrouting", "forward", "input"}, []string{isolatedAddrsSet}},
		{nftables.TableFamilyBridge, "bridge", []string{"prerouting", "forward"}, []string{portsSet, guestsSet, isolatedPortsSet}},
	} {
		t, err := ownTable(c, want.fam, name)
		if err != nil {
			return Status{}, err
		}
		if t == nil {
			st.Missing = append(st.Missing, fmt.Sprintf("table %s %s", want.label, name))
			continue
		}
		missing, err := missingParts(c, t, want.chains, want.sets)
		if err != nil {
			return Status{}, err
		}
		for _, m := range missing {
			st.Missing = append(st.Missing, fmt.Sprintf("%s %s %s", m, want.label, name))
		}
	}
	s, err := findSets(c, name)
	if err != nil || s.guests == nil {
		return st, err
	}
	elems, err := c.GetSetElements(s.guests)
	if err != nil {
		return Status{}, fmt.Errorf("list admitted guests: %w", err)
	}
	for _, e := range elems {
		if g, ok := decodeGuest(bridge, e.Key); ok {
			st.Guests = append(st.Guests, g)
		}
	}
	return st, nil
}

// missingParts names the chains and sets of t that are not there
// ("chain prerouting").
func missingParts(c *nftables.Conn, t *nftables.Table, chains, sets []string) ([]string, error) {
	have := map[string]bool{}
	all, err := c.ListChainsOfTableFamily(t.Family)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	for _, ch := range all {
		if ch.Table.Name == t.Name {
			have["chain "+ch.Name] = true
		}
	}
	ss, err := c.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("list sets: %w", err)
	}
	for _, s := range ss {
		have["set "+s.Name] = true
	}
	var out []string
	for _, ch := range chains {
		if !have["chain "+ch] {
			out = append(out, "chain "+ch+" of")
		}
	}
	for _, s := range sets {
		if !have["set "+s] {
			out = append(out, "set "+s+" of")
		}
	}
	return out, nil
}

// decodeGuest reads a guests-set key (see guestKey).
func decodeGuest(bridge string, key []byte) (Guest, bool) {
	if len(key) != unix.IFNAMSIZ+8+4 {
		return Guest{}, false
	}
	tap := key[:unix.IFNAMSIZ]
	n := 0
	for n < len(tap) && tap[n] != 0 {
		n++
	}
	mac := net.HardwareAddr(append([]byte(nil), key[unix.IFNAMSIZ:unix.IFNAMSIZ+6]...))
	addr := netip.AddrFrom4([4]byte(key[unix.IFNAMSIZ+8:]))
	return Guest{Bridge: bridge, Tap: string(tap[:n]), MAC: mac, Addr: addr}, true
}
