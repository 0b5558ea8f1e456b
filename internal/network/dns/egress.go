package dns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/banger-dev/banger/internal/network/firewall"
)

// Names a VM in egress "deny" or "allowlist" mode may resolve. The server
// tells VMs apart by the source address of their questions: the bridge's
// firewall pins each VM's port to its leased address, so a guest cannot ask
// as another.
//
// A restricted VM gets answers for the server's own domain (other VMs'
// names; reaching them is isolation's business) and, forwarded upstream,
// for the names its policy allows; every other name is NXDOMAIN, so a
// denied VM cannot tunnel through DNS either. The A records of an allowed
// answer are handed to the Learner (the VM's firewall set, with the
// records' TTLs) before the answer goes back, so the guest's first
// connection to the address already passes.

// NameRule allows one name: exactly Name, or with Wildcard every name
// below it (not Name itself), on Port only (0: any port).
type NameRule struct {
	Name     string
	Wildcard bool
	Port     uint16
}

// String is the rule as the user writes it ("*.example.com:443").
func (r NameRule) String() string {
	s := r.Name
	if r.Wildcard {
		s = "*." + s
	}
	if r.Port != 0 {
		s += ":" + strconv.Itoa(int(r.Port))
	}
	return s
}

// ParseNameRule reads "example.com", "*.example.com" or either with
// ":PORT". Names are case-insensitive and stored lowercase.
func ParseNameRule(s string) (NameRule, error) {
	var r NameRule
	host := s
	if h, p, ok := strings.Cut(s, ":"); ok {
		port, err := strconv.ParseUint(p, 10, 16)
		if err != nil || port == 0 {
			return r, fmt.Errorf("%q: port %q must be 1-65535", s, p)
		}
		host, r.Port = h, uint16(port)
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		host, r.Wildcard = rest, true
	}
	if !strings.Contains(host, ".") {
		return r, fmt.Errorf("%q: a host name must have a dot (example.com)", s)
	}
	if err := validateDomain(host); err != nil {
		return r, fmt.Errorf("%q: %w", s, err)
	}
	r.Name = host
	return r, nil
}

// matches reports whether the canonical name ("api.example.com.") falls
// under r.
func (r NameRule) matches(name string) bool {
	name = strings.TrimSuffix(name, ".")
	if r.Wildcard {
		return strings.HasSuffix(name, "."+r.Name)
	}
	return name == r.Name
}

// Learner adds the addresses an allowed name resolved to to the asking
// VM's firewall set (firewall.Learn through the root helper, in the
// daemon).
type Learner interface {
	Learn(ctx context.Context, vm netip.Addr, addrs []firewall.Learned) error
}

// namePolicy is one restricted VM's allowed names and where their
// answers' addresses go.
type namePolicy struct {
	rules   []NameRule
	learner Learner
}

// Restrict limits what the VM at addr may resolve to rules (none: only the
// server's own domain), learning answers through learner. It replaces an
// earlier restriction of addr.
func (s *Server) Restrict(addr netip.Addr, rules []NameRule, learner Learner) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.policies == nil {
		s.policies = map[netip.Addr]namePolicy{}
	}
	s.policies[addr] = namePolicy{rules: append([]NameRule(nil), rules...), learner: learner}
}

// Unrestrict lifts addr's restriction (egress allow, VM deleted).
func (s *Server) Unrestrict(addr netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.policies, addr)
}

// Restricted reports whether the VM at addr is restricted, and to which
// names.
func (s *Server) Restricted(addr netip.Addr) ([]NameRule, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, ok := s.policies[addr]
	return p.rules, ok
}

// policyOf is the restriction of the client at remote, if any.
func (s *Server) policyOf(remote net.Addr) (netip.Addr, namePolicy, bool) {
	var addr netip.Addr
	switch a := remote.(type) {
	case *net.UDPAddr:
		addr = a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		addr = a.AddrPort().Addr().Unmap()
	default:
		return addr, namePolicy{}, false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, ok := s.policies[addr]
	return addr, p, ok
}

// ports are the ports name is allowed on: nil if it is not allowed, [0]
// for any port.
func (p namePolicy) ports(name string) []uint16 {
	var out []uint16
	for _, r := range p.rules {
		if r.matches(name) {
			if r.Port == 0 {
				return []uint16{0}
			}
			out = append(out, r.Port)
		}
	}
	return out
}

// forwardRestricted forwards an allowed question for the restricted VM at
// vm and learns the answer's addresses, or answers NXDOMAIN.
func (s *Server) forwardRestricted(w mdns.ResponseWriter, req *mdns.Msg, vm netip.Addr, p namePolicy) *mdns.Msg {
	ports := p.ports(mdns.CanonicalName(req.Question[0].Name))
	if ports == nil {
		return s.nameError(req)
	}
	resp := s.forward(w, req)
	learned := learnedFrom(resp, ports)
	if len(learned) == 0 {
		return resp
	}
	if p.learner == nil {
		return resp
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.learner.Learn(ctx, vm, learned); err != nil {
		// An answer the firewall does not let through would only time out.
		s.log.Warn("dns: could not allow the answer's addresses", "vm", vm, "name", req.Question[0].Name, "err", err)
		return reply(req, mdns.RcodeServerFailure)
	}
	return resp
}

// learnedFrom lists the A records of resp on each of ports, with their
// TTLs, at most firewall.MaxLearned.
func learnedFrom(resp *mdns.Msg, ports []uint16) []firewall.Learned {
	if resp == nil || resp.Rcode != mdns.RcodeSuccess {
		return nil
	}
	var out []firewall.Learned
	for _, rr := range resp.Answer {
		a, ok := rr.(*mdns.A)
		if !ok {
			continue
		}
		addr, ok := netip.AddrFromSlice(a.A.To4())
		if !ok {
			continue
		}
		for _, port := range ports {
			if len(out) == firewall.MaxLearned {
				return out
			}
			out = append(out, firewall.Learned{Addr: addr, Port: port, TTL: time.Duration(a.Hdr.Ttl) * time.Second})
		}
	}
	return out
}
