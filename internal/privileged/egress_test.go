package privileged

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// The egress operations trust nothing from the daemon: banger's own bridge
// and taps, a private VM address, a known mode and bounded lists only.
func TestEgressOpsRefuseHostileRequests(t *testing.T) {
	good := EgressSpec{Bridge: "banger0", Tap: "bgt-0123abcd456", Addr: netip.MustParseAddr("172.30.0.2"), Mode: "allowlist"}
	if err := good.Validate(); err != nil {
		t.Fatalf("a good request: %v", err)
	}
	with := func(f func(*EgressSpec)) EgressSpec { s := good; f(&s); return s }
	for name, s := range map[string]EgressSpec{
		"foreign tap":    with(func(s *EgressSpec) { s.Tap = "eth0" }),
		"foreign bridge": with(func(s *EgressSpec) { s.Bridge = "docker0" }),
		"public address": with(func(s *EgressSpec) { s.Addr = netip.MustParseAddr("8.8.8.8") }),
		"unknown mode":   with(func(s *EgressSpec) { s.Mode = "flush ruleset" }),
		"IPv6 network":   with(func(s *EgressSpec) { s.Allow = []EgressNet{{Net: netip.MustParsePrefix("::/0")}} }),
		"list on deny": with(func(s *EgressSpec) {
			s.Mode = "deny"
			s.Allow = []EgressNet{{Net: netip.MustParsePrefix("10.0.0.0/8")}}
		}),
		"too many rules": with(func(s *EgressSpec) { s.Allow = make([]EgressNet, 65) }),
	} {
		if err := OpApplyEgress.validate(s); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}
	for name, l := range map[string]LearnSpec{
		"foreign tap": {Bridge: "banger0", Tap: "veth0", Addrs: []LearnedAddr{{Addr: netip.MustParseAddr("192.0.2.1")}}},
		"nothing":     {Bridge: "banger0", Tap: "bgt-0123abcd456"},
		"IPv6":        {Bridge: "banger0", Tap: "bgt-0123abcd456", Addrs: []LearnedAddr{{Addr: netip.MustParseAddr("::1")}}},
	} {
		if err := OpLearnEgress.validate(l); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("learn %s: %v, want ErrInvalidArgument", name, err)
		}
	}
	// On the wire, lists longer than the bounds are refused before they
	// are split, and malformed entries are refused.
	long := strings.Repeat("10.0.0.0/8:0,", 70) + "10.0.0.0/8:0"
	for _, wire := range []string{
		`{"op":"egress.apply","args":{"bridge":"banger0","tap":"bgt-0123abcd456","addr":"172.30.0.2","mode":"allowlist","allow":"` + long + `"}}`,
		`{"op":"egress.apply","args":{"bridge":"banger0","tap":"bgt-0123abcd456","addr":"172.30.0.2","mode":"allowlist","allow":"10.0.0.0/8"}}`,
		`{"op":"egress.learn","args":{"bridge":"banger0","tap":"bgt-0123abcd456","addrs":"192.0.2.7:0"}}`,
		`{"op":"egress.learn","args":{"bridge":"banger0","tap":"bgt-0123abcd456","addrs":"192.0.2.7:0:99999999999"}}`,
	} {
		req, err := DecodeRequest([]byte(wire))
		if err == nil {
			_, err = req.op.decode(req.Args, nil)
		}
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", wire, err)
		}
	}
}
