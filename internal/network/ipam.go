package network

import (
	"iter"
	"net/netip"
)

// Gateway is the subnet's first host address: the bridge's own address,
// the guests' default route and their name server.
func Gateway(subnet netip.Prefix) netip.Addr {
	return subnet.Masked().Addr().Next()
}

// Candidates yields the addresses VMs may lease in subnet, in order: every
// host address except the gateway, i.e. from network+2 up to broadcast-1.
// It is the candidates argument of store.AllocateLease. An invalid or
// non-IPv4 subnet, or one too small for any guest, yields nothing.
func Candidates(subnet netip.Prefix) iter.Seq[netip.Addr] {
	return func(yield func(netip.Addr) bool) {
		if !subnet.IsValid() || !subnet.Addr().Is4() || subnet.Bits() > 30 {
			return
		}
		p := subnet.Masked()
		for a := Gateway(p).Next(); p.Contains(a.Next()); a = a.Next() {
			if !yield(a) {
				return
			}
		}
	}
}
