package network

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestValidateBridgeAndTapNames(t *testing.T) {
	tests := []struct {
		name        string
		bridge, tap bool
	}{
		{"banger0", true, false},
		{"banger", true, false},
		{"banger-dev-123", true, false},
		{"bgt-0123456789a", false, true},
		{"bgt-x", false, true},
		{"bgt-", false, false},
		{"bgt-0123456789ab", false, false}, // 16 characters
		{"banger0123456789", false, false},
		{"eth0", false, false},
		{"docker0", false, false},
		{"lo", false, false},
		{"", false, false},
		{"Banger0", false, false},
		{"banger0/../x", false, false},
		{"bgt-a b", false, false},
		{"bgt-a\x00", false, false},
		{"bangerX", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check := func(what string, err error, ok bool) {
				t.Helper()
				if ok && err != nil {
					t.Errorf("%s(%q) = %v, want nil", what, tt.name, err)
				}
				if !ok && !errors.Is(err, ErrInvalid) {
					t.Errorf("%s(%q) = %v, want ErrInvalid", what, tt.name, err)
				}
			}
			check("ValidateBridgeName", ValidateBridgeName(tt.name), tt.bridge)
			check("ValidateTapName", ValidateTapName(tt.name), tt.tap)
		})
	}
}

func TestTapName(t *testing.T) {
	for _, id := range []string{"0123456789abcdef", "abc", "Has Spaces", "", strings.Repeat("z", 100), "ünïcode"} {
		name := TapName(id)
		if err := ValidateTapName(name); err != nil {
			t.Errorf("TapName(%q) = %q: %v", id, name, err)
		}
		if TapName(id) != name {
			t.Errorf("TapName(%q) is not deterministic", id)
		}
	}
	if got := TapName("0123456789abcdef"); got != "bgt-0123456789a" {
		t.Errorf("TapName(store ID) = %q, want bgt-0123456789a", got)
	}
	if TapName("Has Spaces") == TapName("has spaces") {
		t.Error("hashed and plain IDs collided")
	}
}

func TestMACAddress(t *testing.T) {
	a, b := MACAddress("0123456789abcdef"), MACAddress("0123456789abcdee")
	if len(a) != 6 || a[0] != 0x02 {
		t.Errorf("MACAddress = %s, want a locally administered unicast address", a)
	}
	if a.String() != MACAddress("0123456789abcdef").String() {
		t.Error("MACAddress is not deterministic")
	}
	if a.String() == b.String() {
		t.Error("different IDs got the same MAC")
	}
}

func TestParseSubnet(t *testing.T) {
	good := []string{"172.30.0.0/24", "10.0.0.0/16", "192.168.100.0/29", "172.16.0.0/20"}
	for _, s := range good {
		p, err := ParseSubnet(s)
		if err != nil || p.String() != s {
			t.Errorf("ParseSubnet(%q) = %v, %v", s, p, err)
		}
	}
	bad := map[string]string{
		"":                    "not a CIDR",
		"172.30.0.0":          "not a CIDR",
		"172.30.0.0/33":       "not a CIDR",
		"172.30.0.0/024":      "not a CIDR",
		"172.30.0.1/24":       "did you mean 172.30.0.0/24",
		"10.0.0.0/8":          "between /16 and /29",
		"172.30.0.0/30":       "between /16 and /29",
		"8.8.8.0/24":          "must be inside",
		"100.64.0.0/24":       "must be inside",
		"127.0.0.0/24":        "must be inside",
		"fd00::/64":           "must be IPv4",
		"::ffff:10.0.0.0/120": "must be IPv4",
		" 10.0.0.0/24":        "not a CIDR",
		"10.0.0.0/24\n":       "not a CIDR",
	}
	for s, want := range bad {
		_, err := ParseSubnet(s)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseSubnet(%q) = %v, want ErrInvalid mentioning %q", s, err, want)
		}
	}
}

func TestCheckSubnet(t *testing.T) {
	routes := []Route{
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: "eth0"},
		{Dst: netip.MustParsePrefix("192.168.1.0/24"), Dev: "eth0"},
		{Dst: netip.MustParsePrefix("172.17.0.0/16"), Dev: "docker0"},
		{Dst: netip.MustParsePrefix("10.8.0.5/32"), Dev: "tun0"},
	}
	if err := CheckSubnet(netip.MustParsePrefix("172.30.0.0/24"), routes); err != nil {
		t.Errorf("free subnet refused: %v", err)
	}
	for subnet, dev := range map[string]string{"172.17.3.0/24": "docker0", "10.8.0.0/16": "tun0", "192.168.0.0/16": "eth0"} {
		err := CheckSubnet(netip.MustParsePrefix(subnet), routes)
		var ce *SubnetConflictError
		if !errors.Is(err, ErrSubnetConflict) || !errors.As(err, &ce) || ce.Route.Dev != dev {
			t.Errorf("CheckSubnet(%s) = %v, want a conflict with %s", subnet, err, dev)
		}
	}
	if err := CheckSubnet(netip.MustParsePrefix("8.8.8.0/24"), nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("public subnet: %v, want ErrInvalid", err)
	}
}

func TestCandidates(t *testing.T) {
	all := slices.Collect(Candidates(netip.MustParsePrefix("172.30.0.0/24")))
	if len(all) != 253 || all[0] != netip.MustParseAddr("172.30.0.2") || all[252] != netip.MustParseAddr("172.30.0.254") {
		t.Errorf("/24 candidates: %d addresses from %v to %v", len(all), all[0], all[len(all)-1])
	}
	small := slices.Collect(Candidates(netip.MustParsePrefix("10.0.0.8/29")))
	want := []netip.Addr{
		netip.MustParseAddr("10.0.0.10"), netip.MustParseAddr("10.0.0.11"), netip.MustParseAddr("10.0.0.12"),
		netip.MustParseAddr("10.0.0.13"), netip.MustParseAddr("10.0.0.14"),
	}
	if !slices.Equal(small, want) {
		t.Errorf("/29 candidates = %v, want %v", small, want)
	}
	for _, p := range []netip.Prefix{{}, netip.MustParsePrefix("10.0.0.0/31"), netip.MustParsePrefix("fd00::/64")} {
		if n := len(slices.Collect(Candidates(p))); n != 0 {
			t.Errorf("Candidates(%v) yielded %d addresses, want none", p, n)
		}
	}
	b := Bridge{Name: "banger0", Subnet: netip.MustParsePrefix("172.30.0.0/24")}
	if b.Gateway() != netip.MustParseAddr("172.30.0.1") || b.GatewayPrefix().String() != "172.30.0.1/24" {
		t.Errorf("gateway = %v, %v", b.Gateway(), b.GatewayPrefix())
	}
}
