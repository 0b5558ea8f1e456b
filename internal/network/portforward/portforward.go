// Package portforward forwards TCP ports from the host to guests with a
// userspace proxy: bangerd (which runs unprivileged) listens on a host
// address, by default loopback, and splices every connection to the
// guest's address on the bridge. No firewall rule is needed, and the port
// is reachable only where the listener is bound.
package portforward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultHostAddr is where forwards listen unless told otherwise,
// 127.0.0.1: only the owner's own machine can reach a forwarded port.
func DefaultHostAddr() netip.Addr { return netip.AddrFrom4([4]byte{127, 0, 0, 1}) }

// Spec is one forward as a user writes it: "8080:80" or
// "0.0.0.0:8080:80" (HOSTADDR:HOSTPORT:GUESTPORT).
type Spec struct {
	HostAddr  netip.Addr
	HostPort  uint16
	GuestPort uint16
}

// ParseSpec parses "[HOSTADDR:]HOSTPORT:GUESTPORT". HOSTADDR is an IPv4
// address or "localhost" and defaults to 127.0.0.1; ports are 1–65535.
func ParseSpec(s string) (Spec, error) {
	parts := strings.Split(s, ":")
	spec := Spec{HostAddr: DefaultHostAddr()}
	switch len(parts) {
	case 2:
	case 3:
		addr := parts[0]
		if addr == "localhost" {
			addr = "127.0.0.1"
		}
		a, err := netip.ParseAddr(addr)
		if err != nil || !a.Is4() {
			return Spec{}, fmt.Errorf("port forward %q: host address %q must be an IPv4 address such as 127.0.0.1", s, parts[0])
		}
		spec.HostAddr = a
		parts = parts[1:]
	default:
		return Spec{}, fmt.Errorf("port forward %q must look like HOSTPORT:GUESTPORT or HOSTADDR:HOSTPORT:GUESTPORT, e.g. 8080:80", s)
	}
	var err error
	if spec.HostPort, err = ParsePort(parts[0]); err != nil {
		return Spec{}, fmt.Errorf("port forward %q: host %w", s, err)
	}
	if spec.GuestPort, err = ParsePort(parts[1]); err != nil {
		return Spec{}, fmt.Errorf("port forward %q: guest %w", s, err)
	}
	return spec, nil
}

// ParsePort parses a TCP port number, 1–65535, decimal digits only.
func ParsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 || strings.HasPrefix(s, "+") {
		return 0, fmt.Errorf("port %q must be a number from 1 to 65535", s)
	}
	return uint16(n), nil
}

// String renders the spec in ParseSpec's full form.
func (s Spec) String() string {
	return fmt.Sprintf("%s:%d:%d", s.HostAddr, s.HostPort, s.GuestPort)
}

// dialTimeout bounds the connection to the guest, so a client of a stopped
// or firewalled guest is closed promptly instead of hanging.
const dialTimeout = 5 * time.Second

// Forwarder is one running forward. Stop it with Stop.
type Forwarder struct {
	ln     net.Listener
	addr   netip.AddrPort
	target netip.AddrPort
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// Start listens on listen (port 0 picks a free port) and forwards every
// connection to target until Stop. A privileged port (below 1024) fails
// with a message saying so, since bangerd runs unprivileged. log may be
// nil (slog.Default()).
func Start(listen, target netip.AddrPort, log *slog.Logger) (*Forwarder, error) {
	// A zero listen address would make the kernel listen on every
	// interface; forwards must say where they listen.
	if !listen.Addr().IsValid() {
		return nil, fmt.Errorf("forward to %s: no host address to listen on (use %s for this machine only)", target, DefaultHostAddr())
	}
	if !target.IsValid() || target.Port() == 0 {
		return nil, fmt.Errorf("forward %s: guest address %v is not a valid address and port", listen, target)
	}
	if log == nil {
		log = slog.Default()
	}
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(listen))
	if errors.Is(err, syscall.EACCES) {
		return nil, fmt.Errorf("forward %s to %s: port %d needs privileges bangerd does not have; use a port from 1024 up", listen, target, listen.Port())
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("forward %s to %s: %s is already in use; pick another host port", listen, target, listen)
	}
	if err != nil {
		return nil, fmt.Errorf("forward %s to %s: %w", listen, target, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Forwarder{
		ln:     ln,
		addr:   ln.Addr().(*net.TCPAddr).AddrPort(),
		target: target,
		log:    log.With("listen", listen, "target", target),
		ctx:    ctx,
		cancel: cancel,
		conns:  map[net.Conn]struct{}{},
	}
	f.wg.Go(f.acceptLoop)
	return f, nil
}

// Addr is the address actually listened on (with the chosen port).
func (f *Forwarder) Addr() netip.AddrPort { return f.addr }

// Target is the guest address connections go to.
func (f *Forwarder) Target() netip.AddrPort { return f.target }

// Stop closes the listener and every forwarded connection, and returns
// once all of the forwarder's goroutines have ended. It is idempotent.
func (f *Forwarder) Stop() error {
	f.cancel()
	err := f.ln.Close()
	f.mu.Lock()
	for c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("stop forward %s to %s: %w", f.addr, f.target, err)
	}
	return nil
}

func (f *Forwarder) acceptLoop() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if f.ctx.Err() != nil {
				return
			}
			// Out of file descriptors and the like: back off instead of
			// spinning, and keep serving.
			f.log.Warn("port forward: accept failed", "err", err)
			select {
			case <-f.ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if !f.track(c) {
			_ = c.Close()
			return
		}
		f.wg.Go(func() { f.serve(c) })
	}
}

// track registers c so Stop can close it; false means Stop already ran.
func (f *Forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ctx.Err() != nil {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *Forwarder) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	_ = c.Close()
}

func (f *Forwarder) serve(client net.Conn) {
	defer f.untrack(client)
	ctx, cancel := context.WithTimeout(f.ctx, dialTimeout)
	defer cancel()
	var d net.Dialer
	guest, err := d.DialContext(ctx, "tcp", f.target.String())
	if err != nil {
		f.log.Debug("port forward: guest unreachable", "client", client.RemoteAddr(), "err", err)
		return
	}
	if !f.track(guest) {
		_ = guest.Close()
		return
	}
	defer f.untrack(guest)

	// Each direction copies until EOF and then half-closes its
	// destination, so a client that shuts down writing still receives
	// the rest of the guest's reply (and vice versa). A failed copy (a
	// reset, Stop) closes both ends, which ends the other direction too.
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		_, err := io.Copy(dst, src)
		cw, ok := dst.(interface{ CloseWrite() error })
		if err != nil || !ok {
			_ = dst.Close()
			_ = src.Close()
			return
		}
		_ = cw.CloseWrite()
	}
	wg.Add(2)
	go pipe(guest, client)
	go pipe(client, guest)
	wg.Wait()
}
