package agent

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

func goodIdentity() Identity {
	return Identity{
		Hostname:  "fork-1",
		MAC:       "02:fc:00:00:00:09",
		Address:   netip.MustParsePrefix("172.30.0.9/24"),
		Gateway:   netip.MustParseAddr("172.30.0.1"),
		DNS:       []netip.Addr{netip.MustParseAddr("172.30.0.1")},
		Domain:    "banger",
		MTU:       1400,
		MachineID: "0123456789abcdef0123456789abcdef",
		Seed:      bytes.Repeat([]byte{0x5a}, 64),
		Time:      time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC),
	}
}

func TestIdentityValidate(t *testing.T) {
	if err := goodIdentity().Validate(); err != nil {
		t.Fatalf("a good identity was refused: %v", err)
	}
	for _, tt := range []struct {
		name string
		edit func(*Identity)
		want string
	}{
		{"hostname", func(id *Identity) { id.Hostname = "Bad_Name" }, "hostname"},
		{"empty hostname", func(id *Identity) { id.Hostname = "" }, "hostname"},
		{"long hostname", func(id *Identity) { id.Hostname = strings.Repeat("a", 64) }, "hostname"},
		{"mac", func(id *Identity) { id.MAC = "02:fc:00" }, "MAC"},
		{"multicast mac", func(id *Identity) { id.MAC = "01:00:5e:00:00:01" }, "multicast"},
		{"zero mac", func(id *Identity) { id.MAC = "00:00:00:00:00:00" }, "all zeros"},
		{"long mac", func(id *Identity) { id.MAC = "02:00:00:00:00:00:00:01" }, "MAC"},
		{"ipv6 address", func(id *Identity) { id.Address = netip.MustParsePrefix("fd00::9/64") }, "address"},
		{"/0 address", func(id *Identity) { id.Address = netip.MustParsePrefix("172.30.0.9/0") }, "address"},
		{"ipv6 gateway", func(id *Identity) { id.Gateway = netip.MustParseAddr("fd00::1") }, "gateway"},
		{"dns", func(id *Identity) { id.DNS = []netip.Addr{{}} }, "DNS"},
		{"domain", func(id *Identity) { id.Domain = "a..b" }, "domain"},
		{"mtu", func(id *Identity) { id.MTU = 100 }, "MTU"},
		{"interface", func(id *Identity) { id.Interface = "eth0/../x" }, "interface"},
		{"machine-id length", func(id *Identity) { id.MachineID = "0123" }, "machine-id"},
		{"machine-id hex", func(id *Identity) { id.MachineID = strings.Repeat("g", 32) }, "machine-id"},
		{"machine-id case", func(id *Identity) { id.MachineID = strings.Repeat("A", 32) }, "machine-id"},
		{"machine-id zero", func(id *Identity) { id.MachineID = strings.Repeat("0", 32) }, "all zeros"},
		{"no seed", func(id *Identity) { id.Seed = nil }, "seed"},
		{"big seed", func(id *Identity) { id.Seed = make([]byte, MaxIdentitySeed+1) }, "seed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id := goodIdentity()
			tt.edit(&id)
			err := id.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want an error about %s", err, tt.want)
			}
		})
	}
}

// identitySetup is a GuestSetup on a scratch root that records what it
// would do to the kernel.
type identitySetup struct {
	GuestSetup
	net      *recordingNet
	hostname string
	seeds    [][]byte
	clock    time.Time
}

func newIdentitySetup(t *testing.T) *identitySetup {
	s := &identitySetup{net: &recordingNet{}}
	s.GuestSetup = GuestSetup{
		Root:        t.TempDir(),
		Net:         s.net,
		SetHostname: func(n string) error { s.hostname = n; return nil },
		AddEntropy:  func(b []byte) error { s.seeds = append(s.seeds, append([]byte(nil), b...)); return nil },
		SetClock:    func(t time.Time) error { s.clock = t; return nil },
	}
	return s
}

