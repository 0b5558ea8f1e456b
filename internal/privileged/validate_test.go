package privileged

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
)

// Inputs an attacker holding the owner's uid might send. Each table must be
// refused with ErrInvalidArgument; the valid row next to each proves the
// table is not refusing everything.

var hostileNames = []string{
	"", "eth0", "lo", "docker0", "wlan0", "virbr0", "br0", "tap0", "vnet0",
	"banger0;reboot", "banger$(id)", "banger`id`", "banger0 eth0", "banger0\n",
	"banger0|nc", "banger0&", "banger0>x", "bgt-$(rm -rf /)", "bgt-a;b",
	"banger0/../eth0", "../banger0", "BANGER0", "banger_0", "banger0.1",
	"banger0123456789", // 16 chars, longer than IFNAMSIZ-1
	"bgt-", "bgt-0123456789ab", "banger\x00eth0", "bañger0", "bgt-é",
}

func TestBridgeSpecHostile(t *testing.T) {
	good := BridgeSpec{Name: "banger0", Subnet: netip.MustParsePrefix("172.30.0.0/24")}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid spec refused: %v", err)
	}
	var cases []BridgeSpec
	for _, n := range append(hostileNames, "bgt-0123") { // a tap name is not a bridge
		cases = append(cases, BridgeSpec{Name: n, Subnet: good.Subnet})
	}
	for _, p := range hostilePrefixes() {
		cases = append(cases, BridgeSpec{Name: "banger0", Subnet: p})
	}
	for _, c := range cases {
		assertInvalid(t, c.Validate(), "%+v", c)
	}
}

// hostilePrefixes: huge, public, IPv6, host bits, zero value.
func hostilePrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/0", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/15", "10.0.0.0/1",
		"8.8.8.0/24", "1.1.1.0/24", "100.64.0.0/24", "127.0.0.0/24", "169.254.0.0/24",
		"224.0.0.0/24", "172.30.0.1/24", "172.30.0.0/30", "172.30.0.0/32",
		"fd00::/64", "::/0", "::ffff:172.30.0.0/120",
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return append(out, netip.Prefix{})
}

func TestTapSpecHostile(t *testing.T) {
	good := TapSpec{Name: "bgt-0123abcd456", Bridge: "banger0", UID: 1000, GID: 1000}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid spec refused: %v", err)
	}
	var cases []TapSpec
	for _, n := range append(hostileNames, "banger0") { // a bridge name is not a tap
		cases = append(cases, TapSpec{Name: n, Bridge: "banger0", UID: 1000, GID: 1000})
	}
	for _, n := range append(hostileNames, good.Name) { // nor a tap a bridge
		cases = append(cases, TapSpec{Name: good.Name, Bridge: n, UID: 1000, GID: 1000})
	}
	for _, id := range [][2]int{{-1, 1000}, {1000, -1}, {1 << 32, 0}, {0, 1<<31 - 1}} {
		cases = append(cases, TapSpec{Name: good.Name, Bridge: "banger0", UID: id[0], GID: id[1]})
	}
	for _, c := range cases {
		assertInvalid(t, c.Validate(), "%+v", c)
	}
}

func TestNATSpecHostile(t *testing.T) {
	good := NATSpec{Subnet: netip.MustParsePrefix("10.77.0.0/24"), Bridge: "banger0"}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid spec refused: %v", err)
	}
	for _, p := range hostilePrefixes() {
		assertInvalid(t, NATSpec{Subnet: p, Bridge: "banger0"}.Validate(), "subnet %s", p)
	}
	for _, n := range hostileNames {
		assertInvalid(t, NATSpec{Subnet: good.Subnet, Bridge: n}.Validate(), "bridge %q", n)
	}
}

func TestResolverSpecHostile(t *testing.T) {
	good := ResolverSpec{Link: "banger0", Server: netip.MustParseAddr("172.30.0.1"), Domain: "banger"}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid spec refused: %v", err)
	}
	for _, d := range []string{"vm.banger", "dev.internal", "test", "lab.home.arpa"} {
		s := good
		s.Domain = d
		if err := s.Validate(); err != nil {
			t.Errorf("domain %q refused: %v", d, err)
		}
	}
	var cases []ResolverSpec
	for _, n := range hostileNames {
		s := good
		s.Link = n
		cases = append(cases, s)
	}
	for _, a := range []string{"8.8.8.8", "127.0.0.53", "fd00::1", "0.0.0.0", "::ffff:172.30.0.1", "255.255.255.255", "224.0.0.251"} {
		s := good
		s.Server = netip.MustParseAddr(a)
		cases = append(cases, s)
	}
	s := good
	s.Server = netip.Addr{}
	cases = append(cases, s)
	for _, d := range []string{
		"", ".", "~.", "com", "google.com", "example.org", "local", "banger.", ".banger",
		"banger;rm -rf /", "$(id).banger", "a b.banger", "BANGER", "-x.banger", "x-.banger",
		"arpa", strings.Repeat("a", 64) + ".banger", strings.Repeat("a.", 130) + "banger",
		"banger\n", "xn--80ak6aa92e.com",
	} {
		s := good
		s.Domain = d
		cases = append(cases, s)
	}
	for _, c := range cases {
		assertInvalid(t, c.Validate(), "%+v", c)
	}
}

