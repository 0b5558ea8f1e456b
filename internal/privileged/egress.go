package privileged

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/network/firewall"
)

// EgressSpec is one VM's egress policy (firewall.ApplyEgress): what its
// address may open connections to outside the bridge. Names in the user's
// allowlist never reach the helper; the daemon's DNS server resolves them
// and sends the answers with egress.learn.
type EgressSpec struct {
	Bridge string     `json:"bridge"`
	Tap    string     `json:"tap"`
	Addr   netip.Addr `json:"addr"`
	// Mode is "allow", "deny" or "allowlist".
	Mode string `json:"mode"`
	// Allow are the allowlist's networks, at most firewall.MaxEgressRules.
	Allow []EgressNet `json:"-"`
}

// EgressNet is an IPv4 network and, if Port is not 0, one TCP/UDP port.
type EgressNet struct {
	Net  netip.Prefix `json:"net"`
	Port uint16       `json:"port,omitempty"`
}

// LearnSpec adds addresses an allowed name resolved to to a VM's learned
// set (firewall.Learn), each for TTLSeconds (clamped by the firewall).
type LearnSpec struct {
	Bridge string        `json:"bridge"`
	Tap    string        `json:"tap"`
	Addrs  []LearnedAddr `json:"-"`
}

// LearnedAddr is one learned address: on Port only, or any port if 0.
type LearnedAddr struct {
	Addr       netip.Addr `json:"addr"`
	Port       uint16     `json:"port,omitempty"`
	TTLSeconds uint32     `json:"ttl_seconds"`
}

func (s EgressSpec) bridgeName() string { return s.Bridge }
func (s LearnSpec) bridgeName() string  { return s.Bridge }

// firewall is the spec in the firewall's terms.
func (s EgressSpec) firewall() firewall.Egress {
	e := firewall.Egress{Bridge: s.Bridge, Tap: s.Tap, Addr: s.Addr, Mode: s.Mode}
	for _, n := range s.Allow {
		e.Allow = append(e.Allow, firewall.EgressRule{Net: n.Net, Port: n.Port})
	}
	return e
}

// Validate checks the bridge and tap are banger's, the address is a
// private IPv4 one (a VM's lease), the mode is known and the allowlist
// bounded and made of IPv4 networks.
func (s EgressSpec) Validate() error {
	if !s.Addr.Is4() || !s.Addr.IsPrivate() {
		return invalid("VM address %q must be a private IPv4 address such as 172.30.0.2", s.Addr.String())
	}
	return asArg(s.firewall().Validate())
}

func (s LearnSpec) firewall() firewall.LearnSpec {
	l := firewall.LearnSpec{Bridge: s.Bridge, Tap: s.Tap}
	for _, a := range s.Addrs {
		l.Addrs = append(l.Addrs, firewall.Learned{Addr: a.Addr, Port: a.Port, TTL: time.Duration(a.TTLSeconds) * time.Second})
	}
	return l
}

// Validate checks the bridge and tap are banger's and the addresses are
// IPv4 and at most firewall.MaxLearned.
func (s LearnSpec) Validate() error { return asArg(s.firewall().Validate()) }

func (SystemBackend) applyEgress(ctx context.Context, _ serving, s EgressSpec) (None, error) {
	return nothing(netErr(firewall.ApplyEgress(ctx, s.firewall())))
}

func (SystemBackend) learnEgress(ctx context.Context, _ serving, s LearnSpec) (None, error) {
	return nothing(netErr(firewall.Learn(ctx, s.firewall())))
}

// The wire carries only flat arguments, so the lists travel as strings:
// "10.0.0.0/8:443,192.0.2.7/32" and "192.0.2.7:0:60" (address, port, TTL
// seconds), bounded before they are split.

type egressArgs struct {
	Bridge string     `json:"bridge"`
	Tap    string     `json:"tap"`
	Addr   netip.Addr `json:"addr"`
	Mode   string     `json:"mode"`
	Allow  string     `json:"allow,omitempty"`
}

type learnArgs struct {
	Bridge string `json:"bridge"`
	Tap    string `json:"tap"`
	Addrs  string `json:"addrs"`
}

func (s EgressSpec) wire() (egressArgs, []*os.File) {
	items := make([]string, len(s.Allow))
	for i, n := range s.Allow {
		items[i] = n.Net.String() + ":" + strconv.Itoa(int(n.Port))
	}
	return egressArgs{Bridge: s.Bridge, Tap: s.Tap, Addr: s.Addr, Mode: s.Mode, Allow: strings.Join(items, ",")}, nil
}

func (a egressArgs) spec(_ []*os.File) (EgressSpec, error) {
	s := EgressSpec{Bridge: a.Bridge, Tap: a.Tap, Addr: a.Addr, Mode: a.Mode}
	items, err := splitList(a.Allow, firewall.MaxEgressRules, "allow")
	if err != nil {
		return s, err
	}
	for _, it := range items {
		net, port, ok := strings.Cut(it, ":")
		p, perr := netip.ParsePrefix(net)
		n, nerr := strconv.ParseUint(port, 10, 16)
		if !ok || perr != nil || nerr != nil {
			return s, malformed("allow entry %q must be NET:PORT", it)
		}
		s.Allow = append(s.Allow, EgressNet{Net: p, Port: uint16(n)})
	}
	return s, nil
}

func (s LearnSpec) wire() (learnArgs, []*os.File) {
	items := make([]string, len(s.Addrs))
	for i, a := range s.Addrs {
		items[i] = fmt.Sprintf("%s:%d:%d", a.Addr, a.Port, a.TTLSeconds)
	}
	return learnArgs{Bridge: s.Bridge, Tap: s.Tap, Addrs: strings.Join(items, ",")}, nil
}

func (a learnArgs) spec(_ []*os.File) (LearnSpec, error) {
	s := LearnSpec{Bridge: a.Bridge, Tap: a.Tap}
	items, err := splitList(a.Addrs, firewall.MaxLearned, "addrs")
	if err != nil {
		return s, err
	}
	for _, it := range items {
		parts := strings.Split(it, ":")
		if len(parts) != 3 {
			return s, malformed("learned address %q must be ADDR:PORT:TTL", it)
		}
		addr, aerr := netip.ParseAddr(parts[0])
		port, perr := strconv.ParseUint(parts[1], 10, 16)
		ttl, terr := strconv.ParseUint(parts[2], 10, 32)
		if aerr != nil || perr != nil || terr != nil {
			return s, malformed("learned address %q must be ADDR:PORT:TTL", it)
		}
		s.Addrs = append(s.Addrs, LearnedAddr{Addr: addr, Port: uint16(port), TTLSeconds: uint32(ttl)})
	}
	return s, nil
}

// splitList splits a comma-separated wire list of at most limit items.
func splitList(list string, limit int, name string) ([]string, error) {
	if list == "" {
		return nil, nil
	}
	if strings.Count(list, ",") >= limit {
		return nil, malformed("%s lists more than %d entries", name, limit)
	}
	return strings.Split(list, ","), nil
}

func noFiles[W any](W) int { return 0 }
