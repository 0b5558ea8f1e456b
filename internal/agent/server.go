package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// requestTimeout bounds how long a new stream may take to send its request,
// so a host that opens streams and goes quiet does not pin goroutines.
const requestTimeout = 30 * time.Second

// shutdownGrace is how long stream handlers may take to wind down (kill
// their processes, finish a reply) once the agent is stopping.
const shutdownGrace = time.Second

// Channel is a single long-lived byte stream to the host, such as the
// virtio-serial port: it must support deadlines (an *os.File of a character
// device or pty does).
type Channel interface {
	io.ReadWriteCloser
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// Reopen pacing for the channel: a virtio port whose host end is closed
// reads EOF at once and polls as hung up, so nothing blocks until a host
// returns; the agent retries, quickly at first (a restored VM's new VMM
// connects within moments), then at a slow steady rate.
const (
	reopenFirstDelay = 10 * time.Millisecond
	reopenMaxDelay   = 100 * time.Millisecond
)

// Server is the guest half of the protocol. The zero value works: it
// serves the real system, reports the hostname from os.Hostname and logs
// nothing. A Server must not be copied after first use.
type Server struct {
	// Version is reported as agent_version.
	Version string
	// Hostname overrides os.Hostname (tests).
	Hostname func() (string, error)
	// Root is the directory guest paths are resolved in for file copies,
	// authorized_keys and SSH host keys: "" or "/" in a real guest. The
	// stand-in guest under the fake Firecracker is a host process and gets a
	// scratch directory, so the host's own /root and /etc are never
	// written. Processes always run on the real system. Root is a
	// convenience for tests, not a security boundary.
	Root string
	// HostKeyEntropy returns the stream a generated SSH host key is seeded
	// from, a new one per key (crypto/rand when nil). A stand-in guest
	// returns the same stream every time, so its key follows from the VM
	// alone, whichever of guest info or a new identity makes it first.
	HostKeyEntropy func() io.Reader
	// Power carries out poweroff and reboot; the default asks systemd when
	// it is PID 1 and calls reboot(2) otherwise.
	Power func(action string) error
	// Setup applies an identity (OpIdentity) to the guest; nil refuses the
	// op. Its Root should be Root.
	Setup *GuestSetup
	// MaxPutBytes refuses a put whose file data exceeds it; 0 means only
	// the free space on the target file system limits it.
	MaxPutBytes int64
	// Logf receives one line per failed session or stream; nil discards.
	Logf func(format string, args ...any)

	users    userDB
	keysMu   sync.Mutex
	mu       sync.Mutex
	sessions map[*yamux.Session]struct{}
	handlers sync.WaitGroup
	closing  bool
}

func (s *Server) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

func (s *Server) userDB() userDB {
	if s.users.passwd == "" {
		return systemUsers()
	}
	return s.users
}

// guestPath maps an absolute guest path into Root.
func (s *Server) guestPath(p string) string {
	if s.Root == "" || s.Root == "/" {
		return filepath.Clean(p)
	}
	return filepath.Join(s.Root, filepath.Clean("/"+p))
}

// Serve answers connections on ln, one yamux session per connection, until
// ln is closed; it then ends every session (killing processes they started),
// gives handlers a short grace and returns nil. A bad connection or stream
// fails only itself. Any other Accept error is returned.
func (s *Server) Serve(ln net.Listener) error {
	var (
		conns sync.WaitGroup
		mu    sync.Mutex
		open  = map[net.Conn]struct{}{}
	)
	defer func() {
		// Closing the raw connections also frees any still in their hello.
		mu.Lock()
		for conn := range open {
			conn.Close()
		}
		mu.Unlock()
		s.shutdown()
		conns.Wait()
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("agent: accept on %s: %w", ln.Addr(), err)
		}
		mu.Lock()
		open[conn] = struct{}{}
		mu.Unlock()
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer func() {
				mu.Lock()
				delete(open, conn)
				mu.Unlock()
			}()
			r, err := serverHelloSocket(conn)
			if err != nil {
				s.logf("agent: session from %s: %v", conn.RemoteAddr(), err)
				conn.Close()
				return
			}
			s.serveSession(readWriteCloser{Reader: r, Writer: conn, Closer: conn}, conn.RemoteAddr().String())
		}()
	}
}