func TestIsolationSpecHostile(t *testing.T) {
	good := IsolationSpec{Bridge: "banger0", Tap: "bgt-0123abcd456", MAC: "02:00:00:00:00:02", Addr: netip.MustParseAddr("172.30.0.2")}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid spec refused: %v", err)
	}
	var cases []IsolationSpec
	for _, n := range append(hostileNames, "banger0") {
		cases = append(cases, IsolationSpec{Bridge: good.Bridge, Tap: n, MAC: good.MAC, Addr: good.Addr})
	}
	for _, a := range []string{"8.8.8.8", "0.0.0.0", "127.0.0.1", "fd00::2", "::ffff:172.30.0.2"} {
		cases = append(cases, IsolationSpec{Bridge: good.Bridge, Tap: good.Tap, MAC: good.MAC, Addr: netip.MustParseAddr(a)})
	}
	// No MAC, broadcast, multicast, vendor-assigned (not locally
	// administered), not 6 bytes, not a MAC.
	for _, m := range []string{"", "ff:ff:ff:ff:ff:ff", "03:00:00:00:00:01", "00:16:3e:00:00:01", "02:00:00:00:00:00:00:01", "02-00-00-00-00-02; rm -rf /"} {
		cases = append(cases, IsolationSpec{Bridge: good.Bridge, Tap: good.Tap, MAC: m, Addr: good.Addr})
	}
	cases = append(cases, IsolationSpec{Bridge: good.Bridge, Tap: good.Tap, MAC: good.MAC})
	for _, b := range append(hostileNames, "", "bgt-abc") {
		cases = append(cases, IsolationSpec{Bridge: b, Tap: good.Tap, MAC: good.MAC, Addr: good.Addr})
	}
	for _, c := range cases {
		assertInvalid(t, c.Validate(), "%+v", c)
	}
}

func TestLoopDeviceHostile(t *testing.T) {
	for _, d := range []string{"/dev/loop0", "/dev/loop7", "/dev/loop1048575"} {
		if err := ValidLoopDevice(d); err != nil {
			t.Errorf("%s refused: %v", d, err)
		}
	}
	for _, d := range []string{
		"", "/dev/loop", "/dev/loop-1", "/dev/loop01", "/dev/loop1048576", "/dev/loop99999999",
		"/dev/sda", "/dev/mapper/control", "/dev/loop0/../sda", "/dev/loop0;reboot",
		"/dev/loop0 ", "loop0", "/dev/../dev/loop0", "/dev//loop0", "/dev/loop+1", "/dev/loop1e3",
		"/dev/loop０", "/proc/self/root/dev/loop0",
	} {
		assertInvalid(t, ValidLoopDevice(d), "%q", d)
	}
}

func TestSnapshotSpecHostile(t *testing.T) {
	good := SnapshotSpec{Name: "banger-0a1b2c", Origin: "/dev/loop1", COW: "/dev/loop2", SizeBytes: 4 << 30}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid spec refused: %v", err)
	}
	var cases []SnapshotSpec
	for _, n := range []string{
		"", "banger-", "banger", "root", "banger-a-origin", "banger-A", "banger-a;b", "banger-$(id)",
		"banger-../../x", "banger-" + strings.Repeat("a", 50), "vg0-root", "banger-a b", "banger-\n",
	} {
		s := good
		s.Name = n
		cases = append(cases, s)
	}
	for _, d := range []string{"/dev/sda", "/dev/mapper/root", "/dev/loop1;x", ""} {
		s := good
		s.Origin = d
		cases = append(cases, s)
		s = good
		s.COW = d
		cases = append(cases, s)
	}
	s := good
	s.COW = s.Origin
	cases = append(cases, s)
	for _, n := range []int64{-512, 513, 65<<40 + 512} {
		s := good
		s.SizeBytes = n
		cases = append(cases, s)
	}
	for _, c := range cases {
		assertInvalid(t, c.Validate(), "%+v", c)
	}
}

