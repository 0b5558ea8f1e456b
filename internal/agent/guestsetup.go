package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Network is what guest setup needs from the kernel's network stack.
type Network interface {
	// Configure brings the loopback and iface up (iface "" means the first
	// non-loopback link), sets mtu (0 keeps it), replaces the address with
	// addr (when valid) and the default route with one via gw (when
	// valid). It returns the interface it configured.
	Configure(iface string, addr netip.Prefix, gw netip.Addr, mtu int) (string, error)
}

// GuestSetup applies BootParams to the guest when the agent starts. Every
// effect goes through a field, so tests run it in a network namespace and a
// scratch directory.
type GuestSetup struct {
	// Root is where /etc/hostname, /etc/hosts and /etc/resolv.conf are
	// written; "/" in a real guest.
	Root string
	// Net configures interfaces; nil skips network setup.
	Net Network
	// SetHostname sets the kernel's hostname; nil skips it.
	SetHostname func(name string) error
}

// Apply configures what p asks for and returns every failure joined: one
// bad step does not stop the others, and the agent serves either way so the
// host can still get in and look.
func (g GuestSetup) Apply(p BootParams) error {
	var errs []error
	if p.Hostname != "" {
		if g.SetHostname != nil {
			if err := g.SetHostname(p.Hostname); err != nil {
				errs = append(errs, fmt.Errorf("set hostname: %w", err))
			}
		}
		if err := g.writeHostname(p.Hostname); err != nil {
			errs = append(errs, err)
		}
	}
	if g.Net != nil && (p.Address.IsValid() || p.MTU != 0 || p.Interface != "") {
		if _, err := g.Net.Configure(p.Interface, p.Address, p.Gateway, p.MTU); err != nil {
			errs = append(errs, fmt.Errorf("configure network: %w", err))
		}
	}
	if len(p.DNS) > 0 {
		if err := g.writeResolvConf(p.DNS, p.Domain); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (g GuestSetup) path(p string) string {
	if g.Root == "" {
		return p
	}
	return filepath.Join(g.Root, p)
}

// writeHostname records the name in /etc/hostname and points 127.0.1.1 at
// it in /etc/hosts, as Debian's installer does, so `hostname -f` and sudo
// resolve it without DNS.
func (g GuestSetup) writeHostname(name string) error {
	if err := os.MkdirAll(g.path("/etc"), 0o755); err != nil {
		return err
	}
	if err := writeFileAtomic(g.path("/etc/hostname"), []byte(name+"\n"), 0o644, -1, -1); err != nil {
		return err
	}
	hostsPath := g.path("/etc/hosts")
	old, err := os.ReadFile(hostsPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var lines []string
	replaced := false
	for _, l := range strings.Split(strings.TrimRight(string(old), "\n"), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "127.0.1.1" {
			if !replaced {
				lines = append(lines, "127.0.1.1\t"+name)
				replaced = true
			}
			continue
		}
		if l != "" || len(lines) > 0 {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		lines = append(lines, "127.0.0.1\tlocalhost")
	}
	if !replaced {
		lines = append(lines, "127.0.1.1\t"+name)
	}
	return writeFileAtomic(hostsPath, []byte(strings.Join(lines, "\n")+"\n"), 0o644, -1, -1)
}

// writeResolvConf replaces /etc/resolv.conf (a symlink to a resolver stub
// included: banger's host answers DNS for the guest).
func (g GuestSetup) writeResolvConf(dns []netip.Addr, domain string) error {
	var b strings.Builder
	b.WriteString("# written by banger-vsock-agent from the kernel command line\n")
	if domain != "" {
		fmt.Fprintf(&b, "search %s\n", domain)
	}
	for _, a := range dns {
		fmt.Fprintf(&b, "nameserver %s\n", a)
	}
	if err := os.MkdirAll(g.path("/etc"), 0o755); err != nil {
		return err
	}
	return writeFileAtomic(g.path("/etc/resolv.conf"), []byte(b.String()), 0o644, -1, -1)
}

// NetlinkNetwork configures interfaces through a netlink handle: the
// guest's own (netlink.NewHandle) or, in tests, one inside a network
// namespace (netlink.NewHandleAt).
type NetlinkNetwork struct {
	Handle *netlink.Handle
}

// Configure implements Network.
func (n NetlinkNetwork) Configure(iface string, addr netip.Prefix, gw netip.Addr, mtu int) (string, error) {
	h := n.Handle
	if lo, err := h.LinkByName("lo"); err == nil {
		if err := h.LinkSetUp(lo); err != nil {
			return "", fmt.Errorf("bring up lo: %w", err)
		}
	}
	link, err := n.pick(iface)
	if err != nil {
		return "", err
	}
	name := link.Attrs().Name
	if mtu != 0 && link.Attrs().MTU != mtu {
		if err := h.LinkSetMTU(link, mtu); err != nil {
			return name, fmt.Errorf("set mtu %d on %s: %w", mtu, name, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return name, fmt.Errorf("bring up %s: %w", name, err)
	}
	if addr.IsValid() {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), 32)}}
		if err := h.AddrReplace(link, a); err != nil {
			return name, fmt.Errorf("set address %s on %s: %w", addr, name, err)
		}
	}
	if gw.IsValid() {
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw.AsSlice(), Dst: nil}
		if err := h.RouteReplace(route); err != nil {
			return name, fmt.Errorf("set default route via %s on %s: %w", gw, name, err)
		}
	}
	return name, nil
}

// pick returns the named link, or the first non-loopback one.
func (n NetlinkNetwork) pick(iface string) (netlink.Link, error) {
	if iface != "" {
		link, err := n.Handle.LinkByName(iface)
		if err != nil {
			return nil, fmt.Errorf("interface %s: %w", iface, err)
		}
		return link, nil
	}
	links, err := n.Handle.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	for _, l := range links {
		if l.Attrs().Flags&net.FlagLoopback == 0 && l.Type() != "sit" && l.Type() != "ipip" {
			return l, nil
		}
	}
	return nil, errors.New("the guest has no network interface besides loopback")
}

// SetKernelHostname sets the UTS hostname.
func SetKernelHostname(name string) error { return unix.Sethostname([]byte(name)) }
