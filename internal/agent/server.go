package agent

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// requestTimeout bounds how long one connection may take to send its request
// and receive the reply, so a host that connects and goes quiet does not pin
// a goroutine in the guest forever.
const requestTimeout = 30 * time.Second

// shutdownGrace is how long connections in flight may still take once the
// listener is closed. A reply being written finishes well within it; a host
// that connected and never sent a request does not hold up shutdown.
const shutdownGrace = time.Second

// Server is the guest half of the protocol. The zero value works: it reports
// the hostname from os.Hostname and logs nothing.
type Server struct {
	// Version is reported as agent_version in health replies.
	Version string
	// Hostname overrides os.Hostname (tests, and guests that learn their name
	// from the kernel command line before the UTS name is set).
	Hostname func() (string, error)
	// Logf receives one line per failed connection; nil discards them.
	Logf func(format string, args ...any)
}

// Serve answers connections on ln until ln is closed, then gives connections
// in flight a short grace to finish and returns nil. A bad request fails only
// its own connection. Any other Accept error is returned.
func (s *Server) Serve(ln net.Listener) error {
	var (
		mu       sync.Mutex
		open     = map[net.Conn]struct{}{}
		inflight sync.WaitGroup
	)
	defer func() {
		mu.Lock()
		for conn := range open {
			_ = conn.SetDeadline(time.Now().Add(shutdownGrace))
		}
		mu.Unlock()
		inflight.Wait()
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("agent: accept on %s: %w", ln.Addr(), err)
		}
		// Set before the handler runs, so the shutdown grace above can only
		// shorten it, never be overwritten by it.
		_ = conn.SetDeadline(time.Now().Add(requestTimeout))
		mu.Lock()
		open[conn] = struct{}{}
		mu.Unlock()
		inflight.Add(1)
		go func() {
			defer inflight.Done()
			s.serveConn(conn)
			mu.Lock()
			delete(open, conn)
			mu.Unlock()
		}()
	}
}

func (s *Server) serveConn(conn net.Conn) {
	defer conn.Close()
	resp := s.respond(bufio.NewReader(conn))
	line, err := json.Marshal(resp)
	if err == nil {
		_, err = conn.Write(append(line, '\n'))
	}
	if err != nil {
		s.logf("agent: reply to %s: %v", conn.RemoteAddr(), err)
	}
}

// respond reads one request and builds its reply. Failures become ok=false
// replies so the host always learns why, instead of seeing a bare close.
func (s *Server) respond(r *bufio.Reader) Response {
	line, err := readLine(r)
	if err != nil {
		return failure("read request: %v", err)
	}
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		return failure("malformed request: %v", err)
	}
	switch req.Op {
	case OpHealth:
		return s.health()
	default:
		return failure("unknown op %q", req.Op)
	}
}

func (s *Server) health() Response {
	hostname := s.Hostname
	if hostname == nil {
		hostname = os.Hostname
	}
	name, err := hostname()
	if err != nil {
		return failure("read hostname: %v", err)
	}
	return Response{OK: true, AgentVersion: s.Version, Hostname: name}
}

func failure(format string, args ...any) Response {
	return Response{OK: false, Error: fmt.Sprintf(format, args...)}
}

func (s *Server) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}