func TestLoopAttachShape(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if err := (LoopAttach{Backing: f, Name: "banger-abc-base"}).Validate(); err != nil {
		t.Fatalf("valid spec refused: %v", err)
	}
	assertInvalid(t, LoopAttach{Name: "banger-abc-base"}.Validate(), "nil backing")
	for _, n := range []string{"", "abc", "banger-", "banger-;x", "/etc/passwd", "banger-" + strings.Repeat("a", 57)} {
		assertInvalid(t, LoopAttach{Backing: f, Name: n}.Validate(), "name %q", n)
	}
}

// hostilePaths are refused by shape alone, whatever the runtime dir.
var hostilePaths = []string{
	"", "relative/path", "./x", "/run/banger/../../etc/shadow", "/run/banger/vms/../../../etc",
	"/run/banger/x/..", "/run/banger//x", "/run/banger/x/", "/run/banger/x/.", "/run/banger/$(id)",
	"/run/banger/a;reboot", "/run/banger/a b", "/run/banger/`id`", "/run/banger/a|b", "/run/banger/a\nb",
	"/run/banger/a\x00b", "/run/banger/é", "/run/banger/*", "/run/banger/~", "/" + strings.Repeat("a", 256),
	"/run/banger/" + strings.Repeat("a/", 600),
}

func TestChownChmodShapeHostile(t *testing.T) {
	if err := (ChownSpec{Path: "/run/banger/vms/abc/fc.sock", UID: 1000, GID: 1000}).Validate(); err != nil {
		t.Fatalf("valid chown refused: %v", err)
	}
	if err := (ChmodSpec{Path: "/run/banger/vms/abc/fc.sock", Mode: 0o660}).Validate(); err != nil {
		t.Fatalf("valid chmod refused: %v", err)
	}
	for _, p := range hostilePaths {
		assertInvalid(t, ChownSpec{Path: p, UID: 1000, GID: 1000}.Validate(), "chown %q", p)
		assertInvalid(t, ChmodSpec{Path: p, Mode: 0o600}.Validate(), "chmod %q", p)
	}
	for _, m := range []uint32{0o777, 0o666, 0o4750, 0o2770, 0o1770, 0o7000, 0o001, 0o10000, 1 << 31} {
		assertInvalid(t, ChmodSpec{Path: "/run/banger/x.sock", Mode: m}.Validate(), "mode %#o", m)
	}
	for _, id := range [][2]int{{-1, 0}, {0, -1}, {1 << 31, 0}} {
		assertInvalid(t, ChownSpec{Path: "/run/banger/x.sock", UID: id[0], GID: id[1]}.Validate(), "ids %v", id)
	}
}

func TestDeviceMapperMajor(t *testing.T) {
	dir := t.TempDir()
	p := dir + "/devices"
	content := "Character devices:\n  1 mem\n253 device-mapper\n\nBlock devices:\n  7 loop\n  8 sd\n254 device-mapper\n259 blkext\n"
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := DeviceMapperMajor(p); got != 254 {
		t.Errorf("DeviceMapperMajor = %d, want 254 (the block entry, not the char one)", got)
	}
	if err := os.WriteFile(p, []byte("Block devices:\n  7 loop\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := DeviceMapperMajor(p); got != 0 {
		t.Errorf("without dm: %d, want 0", got)
	}
	if got := DeviceMapperMajor(dir + "/missing"); got != 0 {
		t.Errorf("missing file: %d, want 0", got)
	}
}

func assertInvalid(t *testing.T, err error, format string, args ...any) {
	t.Helper()
	if !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("accepted or wrong error class for hostile input "+format+": %v", append(args, err)...)
	}
}

// The id rules are internal/vmm's (tested there); the helper refuses what
// they refuse as an invalid argument.
func TestJailAndDriveIDsHostile(t *testing.T) {
	if err := ValidJailID("vm-0123"); err != nil {
		t.Errorf("ValidJailID: %v", err)
	}
	if err := validDriveID("seed_1"); err != nil {
		t.Errorf("validDriveID: %v", err)
	}
	for _, id := range []string{"", "--help", "a/b", strings.Repeat("a", 65)} {
		assertInvalid(t, ValidJailID(id), "vm id %q", id)
		assertInvalid(t, validDriveID(id), "drive id %q", id)
	}
}
