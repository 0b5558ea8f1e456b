package agent

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Network is what guest setup needs from the kernel's network stack.
type Network interface {
	// Configure brings the loopback and iface up (iface "" means the first
	// non-loopback link), sets mtu (0 keeps it), makes addr (when valid)
	// the interface's only IPv4 address and replaces the default route
	// with one via gw (when valid). It returns the interface it configured.
	Configure(iface string, addr netip.Prefix, gw netip.Addr, mtu int) (string, error)
	// SetHardwareAddr gives iface ("" as for Configure) the MAC address
	// mac, on the running link when its driver allows, else taking the link
	// down for the change and up again; a link that has mac already is left
	// alone. It returns the interface's name.
	SetHardwareAddr(iface string, mac net.HardwareAddr) (string, error)
}

// GuestSetup applies BootParams to the guest when the agent starts, and an
// Identity when the host makes a restored guest a new machine. Every effect
// goes through a field, so tests run it in a network namespace and a
// scratch directory.
type GuestSetup struct {
	// Root is where /etc/hostname, /etc/hosts, /etc/resolv.conf and
	// /etc/machine-id are written; "/" in a real guest.
	Root string
	// Net configures interfaces; nil skips network setup.
	Net Network
	// SetHostname sets the kernel's hostname; nil skips it.
	SetHostname func(name string) error
	// AddEntropy mixes bytes into the kernel's RNG (AddKernelEntropy); nil
	// skips it.
	AddEntropy func(seed []byte) error
	// SetClock sets the system clock (SetSystemClock); nil skips it.
	SetClock func(time.Time) error
}

// Apply configures what p asks for and returns every failure joined: one
// bad step does not stop the others, and the agent serves either way so the
// host can still get in and look.
func (g GuestSetup) Apply(p BootParams) error {
	var errs []error
	if p.Hostname != "" {
		errs = append(errs, g.applyHostname(p.Hostname))
	}
	if g.Net != nil && (p.Address.IsValid() || p.MTU != 0 || p.Interface != "") {
		if _, err := g.Net.Configure(p.Interface, p.Address, p.Gateway, p.MTU); err != nil {
			errs = append(errs, fmt.Errorf("configure network: %w", err))
		}
	}
	if len(p.DNS) > 0 {
		errs = append(errs, g.writeResolvConf(p.DNS, p.Domain))
	}
	return errors.Join(errs...)
}

// ApplyIdentity makes the guest the machine id describes (id must be
// valid): MAC, then address and default route, resolvers, hostname,
// machine-id, RNG seed and clock, in that order. Every step is a replace, so
// applying the same identity again changes nothing. Like Apply, it runs
// every step and returns the failures joined, with the interface configured
// (id.Interface, or the one picked when that is empty).
func (g GuestSetup) ApplyIdentity(id Identity) (string, error) {
	var errs []error
	iface := id.Interface
	if g.Net != nil {
		iface, errs = g.applyIdentityNetwork(id)
	}
	if len(id.DNS) > 0 {
		errs = append(errs, g.writeResolvConf(id.DNS, id.Domain))
	}
	errs = append(errs, g.applyHostname(id.Hostname), g.writeMachineID(id.MachineID))
	if g.AddEntropy != nil {
		if err := g.AddEntropy(id.Seed); err != nil {
			errs = append(errs, fmt.Errorf("reseed the RNG: %w", err))
		}
	}
	if g.SetClock != nil && !id.Time.IsZero() {
		if err := g.SetClock(id.Time); err != nil {
			errs = append(errs, fmt.Errorf("set the clock: %w", err))
		}
	}
	return iface, errors.Join(errs...)
}

func (g GuestSetup) applyIdentityNetwork(id Identity) (string, []error) {
	iface := id.Interface
	if id.MAC != "" {
		mac, err := parseUnicastMAC(id.MAC)
		if err != nil {
			return iface, []error{err}
		}
		if iface, err = g.Net.SetHardwareAddr(iface, mac); err != nil {
			return iface, []error{fmt.Errorf("set MAC address: %w", err)}
		}
	}
	if id.Address.IsValid() || id.Gateway.IsValid() || id.MTU != 0 || iface != "" {
		name, err := g.Net.Configure(iface, id.Address, id.Gateway, id.MTU)
		if err != nil {
			return iface, []error{fmt.Errorf("configure network: %w", err)}
		}
		iface = name
	}
	return iface, nil
}

// applyHostname sets the kernel's hostname and records it in the files.
func (g GuestSetup) applyHostname(name string) error {
	var errs []error
	if g.SetHostname != nil {
		if err := g.SetHostname(name); err != nil {
			errs = append(errs, fmt.Errorf("set hostname: %w", err))
		}
	}
	return errors.Join(append(errs, g.writeHostname(name))...)
}

