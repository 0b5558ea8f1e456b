package firewall_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/firewall"
	"github.com/banger-dev/banger/internal/network/nstest"
	"github.com/banger-dev/banger/internal/network/portforward"
)

// The tests in this file treat guest A as hostile: each tries one way out
// of what banger's firewall allows a guest and checks, by its effect on the
// host or on guest B, that it fails, next to a control showing the same
// path works for legitimate traffic.

var (
	addrA = netip.MustParseAddr("172.30.0.2")
	addrB = netip.MustParseAddr("172.30.0.3")
	gw    = network.Gateway(subnet)
)

// quiet is how long a test waits to be sure something did not arrive.
const quiet = time.Second

// guestPair is banger's bridge with two admitted guests, A and B, in the
// test's sandbox namespace (the "host").
type guestPair struct {
	a, b *nstest.NS
}

// newGuestPair builds the pair and, when the test ends, removes banger's
// tables and checks that nothing of them is left.
func newGuestPair(t *testing.T) guestPair {
	t.Helper()
	ctx := context.Background()
	if err := network.EnsureBridge(ctx, network.Bridge{Name: cfg.Bridge, Subnet: subnet}, testOwner); err != nil {
		t.Fatal(err)
	}
	p := guestPair{a: nstest.NewNS(t), b: nstest.NewNS(t)}
	nstest.Link(t, p.a, nstest.LinkConfig{HostName: "bgt-ga", Master: cfg.Bridge, GuestAddr: netip.PrefixFrom(addrA, 24), GuestMAC: macA, Gateway: gw})
	nstest.Link(t, p.b, nstest.LinkConfig{HostName: "bgt-gb", Master: cfg.Bridge, GuestAddr: netip.PrefixFrom(addrB, 24), GuestMAC: macB, Gateway: gw})
	if err := network.SetIPForward(true); err != nil {
		t.Fatal(err)
	}
	if err := firewall.Ensure(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { assertRemoved(t) })
	for _, g := range []firewall.Guest{{Bridge: cfg.Bridge, Tap: "bgt-ga", MAC: macA, Addr: addrA}, {Bridge: cfg.Bridge, Tap: "bgt-gb", MAC: macB, Addr: addrB}} {
		if err := firewall.Admit(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// assertRemoved runs Remove and checks that no banger table survives.
func assertRemoved(t *testing.T) {
	t.Helper()
	if err := firewall.Remove(context.Background(), cfg.Bridge); err != nil {
		t.Errorf("Remove: %v", err)
		return
	}
	c, err := nftables.New()
	if err != nil {
		t.Error(err)
		return
	}
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyBridge} {
		tables, err := c.ListTablesOfFamily(fam)
		if err != nil {
			t.Error(err)
		}
		for _, tb := range tables {
			if tb.Name == firewall.TableName(cfg.Bridge) {
				t.Errorf("table %v %s survived Remove", fam, tb.Name)
			}
		}
	}
}

// udpSink listens on addr in the host namespace and reports the source of
// every datagram.
func udpSink(t *testing.T, addr netip.AddrPort) <-chan netip.Addr {
	t.Helper()
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	seen := make(chan netip.Addr, 64)
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			select {
			case seen <- from.Addr().Unmap():
			default:
			}
		}
	}()
	return seen
}

// sendUDP sends one datagram from src (any local address if invalid) in ns
// to dst.
func sendUDP(t *testing.T, ns *nstest.NS, src netip.Addr, dst netip.AddrPort) {
	t.Helper()
	err := ns.Do(func() error {
		var laddr *net.UDPAddr
		if src.IsValid() {
			laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
		}
		c, err := net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer func() { _ = c.Close() }()
		_, err = c.Write([]byte("probe"))
		return err
	})
	if err != nil {
		t.Fatalf("send from %v to %s: %v", src, dst, err)
	}
}

