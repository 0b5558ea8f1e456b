package firewall_test

import (
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// addRoute adds a route in the calling thread's namespace.
func addRoute(dst netip.Prefix, via netip.Addr) error {
	return netlink.RouteAdd(&netlink.Route{
		Dst: &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), 32)},
		Gw:  via.AsSlice(),
	})
}
