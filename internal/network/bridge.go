package network

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Bridge is banger's bridge: every VM's tap joins it, and the host sits
// on it at the subnet's gateway address.
type Bridge struct {
	// Name must pass ValidateBridgeName ("banger0").
	Name string
	// Subnet must pass ValidateSubnet ("172.30.0.0/24").
	Subnet netip.Prefix
}

// Validate checks the name and the subnet.
func (b Bridge) Validate() error {
	if err := ValidateBridgeName(b.Name); err != nil {
		return err
	}
	return ValidateSubnet(b.Subnet)
}

// Gateway is the bridge's address: the subnet's first host address.
func (b Bridge) Gateway() netip.Addr { return Gateway(b.Subnet) }

// GatewayPrefix is the gateway with the subnet's length, as assigned to
// the bridge ("172.30.0.1/24"); guests use the same length.
func (b Bridge) GatewayPrefix() netip.Prefix {
	return netip.PrefixFrom(b.Gateway(), b.Subnet.Bits())
}

// EnsureBridge makes the bridge exist, carry exactly its gateway address
// (other IPv4 addresses, left by an earlier subnet, are removed), be
// marked as owner's (Owner) and be up. It is idempotent. It refuses a
// bridge another banger instance marked (*OwnedError), a subnet that
// overlaps a route on any other interface (ErrSubnetConflict; another
// instance's bridge among them) and a name already used by an interface
// that is not a bridge (ErrInterfaceConflict). An unmarked bridge of that
// name, as an older banger left it, is adopted.
func EnsureBridge(ctx context.Context, b Bridge, owner Owner) error {
	if err := ensureBridge(ctx, b, owner); err != nil {
		return fmt.Errorf("ensure bridge %s: %w", b.Name, err)
	}
	return nil
}

func ensureBridge(ctx context.Context, b Bridge, owner Owner) error {
	if err := b.Validate(); err != nil {
		return err
	}
	if err := owner.Validate(); err != nil {
		return err
	}
	// Ownership first: another instance's bridge must be named as such,
	// not reported as a subnet conflict or silently re-addressed.
	if err := CheckBridgeOwner(b.Name, owner); err != nil {
		return err
	}
	routes, err := HostRoutes(ctx, b.Name)
	if err != nil {
		return err
	}
	if err := CheckSubnet(b.Subnet, routes); err != nil {
		return err
	}

	link, err := bridgeByName(b.Name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = b.Name
		attrs.HardwareAddr = bridgeMAC(b.Name)
		err = netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs})
		// Another caller may have created it meanwhile; either way it
		// must now exist and be a bridge.
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create: %w", err)
		}
		link, err = bridgeByName(b.Name)
	}
	if err != nil {
		return err
	}

	if err := mark(link, owner.Alias()); err != nil {
		return err
	}
	if mac := bridgeMAC(b.Name); !bytes.Equal(link.Attrs().HardwareAddr, mac) {
		if err := netlink.LinkSetHardwareAddr(link, mac); err != nil {
			return fmt.Errorf("set MAC address: %w", err)
		}
	}

	want := b.GatewayPrefix()
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	have := false
	for _, a := range addrs {
		if p, ok := addrPrefix(a); ok && p == want {
			have = true
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove stale address %s: %w", a.IPNet, err)
		}
	}
	if !have {
		if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: ipNet(want)}); err != nil {
			return fmt.Errorf("assign %s: %w", want, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	return nil
}

// DeleteBridge removes the bridge. A missing bridge is not an error; an
// interface of that name that is not a bridge, or a bridge another
// instance marked, is refused (ErrInterfaceConflict). Taps still attached
// are detached, not deleted.
func DeleteBridge(ctx context.Context, name string, owner Owner) error {
	if err := deleteBridge(ctx, name, owner); err != nil {
		return fmt.Errorf("delete bridge %s: %w", name, err)
	}
	return nil
}

func deleteBridge(ctx context.Context, name string, owner Owner) error {
	if err := ValidateBridgeName(name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	link, err := bridgeByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := checkOwner("bridge", link, owner); err != nil {
		return err
	}
	if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return err
	}
	return nil
}

// bridgeByName returns the named link if it is a bridge, a
// netlink.LinkNotFoundError if absent, or ErrInterfaceConflict.
func bridgeByName(name string) (netlink.Link, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, err
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return nil, fmt.Errorf("%w: interface %s exists and is a %s, not a bridge", ErrInterfaceConflict, name, link.Type())
	}
	return link, nil
}

func addrPrefix(a netlink.Addr) (netip.Prefix, bool) {
	if a.IPNet == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := a.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones), true
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
