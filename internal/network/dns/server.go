// Package dns is banger's name server: it answers "<vm>.<domain>" (default
// domain "banger") from an in-memory table the daemon keeps in step with
// its VM list, and forwards every other question to the host's upstream
// resolvers, so guests that use the bridge address as their only name
// server resolve both each other and the internet.
//
// It also configures systemd-resolved (Resolved) so the host itself sends
// "*.banger" questions to the server.
package dns

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// Defaults for Config fields left zero.
const (
	DefaultDomain  = "banger"
	defaultTimeout = 2 * time.Second
	// defaultTTL is short because VMs come, go and get renamed; resolvers
	// must not remember an old address for long.
	defaultTTL = 5
)

// UpstreamSource supplies the resolvers non-banger questions go to. It is
// consulted on every forwarded question, so it must be cheap (ResolvConf
// caches).
type UpstreamSource interface {
	Upstreams() []netip.AddrPort
}

// Config configures a Server.
type Config struct {
	// Domain is the zone the server is authoritative for; VM "dev" is
	// "dev.<Domain>". Default DefaultDomain.
	Domain string
	// Subnet, if set, is the VM subnet: reverse (PTR) questions for its
	// addresses are answered here, never leaked upstream.
	Subnet netip.Prefix
	// Upstreams supplies the resolvers other questions are forwarded to.
	// Nil means no forwarding: such questions get REFUSED.
	Upstreams UpstreamSource
	// Timeout bounds each attempt at an upstream. Default 2s.
	Timeout time.Duration
	// TTL is the time to live of the server's own answers, in seconds.
	// Default 5.
	TTL uint32
	// Logger receives forwarding failures. Default slog.Default().
	Logger *slog.Logger
}

// Server is a running or ready-to-run name server. Its record methods are
// safe to call at any time from any goroutine.
type Server struct {
	domain string // canonical FQDN, "banger."
	subnet netip.Prefix
	up     UpstreamSource
	ttl    uint32
	log    *slog.Logger
	udp    *mdns.Client
	tcp    *mdns.Client

	mu      sync.RWMutex
	records map[string]netip.Addr // label ("dev") → address
	names   map[netip.Addr]string // address → label, for PTR
	// preferred is the upstream that answered last.
	preferred netip.AddrPort
	// policies are the restricted VMs' allowed names, by address
	// (egress.go).
	policies map[netip.Addr]namePolicy

	runMu   sync.Mutex
	servers []*mdns.Server
	addr    netip.AddrPort
	done    chan struct{}
}

// NewServer validates cfg and returns a Server with no records.
func NewServer(cfg Config) (*Server, error) {
	domain := cfg.Domain
	if domain == "" {
		domain = DefaultDomain
	}
	if err := validateDomain(domain); err != nil {
		return nil, fmt.Errorf("dns server: %w", err)
	}
	if cfg.Subnet.IsValid() && !cfg.Subnet.Addr().Is4() {
		return nil, fmt.Errorf("dns server: subnet %s must be IPv4", cfg.Subnet)
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	ttl := cfg.TTL
	if ttl == 0 {
		ttl = defaultTTL
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Server{
		domain:  mdns.CanonicalName(domain),
		subnet:  cfg.Subnet.Masked(),
		up:      cfg.Upstreams,
		ttl:     ttl,
		log:     log,
		udp:     &mdns.Client{Net: "udp", Timeout: timeout},
		tcp:     &mdns.Client{Net: "tcp", Timeout: timeout},
		records: map[string]netip.Addr{},
		names:   map[netip.Addr]string{},
	}, nil
}

// validateDomain accepts lowercase DNS names such as "banger" or
// "vms.example": labels of [a-z0-9-], not starting or ending with '-'.
func validateDomain(d string) error {
	if len(d) > 200 {
		return fmt.Errorf("domain %q is too long", d)
	}
	for _, label := range strings.Split(d, ".") {
		if err := validateLabel(label); err != nil {
			return fmt.Errorf("domain %q: %w", d, err)
		}
	}
	return nil
}

// validateLabel accepts one lowercase DNS label (RFC 1123 host name rules).
func validateLabel(l string) error {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return fmt.Errorf("%q is not a DNS label (1-63 of [a-z0-9-], not starting or ending with '-')", l)
	}
	for _, c := range []byte(l) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return fmt.Errorf("%q is not a DNS label (1-63 of [a-z0-9-], not starting or ending with '-')", l)
		}
	}
	return nil
}