// writeMachineID replaces /etc/machine-id, and /var/lib/dbus/machine-id
// when that is a file of its own (it is usually a symlink to the first, or
// absent: then it is left alone).
func (g GuestSetup) writeMachineID(id string) error {
	if err := os.MkdirAll(g.path("/etc"), 0o755); err != nil {
		return err
	}
	data := []byte(id + "\n")
	if err := writeFileAtomic(g.path("/etc/machine-id"), data, 0o444, -1, -1); err != nil {
		return err
	}
	dbus := g.path("/var/lib/dbus/machine-id")
	if st, err := os.Lstat(dbus); err == nil && st.Mode().IsRegular() {
		return writeFileAtomic(dbus, data, 0o444, -1, -1)
	}
	return nil
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
		if err := n.replaceAddr(link, addr); err != nil {
			return name, err
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

// replaceAddr makes addr the link's only IPv4 address. The others go
// first: a restored guest still holds its snapshot's address, and deleting
// a primary address after adding one in the same subnet would take the new
// (secondary) one with it.
func (n NetlinkNetwork) replaceAddr(link netlink.Link, addr netip.Prefix) error {
	name := link.Attrs().Name
	want := &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), 32)}
	have, err := n.Handle.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", name, err)
	}
	for _, a := range have {
		if a.IPNet.String() == want.String() {
			continue
		}
		if err := n.Handle.AddrDel(link, &a); err != nil {
			return fmt.Errorf("remove address %s from %s: %w", a.IPNet, name, err)
		}
	}
	if err := n.Handle.AddrReplace(link, &netlink.Addr{IPNet: want}); err != nil {
		return fmt.Errorf("set address %s on %s: %w", addr, name, err)
	}
	return nil
}

// SetHardwareAddr implements Network.
func (n NetlinkNetwork) SetHardwareAddr(iface string, mac net.HardwareAddr) (string, error) {
	link, err := n.pick(iface)
	if err != nil {
		return "", err
	}
	name := link.Attrs().Name
	if bytes.Equal(link.Attrs().HardwareAddr, mac) {
		return name, nil
	}
	// virtio-net (QEMU's and Firecracker's NIC) takes a new address on a
	// running link (IFF_LIVE_ADDR_CHANGE): the guest only changes the source
	// address it sends from, which is what the bridge and the host's
	// filters see. That skips a down/up cycle (and the route flush it
	// brings) on every restore. Drivers without live changes answer EBUSY
	// and get the cycle.
	err = n.Handle.LinkSetHardwareAddr(link, mac)
	if err == nil {
		return name, nil
	}
	if !errors.Is(err, unix.EBUSY) {
		return name, fmt.Errorf("set MAC %s on %s: %w", mac, name, err)
	}
	if err := n.Handle.LinkSetDown(link); err != nil {
		return name, fmt.Errorf("take %s down: %w", name, err)
	}
	if err := n.Handle.LinkSetHardwareAddr(link, mac); err != nil {
		return name, fmt.Errorf("set MAC %s on %s: %w", mac, name, err)
	}
	if err := n.Handle.LinkSetUp(link); err != nil {
		return name, fmt.Errorf("bring up %s: %w", name, err)
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

// AddKernelEntropy mixes seed into the kernel's RNG and has the CRNG reseed
// from it at once, so guests restored from one snapshot stop sharing random
// streams. As root it credits the bytes (RNDADDENTROPY, they come from the
// host's RNG) and forces a reseed (RNDRESEEDCRNG); without the privilege it
// writes them to /dev/urandom, which mixes them in uncredited.
func AddKernelEntropy(seed []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return mixEntropy(f, seed)
}

// mixEntropy feeds seed to the random device f, by ioctl when allowed and
// supported, else by writing it.
func mixEntropy(f *os.File, seed []byte) error {
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	info := make([]byte, 8+len(seed))
	binary.NativeEndian.PutUint32(info[0:], uint32(8*len(seed)))
	binary.NativeEndian.PutUint32(info[4:], uint32(len(seed)))
	copy(info[8:], seed)
	raw, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ioctlErr error
	if err := raw.Control(func(fd uintptr) {
		ioctlErr = ioctlPtr(fd, unix.RNDADDENTROPY, unsafe.Pointer(&info[0]))
		if ioctlErr == nil {
			ioctlErr = ioctlPtr(fd, unix.RNDRESEEDCRNG, nil)
		}
	}); err != nil {
		return err
	}
	switch {
	case ioctlErr == nil:
		return nil
	case errors.Is(ioctlErr, unix.EPERM), errors.Is(ioctlErr, unix.ENOTTY), errors.Is(ioctlErr, unix.EINVAL):
		if _, err := f.Write(seed); err != nil {
			return fmt.Errorf("write the seed to %s: %w", f.Name(), err)
		}
		return nil
	default:
		return fmt.Errorf("add entropy: %w", ioctlErr)
	}
}

func ioctlPtr(fd uintptr, req uint, arg unsafe.Pointer) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

// SetSystemClock sets CLOCK_REALTIME to t.
func SetSystemClock(t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	return unix.ClockSettime(unix.CLOCK_REALTIME, &ts)
}