// ServeChannel serves sessions on the channel that open opens, one after
// another, until ctx ends: wait for a host's hello, run the session until it
// fails (the host went away, or a new host said hello over it), repeat.
// When the channel hangs up (reads EOF, or fails) it is closed and opened
// again: a virtio port's host end closes when the VMM is replaced (a VM
// restored from a snapshot) or its host goes away, and a guest that keeps
// its old descriptor may never hear the new host. A failing open is retried
// too; the agent is the host's only way in.
func (s *Server) ServeChannel(ctx context.Context, open func() (Channel, error)) error {
	defer s.shutdown()
	delay := reopenFirstDelay
	openFailing := false
	for ctx.Err() == nil {
		ch, err := open()
		switch {
		case err != nil:
			if !openFailing {
				s.logf("agent: open channel (retrying): %v", err)
			}
			openFailing = true
		default:
			openFailing = false
			heard, err := s.serveOpenChannel(ctx, ch)
			_ = ch.Close()
			if heard {
				delay = reopenFirstDelay
			}
			if err != nil && !errors.Is(err, errHungUp) && ctx.Err() == nil {
				s.logf("agent: channel failed, reopening: %v", err)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(2*delay, reopenMaxDelay)
	}
	return nil
}

// serveOpenChannel serves sessions on ch until it hangs up or ctx ends. heard
// says whether any host said hello on it.
func (s *Server) serveOpenChannel(ctx context.Context, ch Channel) (heard bool, err error) {
	for {
		r, err := waitForHello(ctx, ch)
		if err != nil {
			return heard, err
		}
		heard = true
		cc := &channelConn{ch: ch, r: r}
		stop := context.AfterFunc(ctx, func() { _ = cc.Close() })
		s.serveSession(cc, "channel")
		stop()
		_ = cc.Close()
		if ctx.Err() != nil {
			return heard, nil
		}
	}
}

// serveSession runs one yamux session until it ends.
func (s *Server) serveSession(conn io.ReadWriteCloser, peer string) {
	sess, err := yamux.Server(conn, yamuxConfig(s.Logf))
	if err != nil {
		s.logf("agent: session from %s: %v", peer, err)
		conn.Close()
		return
	}
	if !s.track(sess) {
		sess.Close()
		return
	}
	defer s.untrack(sess)
	defer sess.Close()
	for {
		stream, err := sess.AcceptStream()
		if err != nil {
			if !errors.Is(err, yamux.ErrSessionShutdown) && !errors.Is(err, io.EOF) {
				s.logf("agent: session from %s ended: %v", peer, err)
			}
			return
		}
		s.handlers.Add(1)
		go func() {
			defer s.handlers.Done()
			s.serveStream(stream)
		}()
	}
}

func (s *Server) track(sess *yamux.Session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	if s.sessions == nil {
		s.sessions = map[*yamux.Session]struct{}{}
	}
	s.sessions[sess] = struct{}{}
	return true
}

func (s *Server) untrack(sess *yamux.Session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, sess)
}

// shutdown ends every session and waits (briefly) for stream handlers.
func (s *Server) shutdown() {
	s.mu.Lock()
	s.closing = true
	sessions := make([]*yamux.Session, 0, len(s.sessions))
	for sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()
	for _, sess := range sessions {
		sess.Close()
	}
	done := make(chan struct{})
	go func() {
		s.handlers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(shutdownGrace):
	}
}

// serveStream reads the request and runs the op. A panic in a handler fails
// that stream only: the agent is the host's one way into the guest.
func (s *Server) serveStream(stream *yamux.Stream) {
	defer stream.Close()
	fw := newFrameWriter(stream)
	defer func() {
		if r := recover(); r != nil {
			s.logf("agent: stream %d: internal error: %v\n%s", stream.StreamID(), r, debug.Stack())
			_ = fw.writeJSON(frameReply, failure(CodeFailed, "internal agent error: %v", r))
		}
	}()
	fr := newFrameReader(stream)
	_ = stream.SetReadDeadline(time.Now().Add(requestTimeout))
	var req Request
	if err := fr.nextJSON(frameRequest, &req); err != nil {
		s.logf("agent: stream %d: bad request: %v", stream.StreamID(), err)
		_ = fw.writeJSON(frameReply, failure(CodeInvalid, "bad request: %v", err))
		return
	}
	_ = stream.SetReadDeadline(time.Time{})
	var reply Reply
	switch req.Op {
	case OpHealth:
		reply = s.health()
	case OpGuestInfo:
		reply = s.guestInfo()
	case OpAuthorizeKey:
		if req.AuthorizeKey == nil {
			reply = failure(CodeInvalid, "authorize_key request without parameters")
			break
		}
		reply = s.authorizeKey(*req.AuthorizeKey)
	case OpPower:
		if req.Power == nil {
			reply = failure(CodeInvalid, "power request without parameters")
			break
		}
		reply = s.power(*req.Power)
	case OpIdentity:
		if req.Identity == nil {
			reply = failure(CodeInvalid, "identity request without parameters")
			break
		}
		reply = s.identity(*req.Identity)
	case OpExec:
		if req.Exec == nil {
			reply = failure(CodeInvalid, "exec request without parameters")
			break
		}
		s.serveExec(stream, fr, fw, *req.Exec)
		return
	case OpPut:
		if req.Put == nil {
			reply = failure(CodeInvalid, "put request without parameters")
			break
		}
		s.servePut(stream, fr, fw, *req.Put)
		return
	case OpGet:
		if req.Get == nil {
			reply = failure(CodeInvalid, "get request without parameters")
			break
		}
		s.serveGet(fw, *req.Get)
		return
	default:
		reply = failure(CodeUnknownOp, "unknown op %q (agent %s)", req.Op, s.Version)
	}
	if err := fw.writeJSON(frameReply, reply); err != nil {
		s.logf("agent: stream %d: reply to %s: %v", stream.StreamID(), req.Op, err)
	}
}

func failure(code, format string, args ...any) Reply {
	return Reply{OK: false, Code: code, Error: fmt.Sprintf(format, args...)}
}

// failureFrom classifies err for the host.
func failureFrom(err error) Reply {
	code := CodeFailed
	switch {
	case errors.Is(err, errNoUser):
		code = CodeNoUser
	case errors.Is(err, os.ErrNotExist):
		code = CodeNotFound
	case errors.Is(err, os.ErrPermission):
		code = CodePermission
	case errors.Is(err, errTooLarge):
		code = CodeTooLarge
	case errors.Is(err, errInvalid):
		code = CodeInvalid
	}
	return Reply{OK: false, Code: code, Error: err.Error()}
}

var (
	errTooLarge = errors.New("too large")
	errInvalid  = errors.New("invalid")
)

func (s *Server) hostname() (string, error) {
	if s.Hostname != nil {
		return s.Hostname()
	}
	return os.Hostname()
}

func (s *Server) health() Reply {
	name, err := s.hostname()
	if err != nil {
		return failure(CodeFailed, "read hostname: %v", err)
	}
	return Reply{OK: true, Health: &HealthInfo{AgentVersion: s.Version, Hostname: name}}
}