// Domain is the server's zone without the trailing dot ("banger").
func (s *Server) Domain() string { return strings.TrimSuffix(s.domain, ".") }

// Set points name.<domain> at addr, replacing any previous address. name
// is the VM name; it must be a lowercase DNS label and addr IPv4.
func (s *Server) Set(name string, addr netip.Addr) error {
	if err := validateRecord(name, addr); err != nil {
		return fmt.Errorf("set dns record: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setLocked(name, addr)
	return nil
}

func (s *Server) setLocked(name string, addr netip.Addr) {
	if old, ok := s.records[name]; ok && s.names[old] == name {
		delete(s.names, old)
	}
	s.records[name] = addr
	s.names[addr] = name
}

// Delete removes name's record; later questions for it get NXDOMAIN.
// Deleting a missing name is not an error.
func (s *Server) Delete(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.records[name]; ok {
		delete(s.records, name)
		if s.names[old] == name {
			delete(s.names, old)
		}
	}
}

// SetRecords replaces the whole table with records (VM name → address),
// as the daemon does at start from its VM list. Nothing changes if any
// entry is invalid.
func (s *Server) SetRecords(records map[string]netip.Addr) error {
	for name, addr := range records {
		if err := validateRecord(name, addr); err != nil {
			return fmt.Errorf("set dns records: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = make(map[string]netip.Addr, len(records))
	s.names = make(map[netip.Addr]string, len(records))
	for name, addr := range records {
		s.setLocked(name, addr)
	}
	return nil
}

// Lookup returns name's address, for callers that want to check the table.
func (s *Server) Lookup(name string) (netip.Addr, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a, ok := s.records[name]
	return a, ok
}

func validateRecord(name string, addr netip.Addr) error {
	if err := validateLabel(name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	if !addr.Is4() {
		return fmt.Errorf("address %v of %q must be IPv4", addr, name)
	}
	return nil
}

// Start binds UDP and TCP on addr (the bridge address and port 53 in
// production; port 0 picks a free port, the same for both) and serves in
// the background until Close.
func (s *Server) Start(addr netip.AddrPort) error {
	// A zero address would listen on every interface, answering (and
	// forwarding for) anyone who can reach the host.
	if !addr.Addr().IsValid() {
		return fmt.Errorf("start dns server: no listen address")
	}
	pc, ln, err := listen(addr)
	if err != nil {
		return fmt.Errorf("start dns server on %s: %w", addr, err)
	}
	if err := s.Serve(pc, ln); err != nil {
		_ = pc.Close()
		_ = ln.Close()
		return err
	}
	return nil
}

// listen binds UDP then TCP on the same address; with port 0 it retries
// until one free port works for both.
func listen(addr netip.AddrPort) (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 10 {
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		if err != nil {
			return nil, nil, err
		}
		port := pc.LocalAddr().(*net.UDPAddr).AddrPort().Port()
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(addr.Addr(), port)))
		if err == nil {
			return pc, ln, nil
		}
		_ = pc.Close()
		lastErr = err
		if addr.Port() != 0 {
			break
		}
	}
	return nil, nil, lastErr
}

// Serve serves on already bound sockets (for example ones the root helper
// bound to port 53 and passed over), in the background until Close. pc and
// ln must share an address; the server owns them from now on.
func (s *Server) Serve(pc net.PacketConn, ln net.Listener) error {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	if s.done != nil {
		return errors.New("dns server: already serving")
	}
	ua, ok := pc.LocalAddr().(*net.UDPAddr)
	if !ok {
		return fmt.Errorf("dns server: %s is not a UDP socket", pc.LocalAddr())
	}
	h := mdns.HandlerFunc(s.serveDNS)
	servers := []*mdns.Server{
		{PacketConn: pc, Handler: h, Net: "udp"},
		{Listener: ln, Handler: h, Net: "tcp"},
	}
	started := make(chan struct{}, len(servers))
	exited := make(chan error, len(servers))
	var wg sync.WaitGroup
	for _, srv := range servers {
		srv.NotifyStartedFunc = func() { started <- struct{}{} }
		wg.Go(func() { exited <- srv.ActivateAndServe() })
	}
	// Wait until both loops run, so Close cannot race their start-up.
	for range servers {
		select {
		case <-started:
		case err := <-exited:
			// Closing the sockets ends whichever loop did start.
			_ = pc.Close()
			_ = ln.Close()
			wg.Wait()
			return fmt.Errorf("dns server on %s failed to start: %w", ua, err)
		}
	}
	s.addr = ua.AddrPort()
	s.servers = servers
	s.done = make(chan struct{})
	go func() {
		wg.Wait()
		close(s.done)
	}()
	return nil
}

// Addr is the address the server listens on, once started.
func (s *Server) Addr() netip.AddrPort {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	return s.addr
}

// Close stops serving, closes the sockets and waits for in-flight
// questions to finish (at most about one upstream timeout).
func (s *Server) Close() error {
	s.runMu.Lock()
	servers, done := s.servers, s.done
	s.servers = nil
	s.runMu.Unlock()
	if done == nil {
		return nil
	}
	var errs []error
	for _, srv := range servers {
		if err := srv.Shutdown(); err != nil {
			errs = append(errs, err)
		}
	}
	<-done
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stop dns server on %s: %w", s.addr, err)
	}
	return nil
}

func (s *Server) serveDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	resp := s.answer(w, req)
	if resp == nil {
		return
	}
	if _, udp := w.LocalAddr().(*net.UDPAddr); udp {
		size := mdns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = max(size, int(opt.UDPSize()))
		}
		resp.Truncate(size)
	}
	if err := w.WriteMsg(resp); err != nil {
		s.log.Debug("dns: write reply", "to", w.RemoteAddr(), "err", err)
	}
}

func (s *Server) answer(w mdns.ResponseWriter, req *mdns.Msg) *mdns.Msg {
	if req.Response {
		return nil // never answer answers: that is how reflection loops start
	}
	if req.Opcode != mdns.OpcodeQuery {
		return reply(req, mdns.RcodeNotImplemented)
	}
	if len(req.Question) != 1 {
		return reply(req, mdns.RcodeFormatError)
	}
	q := req.Question[0]
	name := mdns.CanonicalName(q.Name)
	if mdns.IsSubDomain(s.domain, name) {
		return s.answerLocal(req, name, q.Qtype)
	}
	if addr, ok := reverseAddr(name); ok {
		if resp := s.answerReverse(req, addr, q.Qtype); resp != nil {
			return resp
		}
	}
	if vm, p, restricted := s.policyOf(w.RemoteAddr()); restricted {
		return s.forwardRestricted(w, req, vm, p)
	}
	return s.forward(w, req)
}

// answerLocal answers a question inside the domain: A records for known
// VMs, an empty answer for other types, NXDOMAIN for unknown names.
func (s *Server) answerLocal(req *mdns.Msg, name string, qtype uint16) *mdns.Msg {
	if name == s.domain {
		resp := reply(req, mdns.RcodeSuccess)
		if qtype == mdns.TypeSOA || qtype == mdns.TypeANY {
			resp.Answer = []mdns.RR{s.soa()}
		} else {
			resp.Ns = []mdns.RR{s.soa()}
		}
		return resp
	}
	label := strings.TrimSuffix(name, "."+s.domain)
	s.mu.RLock()
	addr, ok := s.records[label]
	s.mu.RUnlock()
	if !ok || strings.Contains(label, ".") {
		return s.nameError(req)
	}
	resp := reply(req, mdns.RcodeSuccess)
	if qtype == mdns.TypeA || qtype == mdns.TypeANY {
		resp.Answer = []mdns.RR{&mdns.A{
			Hdr: mdns.RR_Header{Name: req.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: s.ttl},
			A:   addr.AsSlice(),
		}}
	} else {
		resp.Ns = []mdns.RR{s.soa()}
	}
	return resp
}

// nameError answers NXDOMAIN, with the zone's SOA for negative caching.
func (s *Server) nameError(req *mdns.Msg) *mdns.Msg {
	resp := reply(req, mdns.RcodeNameError)
	resp.Ns = []mdns.RR{s.soa()}
	return resp
}

// answerReverse answers a PTR question for a VM's address, or NXDOMAIN for
// another address in the VM subnet. It returns nil for addresses outside
// banger's, which are forwarded.
func (s *Server) answerReverse(req *mdns.Msg, addr netip.Addr, qtype uint16) *mdns.Msg {
	s.mu.RLock()
	label, ok := s.names[addr]
	s.mu.RUnlock()
	inSubnet := s.subnet.IsValid() && s.subnet.Contains(addr)
	if !ok && !inSubnet {
		return nil
	}
	if !ok {
		return s.nameError(req)
	}
	resp := reply(req, mdns.RcodeSuccess)
	if qtype == mdns.TypePTR || qtype == mdns.TypeANY {
		resp.Answer = []mdns.RR{&mdns.PTR{
			Hdr: mdns.RR_Header{Name: req.Question[0].Name, Rrtype: mdns.TypePTR, Class: mdns.ClassINET, Ttl: s.ttl},
			Ptr: label + "." + s.domain,
		}}
	}
	return resp
}

// forward relays the question to the upstreams in order — the one that
// answered last time first, so a dead first resolver costs one timeout
// once rather than on every question — over the transport the question
// came in on, retrying over TCP when a UDP answer is truncated. The first
// usable answer wins; SERVFAIL if none answers.
func (s *Server) forward(w mdns.ResponseWriter, req *mdns.Msg) *mdns.Msg {
	if s.up == nil {
		return reply(req, mdns.RcodeRefused)
	}
	self := s.Addr()
	ups := slices.Clone(s.up.Upstreams())
	s.mu.RLock()
	preferred := s.preferred
	s.mu.RUnlock()
	if i := slices.Index(ups, preferred); i > 0 {
		ups[0], ups[i] = ups[i], ups[0]
	}
	_, viaTCP := w.LocalAddr().(*net.TCPAddr)
	var last *mdns.Msg
	var errs []error
	for _, up := range ups {
		if up == self {
			continue // asking ourselves would loop
		}
		client := s.udp
		if viaTCP {
			client = s.tcp
		}
		// A fresh ID per upstream query, so a reply can only be matched
		// by someone who saw our question, not guessed from the guest's.
		out := req.Copy()
		out.Id = mdns.Id()
		resp, _, err := client.Exchange(out, up.String())
		if err == nil && resp.Truncated && !viaTCP {
			resp, _, err = s.tcp.Exchange(out, up.String())
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", up, err))
			continue
		}
		resp.Id = req.Id
		if resp.Rcode == mdns.RcodeServerFailure || resp.Rcode == mdns.RcodeRefused {
			last = resp
			continue
		}
		if up != preferred {
			s.mu.Lock()
			s.preferred = up
			s.mu.Unlock()
		}
		return resp
	}
	if last != nil {
		return last
	}
	s.log.Warn("dns: no upstream resolver answered", "name", req.Question[0].Name, "err", errors.Join(errs...))
	return reply(req, mdns.RcodeServerFailure)
}

func (s *Server) soa() mdns.RR {
	return &mdns.SOA{
		Hdr:     mdns.RR_Header{Name: s.domain, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: s.ttl},
		Ns:      s.domain,
		Mbox:    "hostmaster." + s.domain,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  s.ttl,
	}
}

func reply(req *mdns.Msg, rcode int) *mdns.Msg {
	resp := new(mdns.Msg)
	resp.SetRcode(req, rcode)
	resp.Authoritative = rcode != mdns.RcodeRefused && rcode != mdns.RcodeServerFailure
	resp.RecursionAvailable = true
	return resp
}

// reverseAddr parses an IPv4 in-addr.arpa name ("2.0.30.172.in-addr.arpa.").
func reverseAddr(name string) (netip.Addr, bool) {
	rest, ok := strings.CutSuffix(name, ".in-addr.arpa.")
	if !ok {
		return netip.Addr{}, false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 4 {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(parts[3] + "." + parts[2] + "." + parts[1] + "." + parts[0])
	return a, err == nil
}