// arrives reports whether a datagram from src reaches the sink within
// wait; others are skipped.
func arrives(seen <-chan netip.Addr, src netip.Addr, wait time.Duration) bool {
	deadline := time.After(wait)
	for {
		select {
		case from := <-seen:
			if from == src {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// mustDeliver sends from src in ns to dst until a datagram from src
// reaches the sink, for a few seconds: a veth that has just come up may
// drop the first packets.
func mustDeliver(t *testing.T, what string, ns *nstest.NS, src netip.Addr, dst netip.AddrPort, seen <-chan netip.Addr) {
	t.Helper()
	for range 25 {
		sendUDP(t, ns, src, dst)
		if arrives(seen, src, 200*time.Millisecond) {
			return
		}
	}
	t.Fatalf("%s: nothing from %s arrived at %s; the path for legitimate traffic is broken", what, src, dst)
}

// mustNotDeliver sends from src in ns to dst and checks nothing from src
// reaches the sink.
func mustNotDeliver(t *testing.T, what string, ns *nstest.NS, src netip.Addr, dst netip.AddrPort, seen <-chan netip.Addr) {
	t.Helper()
	sendUDP(t, ns, src, dst)
	if arrives(seen, src, quiet) {
		t.Errorf("%s: a datagram from %s arrived at %s, want it dropped", what, src, dst)
	}
}

// TestGuestCannotSendAsAnotherGuest: guest A takes guest B's address as
// its own and sends from it; nothing arrives.
func TestGuestCannotSendAsAnotherGuest(t *testing.T) {
	t.Parallel()
	if nstest.Sandbox(t) {
		return
	}
	p := newGuestPair(t)
	dst := netip.AddrPortFrom(gw, 53)
	dns := udpSink(t, dst)
	mustDeliver(t, "guest A from its own address", p.a, addrA, dst, dns)

	addAddr(t, p.a, netip.PrefixFrom(addrB, 32))
	mustNotDeliver(t, "guest A sending as guest B", p.a, addrB, dst, dns)
	outside := netip.MustParseAddr("172.30.1.9")
	addAddr(t, p.a, netip.PrefixFrom(outside, 32))
	mustNotDeliver(t, "guest A sending from an address nobody leased", p.a, outside, dst, dns)
}

// TestAdmitReplacesBinding: admitting a tap again with another address
// (a new lease) takes the old address away from it.
func TestAdmitReplacesBinding(t *testing.T) {
	t.Parallel()
	if nstest.Sandbox(t) {
		return
	}
	p := newGuestPair(t)
	ctx := context.Background()
	old := netip.MustParseAddr("172.30.0.9")
	for _, addr := range []netip.Addr{old, addrA} {
		if err := firewall.Admit(ctx, firewall.Guest{Bridge: cfg.Bridge, Tap: "bgt-ga", MAC: macA, Addr: addr}); err != nil {
			t.Fatal(err)
		}
	}
	dst := netip.AddrPortFrom(gw, 53)
	dns := udpSink(t, dst)
	mustDeliver(t, "guest A from its current address", p.a, addrA, dst, dns)
	addAddr(t, p.a, netip.PrefixFrom(old, 32))
	mustNotDeliver(t, "guest A from its previous address", p.a, old, dst, dns)
}

// TestGuestCannotForgeMAC: guest A sends from its own address but another
// MAC, B's or a made-up one; nothing arrives, and the bridge does not learn
// B's MAC on A's port (which would send A the host's frames for B).
func TestGuestCannotForgeMAC(t *testing.T) {
	t.Parallel()
	if nstest.Sandbox(t) {
		return
	}
	p := newGuestPair(t)
	dst := netip.AddrPortFrom(gw, 53)
	dns := udpSink(t, dst)
	srvB := serveRemoteAddr(t, p.b, netip.AddrPortFrom(addrB, 9000).String())
	// The host learns B's MAC now, so below it sends to B without asking.
	mustReach(t, "host to guest B", nil, srvB)
	mustDeliver(t, "guest A with its own MAC", p.a, addrA, dst, dns)

	for _, forged := range []net.HardwareAddr{macB, {0x02, 0, 0, 0, 0, 0x0c}} {
		setMAC(t, p.a, forged)
		// A pins the gateway's MAC so that it sends IPv4 without asking
		// first (its ARP questions from a forged MAC are dropped anyway).
		// After the MAC change: that flushes every neighbour entry.
		pinGatewayMAC(t, p.a)
		mustNotDeliver(t, "guest A with MAC "+forged.String(), p.a, addrA, dst, dns)
	}
	mustReach(t, "host to guest B after A sent as B's MAC", nil, srvB)

	setMAC(t, p.a, macA)
	mustDeliver(t, "guest A with its own MAC again", p.a, addrA, dst, dns)
}

// TestGuestCannotPoisonARP: guest A announces, by gratuitous ARP, that B's
// address is at A's MAC; the host's neighbour entry for B does not change.
func TestGuestCannotPoisonARP(t *testing.T) {
	t.Parallel()
	if nstest.Sandbox(t) {
		return
	}
	p := newGuestPair(t)
	// The most trusting host: it even creates entries from announcements.
	arpAccept := "/proc/sys/net/ipv4/conf/" + cfg.Bridge + "/arp_accept"
	if err := os.WriteFile(arpAccept, []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srvB := serveRemoteAddr(t, p.b, netip.AddrPortFrom(addrB, 9000).String())
	mustReach(t, "host to guest B", nil, srvB)
	if mac := hostNeighbour(t, addrB); mac.String() != macB.String() {
		t.Fatalf("host's neighbour entry for B is %v, want %v", mac, macB)
	}

	// A legitimate announcement (A's own address) passes: the host learns
	// A's entry from it.
	sendGratuitousARP(t, p.a, macA, addrA)
	deadline := time.Now().Add(quiet)
	for hostNeighbour(t, addrA).String() != macA.String() {
		if time.Now().After(deadline) {
			t.Fatalf("guest A's announcement of its own address never reached the host; the ARP path is broken")
		}
		time.Sleep(20 * time.Millisecond)
	}

	sendGratuitousARP(t, p.a, macA, addrB)
	deadline = time.Now().Add(quiet)
	for time.Now().Before(deadline) {
		if mac := hostNeighbour(t, addrB); mac.String() != macB.String() {
			t.Fatalf("after A's gratuitous ARP the host has B's address at %v, want B's %v", mac, macB)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mustReach(t, "host to guest B after A's announcement", nil, srvB)
}

// TestGuestReachesOnlyDNSOnHost: a service listening on every host address
// is out of a guest's reach through the gateway and through the host's
// other addresses; DNS and ICMP echo on the gateway are not, and neither
// are the replies of connections the host opens to the guest (port
// forwards, SSH).
func TestGuestReachesOnlyDNSOnHost(t *testing.T) {
	t.Parallel()
	if nstest.Sandbox(t) {
		return
	}
	p := newGuestPair(t)
	// Another host address, standing in for its LAN address.
	lan := netip.MustParseAddr("192.0.2.1")
	nstest.Link(t, nstest.NewNS(t), nstest.LinkConfig{HostName: "lan0", HostAddr: netip.PrefixFrom(lan, 24), GuestAddr: netip.MustParsePrefix("192.0.2.2/24")})
	wildcard := serveRemoteAddr(t, nil, "0.0.0.0:8080")
	mustReach(t, "host to its own 0.0.0.0 listener", nil, "127.0.0.1:8080")
	for _, addr := range []netip.Addr{gw, lan} {
		mustNotReach(t, "guest A to a host service on "+addr.String()+" (listening on "+wildcard+")", p.a, netip.AddrPortFrom(addr, 8080).String())
	}

	mustReach(t, "guest A to DNS over TCP on the gateway", p.a, serveRemoteAddr(t, nil, netip.AddrPortFrom(gw, 53).String()))
	dst := netip.AddrPortFrom(gw, 53)
	mustDeliver(t, "guest A to DNS over UDP on the gateway", p.a, addrA, dst, udpSink(t, dst))
	pingErr := ping(p.a, gw)
	for i := 0; pingErr != nil && i < 4; i++ {
		pingErr = ping(p.a, gw)
	}
	if pingErr != nil {
		t.Errorf("guest A pinging the gateway: %v", pingErr)
	}

	app := serveRemoteAddr(t, p.a, netip.AddrPortFrom(addrA, 9000).String())
	fwd, err := portforward.Start(netip.MustParseAddrPort("127.0.0.1:0"), netip.MustParseAddrPort(app), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fwd.Stop() })
	mustReach(t, "host to guest A through a port forward", nil, fwd.Addr().String())
}

// TestGuestCannotReachLinkLocal: a metadata service at 169.254.169.254,
// reachable from the host, is not reachable from a guest through the host.
func TestGuestCannotReachLinkLocal(t *testing.T) {
	t.Parallel()
	if nstest.Sandbox(t) {
		return
	}
	p := newGuestPair(t)
	md := nstest.NewNS(t)
	nstest.Link(t, md, nstest.LinkConfig{HostName: "md0", HostAddr: netip.MustParsePrefix("169.254.169.1/16"), GuestAddr: netip.MustParsePrefix("169.254.169.254/16")})
	metadata := serveRemoteAddr(t, md, "169.254.169.254:80")
	mustReach(t, "host to the metadata service", nil, metadata)
	mustNotReach(t, "guest A to the metadata service", p.a, metadata)
}

// TestGuestCannotUseIPv6: banger gives guests no IPv6, so a guest that
// configures some anyway reaches nothing on the host with it, not even a
// service listening on every address.
func TestGuestCannotUseIPv6(t *testing.T) {
	t.Parallel()
	if nstest.Sandbox(t) {
		return
	}
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		t.Skip("the kernel has no IPv6")
	}
	p := newGuestPair(t)
	hostV6, guestV6 := netip.MustParsePrefix("fd00:ba::1/64"), netip.MustParsePrefix("fd00:ba::2/64")
	br, err := netlink.LinkByName(cfg.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	// No duplicate address detection: the addresses are usable at once.
	if err := netlink.AddrAdd(br, &netlink.Addr{IPNet: prefixNet(hostV6), Flags: unix.IFA_F_NODAD}); err != nil {
		t.Fatal(err)
	}
	nh := p.a.Netlink(t)
	eth0, err := nh.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := nh.AddrAdd(eth0, &netlink.Addr{IPNet: prefixNet(guestV6), Flags: unix.IFA_F_NODAD}); err != nil {
		t.Fatal(err)
	}
	wildcard := serveRemoteAddr(t, nil, "[::]:8080")
	mustReach(t, "host to its own [::] listener", nil, netip.AddrPortFrom(hostV6.Addr(), 8080).String())
	mustNotReach(t, "guest A over IPv6 to a host service (listening on "+wildcard+")", p.a, netip.AddrPortFrom(hostV6.Addr(), 8080).String())
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func addAddr(t *testing.T, ns *nstest.NS, p netip.Prefix) {
	t.Helper()
	nh := ns.Netlink(t)
	eth0, err := nh.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := nh.AddrAdd(eth0, &netlink.Addr{IPNet: prefixNet(p)}); err != nil {
		t.Fatalf("add %s in guest: %v", p, err)
	}
}

// pinGatewayMAC adds a permanent neighbour entry for the gateway in ns.
func pinGatewayMAC(t *testing.T, ns *nstest.NS) {
	t.Helper()
	br, err := netlink.LinkByName(cfg.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	nh := ns.Netlink(t)
	eth0, err := nh.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	n := &netlink.Neigh{LinkIndex: eth0.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: gw.AsSlice(), HardwareAddr: br.Attrs().HardwareAddr}
	if err := nh.NeighSet(n); err != nil {
		t.Fatalf("pin the gateway's MAC in the guest: %v", err)
	}
}

func setMAC(t *testing.T, ns *nstest.NS, mac net.HardwareAddr) {
	t.Helper()
	nh := ns.Netlink(t)
	eth0, err := nh.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := nh.LinkSetHardwareAddr(eth0, mac); err != nil {
		t.Fatalf("set guest MAC to %s: %v", mac, err)
	}
}

// hostNeighbour is the MAC the host's neighbour table has for addr on the
// bridge, nil if none.
func hostNeighbour(t *testing.T, addr netip.Addr) net.HardwareAddr {
	t.Helper()
	br, err := netlink.LinkByName(cfg.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	neighs, err := netlink.NeighList(br.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == addr {
			return n.HardwareAddr
		}
	}
	return nil
}

// sendGratuitousARP broadcasts, from eth0 in ns, an ARP request saying
// that claim is at mac (Ethernet source mac too).
func sendGratuitousARP(t *testing.T, ns *nstest.NS, mac net.HardwareAddr, claim netip.Addr) {
	t.Helper()
	ip := claim.As4()
	frame := make([]byte, 0, 42)
	frame = append(frame, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	frame = append(frame, mac...)
	frame = binary.BigEndian.AppendUint16(frame, unix.ETH_P_ARP)
	frame = append(frame, 0, 1, 0x08, 0, 6, 4, 0, 1) // Ethernet, IPv4, request
	frame = append(frame, mac...)
	frame = append(frame, ip[:]...)
	frame = append(frame, 0, 0, 0, 0, 0, 0)
	frame = append(frame, ip[:]...)
	err := ns.Do(func() error {
		eth0, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer func() { _ = unix.Close(fd) }()
		to := &unix.SockaddrLinklayer{Ifindex: eth0.Index, Protocol: htons(unix.ETH_P_ARP), Halen: 6}
		copy(to.Addr[:], frame[:6])
		return unix.Sendto(fd, frame, 0, to)
	})
	if err != nil {
		t.Fatalf("send gratuitous ARP for %s: %v", claim, err)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// ping sends one ICMP echo request from ns to dst and waits for the reply.
func ping(ns *nstest.NS, dst netip.Addr) error {
	return ns.Do(func() error {
		c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			return err
		}
		defer func() { _ = c.Close() }()
		id := uint16(os.Getpid())
		req := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), 0, 1, 'b', 'g'}
		binary.BigEndian.PutUint16(req[2:], icmpChecksum(req))
		if _, err := c.WriteTo(req, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(quiet))
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return errors.Join(errors.New("no echo reply"), err)
			}
			if from.String() == dst.String() && n >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[4:]) == id {
				return nil
			}
		}
	})
}

func icmpChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