func TestApplyIdentityFiles(t *testing.T) {
	s := newIdentitySetup(t)
	root := s.Root
	// The snapshot's guest: its old name, a machine-id, and a dbus copy of
	// it as a file of its own.
	writeFile(t, filepath.Join(root, "etc/hosts"), "127.0.0.1\tlocalhost\n127.0.1.1\told\n", 0o644)
	writeFile(t, filepath.Join(root, "etc/machine-id"), "ffffffffffffffffffffffffffffffff\n", 0o444)
	writeFile(t, filepath.Join(root, "var/lib/dbus/machine-id"), "ffffffffffffffffffffffffffffffff\n", 0o444)
	id := goodIdentity()
	for range 2 { // idempotent: the second run changes nothing
		iface, err := s.ApplyIdentity(id)
		if err != nil || iface != "eth0" {
			t.Fatalf("ApplyIdentity = %q, %v", iface, err)
		}
	}
	read := func(p string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for path, want := range map[string]string{
		"etc/hostname":            "fork-1\n",
		"etc/hosts":               "127.0.0.1\tlocalhost\n127.0.1.1\tfork-1\n",
		"etc/machine-id":          id.MachineID + "\n",
		"var/lib/dbus/machine-id": id.MachineID + "\n",
	} {
		if got := read(path); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	if rc := read("etc/resolv.conf"); !strings.Contains(rc, "search banger\nnameserver 172.30.0.1\n") {
		t.Errorf("resolv.conf:\n%s", rc)
	}
	if s.hostname != "fork-1" || !s.clock.Equal(id.Time) || len(s.seeds) != 2 || !bytes.Equal(s.seeds[1], id.Seed) {
		t.Errorf("kernel effects: hostname %q clock %v seeds %d", s.hostname, s.clock, len(s.seeds))
	}
	// MAC first (the link goes down for it), then address and route.
	wantCalls := []string{"mac  02:fc:00:00:00:09", "eth0 172.30.0.9/24 172.30.0.1 1400"}
	if got := s.net.calls[:2]; strings.Join(got, "|") != strings.Join(wantCalls, "|") {
		t.Errorf("network calls %q, want %q", got, wantCalls)
	}

	// A dbus machine-id that is a symlink to /etc/machine-id stays one.
	s2 := newIdentitySetup(t)
	if err := os.MkdirAll(filepath.Join(s2.Root, "var/lib/dbus"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/machine-id", filepath.Join(s2.Root, "var/lib/dbus/machine-id")); err != nil {
		t.Fatal(err)
	}
	id.Time = time.Time{} // a zero time leaves the clock alone
	if _, err := s2.ApplyIdentity(id); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(filepath.Join(s2.Root, "var/lib/dbus/machine-id")); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Errorf("dbus machine-id symlink replaced: %v %v", st, err)
	}
	if !s2.clock.IsZero() {
		t.Errorf("clock set to %v for a zero time", s2.clock)
	}

	// Without networking on the host, an identity has no network part and
	// the guest's network is left alone.
	s4 := newIdentitySetup(t)
	bare := Identity{Hostname: "bare", MachineID: id.MachineID, Seed: []byte{1}}
	if err := bare.Validate(); err != nil {
		t.Fatalf("identity without network refused: %v", err)
	}
	if iface, err := s4.ApplyIdentity(bare); err != nil || iface != "" || len(s4.net.calls) != 0 {
		t.Fatalf("ApplyIdentity without network = %q, %v, network calls %q", iface, err, s4.net.calls)
	}

	// A failing step does not stop the others.
	s3 := newIdentitySetup(t)
	s3.net.err = errors.New("no such device")
	if _, err := s3.ApplyIdentity(goodIdentity()); err == nil || !strings.Contains(err.Error(), "no such device") {
		t.Fatalf("ApplyIdentity with a broken network = %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(s3.Root, "etc/machine-id")); err != nil || string(b) != id.MachineID+"\n" {
		t.Errorf("machine-id not written after a network failure: %q %v", b, err)
	}
}

// startFakeSSHD runs a process named sshd (a copy of sleep) and records its
// PID in root's /run/sshd.pid, as Debian's sshd does; it returns a channel
// that reports how the process ended.
func startFakeSSHD(t *testing.T, root string) <-chan error {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("skipping: no sleep binary")
	}
	bin := filepath.Join(t.TempDir(), "sshd")
	data, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, bin, string(data), 0o755)
	cmd := exec.Command(bin, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	writeFile(t, filepath.Join(root, "run/sshd.pid"), strconv.Itoa(cmd.Process.Pid)+"\n", 0o644)
	return exited
}

func TestIdentityOpRegeneratesHostKeys(t *testing.T) {
	s := newIdentitySetup(t)
	srv := &Server{Version: "v-id", Root: s.Root, Setup: &s.GuestSetup}
	c := newClient(t, startServer(t, srv))
	before, err := c.GuestInfo(testCtx(t))
	if err != nil || len(before.HostKeys) != 1 {
		t.Fatalf("guest info: %+v %v", before, err)
	}
	// A key type this agent does not make must not survive either.
	writeFile(t, filepath.Join(s.Root, "etc/ssh/ssh_host_rsa_key"), "old private key", 0o600)
	writeFile(t, filepath.Join(s.Root, "etc/ssh/ssh_host_rsa_key.pub"), before.HostKeys[0]+"\n", 0o644)
	writeFile(t, filepath.Join(s.Root, "etc/ssh/sshd_config"), "# kept\n", 0o644)
	sshd := startFakeSSHD(t, s.Root)

	res, err := c.Reidentify(testCtx(t), goodIdentity())
	if err != nil {
		t.Fatal(err)
	}
	if res.Hostname != "fork-1" || res.Interface != "eth0" || len(res.HostKeys) != 1 || res.HostKeys[0] == before.HostKeys[0] {
		t.Fatalf("result %+v; want fork-1 on eth0 with one new key (old %s)", res, before.HostKeys[0])
	}
	after, err := c.GuestInfo(testCtx(t))
	if err != nil || len(after.HostKeys) != 1 || after.HostKeys[0] != res.HostKeys[0] {
		t.Fatalf("guest info after reidentify: %q %v; want %q", after.HostKeys, err, res.HostKeys)
	}
	if _, err := os.Stat(filepath.Join(s.Root, "etc/ssh/ssh_host_rsa_key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old rsa host key still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.Root, "etc/ssh/sshd_config")); err != nil {
		t.Errorf("sshd_config removed: %v", err)
	}
	// OpenSSH reads the new private key and finds the reported public key
	// in it.
	if keygen, err := exec.LookPath("ssh-keygen"); err == nil {
		out, err := exec.Command(keygen, "-y", "-f", filepath.Join(s.Root, "etc/ssh/ssh_host_ed25519_key")).Output()
		if err != nil || strings.TrimSpace(string(out)) != res.HostKeys[0] {
			t.Errorf("ssh-keygen -y on the new key: %q %v; want %q", out, err, res.HostKeys[0])
		}
	} else {
		t.Log("ssh-keygen not installed: the new private key is not checked with OpenSSH")
	}
	// The running sshd was told to reload (SIGHUP ends the stand-in).
	select {
	case err := <-sshd:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGHUP {
			t.Fatalf("fake sshd ended with %v, want SIGHUP", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sshd was not signalled to load the new host keys")
	}

	// Again: same files, new keys again, no error.
	res2, err := c.Reidentify(testCtx(t), goodIdentity())
	if err != nil || len(res2.HostKeys) != 1 || res2.HostKeys[0] == res.HostKeys[0] {
		t.Fatalf("second reidentify: %+v %v", res2, err)
	}
}

func TestIdentityOpRefusals(t *testing.T) {
	c := newClient(t, startServer(t, &Server{Root: t.TempDir()}))
	// The client refuses a bad identity before sending it.
	bad := goodIdentity()
	bad.MachineID = "nope"
	if _, err := c.Reidentify(testCtx(t), bad); err == nil || !strings.Contains(err.Error(), "machine-id") {
		t.Fatalf("bad identity: %v", err)
	}
	// The agent checks too, for any host that does not.
	_, err := c.Open(testCtx(t), Request{Op: OpIdentity, Identity: &bad})
	var remote *RemoteError
	if !errors.As(err, &remote) || remote.Code != CodeInvalid || !strings.Contains(remote.Message, "machine-id") {
		t.Fatalf("agent accepted a bad identity: %v", err)
	}
	if _, err := c.Open(testCtx(t), Request{Op: OpIdentity}); !errors.As(err, &remote) || remote.Code != CodeInvalid {
		t.Fatalf("identity without parameters: %v", err)
	}
	// An agent without guest setup says so.
	if _, err := c.Reidentify(testCtx(t), goodIdentity()); !errors.As(err, &remote) || !strings.Contains(remote.Message, "no guest setup") {
		t.Fatalf("agent without setup: %v", err)
	}
}

// TestNetlinkIdentityInNamespace gives a dummy interface, set up as the
// snapshot's guest had it, a new MAC, address and default route inside a
// network namespace this test creates.
func TestNetlinkIdentityInNamespace(t *testing.T) {
	requireRoot(t)
	h := namespaceWithEth0(t)
	n := NetlinkNetwork{Handle: h}
	// The snapshot's state: old MAC, old address, default route.
	link, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	old, _ := net.ParseMAC("02:fc:00:00:00:05")
	if err := h.LinkSetHardwareAddr(link, old); err != nil {
		t.Fatalf("set the old MAC: %v", err)
	}
	if _, err := n.Configure("eth0", netip.MustParsePrefix("172.30.0.5/24"), netip.MustParseAddr("172.30.0.1"), 0); err != nil {
		t.Fatal(err)
	}

	g := GuestSetup{Root: t.TempDir(), Net: n}
	id := goodIdentity()
	id.Interface = "eth0"
	for range 2 {
		if iface, err := g.ApplyIdentity(id); err != nil || iface != "eth0" {
			t.Fatalf("ApplyIdentity = %q, %v", iface, err)
		}
	}
	link, err = h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if a := link.Attrs(); a.HardwareAddr.String() != id.MAC || a.Flags&net.FlagUp == 0 || a.MTU != 1400 {
		t.Fatalf("link: MAC %s up %v MTU %d", a.HardwareAddr, a.Flags&net.FlagUp != 0, a.MTU)
	}
	addrs, _ := h.AddrList(link, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "172.30.0.9/24" {
		t.Fatalf("addresses %v; want only 172.30.0.9/24", addrs)
	}
	routes, _ := h.RouteList(link, netlink.FAMILY_V4)
	var gw string
	for _, r := range routes {
		if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
			gw = r.Gw.String()
		}
	}
	if gw != "172.30.0.1" {
		t.Fatalf("default route via %q, routes %v", gw, routes)
	}
}

// TestMACChangesOnTheRunningLink: the new MAC goes onto the link without
// taking it down, so nothing of its configuration (here a route the
// identity would not re-add) is flushed and no down/up cycle is paid.
func TestMACChangesOnTheRunningLink(t *testing.T) {
	requireRoot(t)
	h := namespaceWithEth0(t)
	n := NetlinkNetwork{Handle: h}
	if _, err := n.Configure("eth0", netip.MustParsePrefix("172.30.0.5/24"), netip.Addr{}, 0); err != nil {
		t.Fatal(err)
	}
	link, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	_, dst, _ := net.ParseCIDR("10.9.0.0/16")
	if err := h.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Gw: net.ParseIP("172.30.0.1")}); err != nil {
		t.Fatalf("add a route: %v", err)
	}
	mac, _ := net.ParseMAC("02:fc:00:00:00:09")
	if name, err := n.SetHardwareAddr("eth0", mac); err != nil || name != "eth0" {
		t.Fatalf("SetHardwareAddr = %q, %v", name, err)
	}
	link, err = h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if a := link.Attrs(); a.HardwareAddr.String() != mac.String() || a.Flags&net.FlagUp == 0 {
		t.Fatalf("link: MAC %s up %v", a.HardwareAddr, a.Flags&net.FlagUp != 0)
	}
	routes, _ := h.RouteList(link, netlink.FAMILY_V4)
	if !slices.ContainsFunc(routes, func(r netlink.Route) bool { return r.Dst != nil && r.Dst.String() == "10.9.0.0/16" }) {
		t.Fatalf("the route to 10.9.0.0/16 is gone (the link went down): %v", routes)
	}
}

// namespaceWithEth0 makes a network namespace with one link, eth0, and
// returns a handle in it: a dummy link when the module exists, else a veth
// pair whose peer moves to a second namespace.
func namespaceWithEth0(t *testing.T) *netlink.Handle {
	t.Helper()
	ns := newNetns(t)
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Skipf("skipping: netlink in a namespace: %v", err)
	}
	t.Cleanup(h.Close)
	if err := h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}}); err != nil {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}
		if err := h.LinkAdd(veth); err != nil {
			t.Skipf("skipping: cannot create a dummy or veth link: %v", err)
		}
		peer, err := h.LinkByName("peer0")
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetNsFd(peer, int(newNetns(t))); err != nil {
			t.Fatalf("move veth peer: %v", err)
		}
	}
	return h
}

// TestMixEntropyFallsBackToWriting: a device that is not a random device
// (or a caller without CAP_SYS_ADMIN) gets the seed written instead.
func TestMixEntropyFallsBackToWriting(t *testing.T) {
	f, err := os.OpenFile(filepath.Join(t.TempDir(), "pool"), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seed := []byte("host-sent seed bytes")
	if err := mixEntropy(f, seed); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(f.Name()); !bytes.Equal(b, seed) {
		t.Fatalf("pool holds %q, want the seed", b)
	}
}
