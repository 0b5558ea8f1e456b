package network

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Subnet sizes banger accepts, the same bounds as config's network.subnet:
// a /16 is plenty of VMs, and a /29 still leaves five guest addresses.
const (
	minSubnetBits = 16
	maxSubnetBits = 29
)

// ParseSubnet parses a VM subnet strictly: an IPv4 network in CIDR form
// with no host bits set, between /16 and /29, inside the private ranges
// (10/8, 172.16/12, 192.168/16), so banger never claims public addresses.
func ParseSubnet(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: subnet %q is not a CIDR network such as 172.30.0.0/24", ErrInvalid, s)
	}
	if err := ValidateSubnet(p); err != nil {
		return netip.Prefix{}, err
	}
	return p, nil
}

// ValidateSubnet applies ParseSubnet's rules to an already parsed prefix.
func ValidateSubnet(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return fmt.Errorf("%w: subnet is missing", ErrInvalid)
	case !p.Addr().Is4():
		return fmt.Errorf("%w: subnet %s must be IPv4", ErrInvalid, p)
	case p.Masked() != p:
		return fmt.Errorf("%w: subnet %s has host bits set; did you mean %s?", ErrInvalid, p, p.Masked())
	case p.Bits() < minSubnetBits || p.Bits() > maxSubnetBits:
		return fmt.Errorf("%w: subnet %s must be between /%d and /%d", ErrInvalid, p, minSubnetBits, maxSubnetBits)
	case !p.Addr().IsPrivate():
		return fmt.Errorf("%w: subnet %s must be inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16", ErrInvalid, p)
	}
	return nil
}

// Route is one network the host already reaches through some interface.
type Route struct {
	Dst netip.Prefix
	// Dev is the interface name, for messages ("used by docker0").
	Dev string
	// Owner is set when Dev is another banger instance's bridge.
	Owner Owner
}

// SubnetConflictError says which existing route a subnet overlaps. It
// unwraps to ErrSubnetConflict.
type SubnetConflictError struct {
	Subnet netip.Prefix
	Route  Route
}

func (e *SubnetConflictError) Error() string {
	dev := ""
	if e.Route.Dev != "" {
		dev = " on " + e.Route.Dev
	}
	if e.Route.Owner.StateDir != "" {
		return fmt.Sprintf("subnet %s overlaps %s%s, the bridge of another banger (%s); set network.bridge and network.subnet in your config to use another", e.Subnet, e.Route.Dst, dev, e.Route.Owner)
	}
	return fmt.Sprintf("subnet %s overlaps %s%s; set network.subnet to a free private range", e.Subnet, e.Route.Dst, dev)
}

// Unwrap makes errors.Is(err, ErrSubnetConflict) true.
func (e *SubnetConflictError) Unwrap() error { return ErrSubnetConflict }

// CheckSubnet refuses a subnet that overlaps any of routes (default
// routes excepted: everything overlaps those), since the host could then
// no longer tell VM traffic from traffic for that network.
func CheckSubnet(subnet netip.Prefix, routes []Route) error {
	if err := ValidateSubnet(subnet); err != nil {
		return err
	}
	for _, r := range routes {
		if r.Dst.Bits() == 0 {
			continue
		}
		if r.Dst.Overlaps(subnet) {
			return &SubnetConflictError{Subnet: subnet, Route: r}
		}
	}
	return nil
}

// HostRoutes lists the IPv4 networks the current namespace reaches: routes
// of every routing table (so policy-routed VPNs count) and the networks of
// every assigned address. Routes and addresses on the interface named
// except are left out, so a bridge's own subnet does not conflict with
// itself. Reading routes needs no privilege.
func HostRoutes(ctx context.Context, except string) ([]Route, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list host routes: %w", err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list host routes: list interfaces: %w", err)
	}
	names := make(map[int]string, len(links))
	owners := map[int]Owner{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
		if o, ok := ParseOwnerAlias(l.Attrs().Alias); ok {
			owners[l.Attrs().Index] = o
		}
	}
	var out []Route
	add := func(dst netip.Prefix, ifindex int) {
		dev := names[ifindex]
		if except != "" && dev == except {
			return
		}
		out = append(out, Route{Dst: dst.Masked(), Dev: dev, Owner: owners[ifindex]})
	}

	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list host routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue // default route
		}
		ip, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		add(netip.PrefixFrom(ip.Unmap(), ones), r.LinkIndex)
	}

	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list host routes: list addresses: %w", err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		add(netip.PrefixFrom(ip.Unmap(), ones), a.LinkIndex)
	}
	slices.SortFunc(out, func(a, b Route) int {
		if c := a.Dst.Addr().Compare(b.Dst.Addr()); c != 0 {
			return c
		}
		return a.Dst.Bits() - b.Dst.Bits()
	})
	return slices.Compact(out), nil
}
