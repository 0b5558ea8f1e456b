package privileged

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ServerOptions configures the root helper's server.
type ServerOptions struct {
	// Ops performs the operations; in the helper a *Local.
	Ops Ops
	// Owner is the only uid whose requests are served (uid 0 may ask for
	// helper.info, so `sudo banger system status` works).
	Owner Owner
	// Info describes this helper for helper.info; PID and OwnerUID are
	// filled in by the server.
	Info HelperInfo
	Log  *slog.Logger
	// ReadTimeout bounds how long a client may take to send its request
	// (default 5s); OpTimeout bounds one operation (default 2m).
	ReadTimeout time.Duration
	OpTimeout   time.Duration
	// MaxConcurrent bounds the owner's connections handled at once
	// (default 16), so a misbehaving client cannot exhaust the helper.
	MaxConcurrent int
	// StrangerReadTimeout bounds how long any other uid may take to send
	// before it is refused (default 250ms), and StrangerConns how many
	// connections each such uid may have open at once (default 2); more are
	// closed unread. Strangers never take the owner's slots.
	StrangerReadTimeout time.Duration
	StrangerConns       int
}

// Server serves Ops on a Unix socket to the owner's uid only.
type Server struct {
	opts ServerOptions
	log  *slog.Logger
	// sem bounds the owner's connections; strangers counts everyone else's
	// by uid.
	sem       chan struct{}
	strangers connCounter
}

// connCounter counts open connections per uid.
type connCounter struct {
	mu sync.Mutex
	n  map[int]int
}

// acquire takes one of limit slots for uid, or reports there is none.
func (c *connCounter) acquire(uid, limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[uid] >= limit {
		return false
	}
	if c.n == nil {
		c.n = map[int]int{}
	}
	c.n[uid]++
	return true
}

func (c *connCounter) release(uid int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[uid]--; c.n[uid] <= 0 {
		delete(c.n, uid)
	}
}

// NewServer checks opts and returns a server.
func NewServer(opts ServerOptions) (*Server, error) {
	if opts.Ops == nil {
		return nil, errors.New("privileged server: no Ops")
	}
	if opts.Owner.UID < 0 {
		return nil, fmt.Errorf("privileged server: owner uid %d invalid", opts.Owner.UID)
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.ReadTimeout == 0 {
		opts.ReadTimeout = 5 * time.Second
	}
	if opts.OpTimeout == 0 {
		opts.OpTimeout = 2 * time.Minute
	}
	if opts.MaxConcurrent == 0 {
		opts.MaxConcurrent = 16
	}
	if opts.StrangerReadTimeout == 0 {
		opts.StrangerReadTimeout = 250 * time.Millisecond
	}
	if opts.StrangerConns == 0 {
		opts.StrangerConns = 2
	}
	opts.Info.OwnerUID = opts.Owner.UID
	if opts.Info.PID == 0 {
		opts.Info.PID = os.Getpid()
	}
	return &Server{opts: opts, log: opts.Log, sem: make(chan struct{}, opts.MaxConcurrent)}, nil
}

// Listen creates the helper socket at path, replacing a stale socket left by
// a crash (but nothing else), and makes it connectable by group gid only.
// SO_PEERCRED is the real check; the mode keeps everyone else from even
// reaching it.
func Listen(path string, gid int) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket; remove it and restart the helper", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chown(path, -1, gid); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("chown %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}

// Serve accepts connections until ctx is canceled, then waits for requests
// in flight and closes ln.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	defer func() { _ = ln.Close() }()
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			s.log.Warn("accept on helper socket failed", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		// Who is calling is known at accept, before anything is read: it
		// decides which slots the connection may take and whether it may
		// pass descriptors at all.
		p, err := peerCred(conn)
		if err != nil {
			s.log.Warn("helper connection without peer credentials", "err", err)
			_ = conn.Close()
			continue
		}
		release, ok := s.admit(ctx, p)
		if !ok {
			_ = conn.Close()
			if ctx.Err() != nil {
				return nil
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer release()
			s.handle(ctx, conn, p)
		}()
	}
}

// admit takes a connection slot for p: the owner waits for one of its
// MaxConcurrent; anyone else gets one of its uid's few or is turned away at
// once, so strangers can neither exhaust the helper nor delay the owner.
func (s *Server) admit(ctx context.Context, p peer) (release func(), ok bool) {
	if p.uid != s.opts.Owner.UID {
		if !s.strangers.acquire(p.uid, s.opts.StrangerConns) {
			s.log.Debug("root helper connection over the per-uid limit closed", "uid", p.uid, "pid", p.pid)
			return nil, false
		}
		return func() { s.strangers.release(p.uid) }, true
	}
	select {
	case s.sem <- struct{}{}:
		return func() { <-s.sem }, true
	case <-ctx.Done():
		return nil, false
	}
}

// peer is who is on the other end, per the kernel.
type peer struct{ uid, gid, pid int }

func peerCred(conn *net.UnixConn) (peer, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return peer{}, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return peer{}, err
	}
	if cerr != nil {
		return peer{}, cerr
	}
	return peer{uid: int(cred.Uid), gid: int(cred.Gid), pid: int(cred.Pid)}, nil
}

func (s *Server) handle(ctx context.Context, conn *net.UnixConn, p peer) {
	defer func() { _ = conn.Close() }()
	// A bug in one request's handling must not take the helper (and every
	// VM operation with it) down.
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("root helper request panicked", "panic", p)
		}
	}()
	// On shutdown, unblock a client that is slow to send or read.
	stopDeadline := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stopDeadline()
	start := time.Now()
	allowed := p.uid == s.opts.Owner.UID || p.uid == 0
	readTimeout, maxFiles := s.opts.ReadTimeout, maxPassedFiles
	if p.uid != s.opts.Owner.UID {
		// Enough to drain a well-behaved request, too little for a stranger
		// to hold a connection. No one but the owner has an operation that
		// takes descriptors, so no one else gets any installed: the kernel
		// closes descriptors that find no room.
		readTimeout, maxFiles = min(readTimeout, s.opts.StrangerReadTimeout), 0
	}
	_ = conn.SetReadDeadline(time.Now().Add(readTimeout))
	// Read the request even from callers about to be refused: closing a
	// Unix socket with unread data makes the peer's read fail with
	// ECONNRESET, and a refusal should arrive as a clear answer.
	data, files, rerr := readRequest(conn, maxFiles)
	defer closeFiles(files)

	if !allowed {
		s.log.Warn("refused root helper request", "uid", p.uid, "gid", p.gid, "pid", p.pid, "owner_uid", s.opts.Owner.UID)
		s.reply(conn, nil, fmt.Errorf("%w: uid %d may not use the root helper; it serves only banger's install owner (uid %d)",
			ErrRefused, p.uid, s.opts.Owner.UID))
		return
	}
	if rerr != nil {
		s.log.Warn("unreadable root helper request", "uid", p.uid, "pid", p.pid, "err", rerr)
		s.reply(conn, nil, rerr)
		return
	}
	req, err := DecodeRequest(data)
	if err != nil {
		s.log.Warn("malformed root helper request", "uid", p.uid, "pid", p.pid, "err", err)
		s.reply(conn, nil, err)
		return
	}
	if !req.op.mayCall(p.uid == s.opts.Owner.UID) {
		s.log.Warn("refused root helper request", "op", req.Op, "uid", p.uid, "pid", p.pid, "owner_uid", s.opts.Owner.UID)
		s.reply(conn, nil, fmt.Errorf("%w: uid %d may only ask the root helper for %s; operations are for the install owner (uid %d)",
			ErrRefused, p.uid, OpInfo.Name(), s.opts.Owner.UID))
		return
	}
	if want := req.op.fileCount(req.Args); len(files) != want {
		err := malformed("%s takes %d file descriptors, got %d", req.Op, want, len(files))
		s.log.Warn("malformed root helper request", "op", req.Op, "uid", p.uid, "pid", p.pid, "err", err)
		s.reply(conn, nil, err)
		return
	}
	opCtx, cancel := context.WithTimeout(ctx, s.opts.OpTimeout)
	defer cancel()
	result, err := s.dispatch(opCtx, req, files)
	level := slog.LevelInfo
	if err != nil {
		level = slog.LevelWarn
	}
	s.log.Log(ctx, level, "root helper request", "op", req.Op, "args", req.Args, "uid", p.uid, "pid", p.pid,
		"duration", time.Since(start).Round(time.Microsecond), "err", err)
	s.reply(conn, result, err)
}

// dispatch performs a decoded request whose descriptors the caller has
// counted: helper.info is the server's own answer, everything else goes to
// Ops, which checks it again.
func (s *Server) dispatch(ctx context.Context, req Request, files []*os.File) (any, error) {
	if req.op == entry(OpInfo) {
		return s.opts.Info, nil
	}
	r, err := req.op.decode(req.Args, files)
	if err != nil {
		return nil, err
	}
	out, err := s.opts.Ops.perform(ctx, req.op, r)
	return req.op.result(out), err
}

func (s *Server) reply(conn *net.UnixConn, result any, err error) {
	resp := Response{OK: err == nil}
	if err != nil {
		resp.Error = &WireError{Code: codeOf(err), Message: err.Error()}
	} else if result != nil {
		b, merr := json.Marshal(result)
		if merr != nil {
			resp = Response{Error: &WireError{Code: CodeFailed, Message: merr.Error()}}
		} else {
			resp.Result = b
		}
	}
	b, _ := json.Marshal(resp)
	_ = conn.SetWriteDeadline(time.Now().Add(s.opts.ReadTimeout))
	if _, werr := conn.Write(b); werr != nil {
		s.log.Warn("write root helper reply", "err", werr)
	}
}

// maxPassedFiles bounds the descriptors accepted with one request, over all
// its messages (jailer.launch, the most, takes 7); with more the request is
// refused.
const maxPassedFiles = 8

// readRequest reads until EOF, at most MaxRequestSize bytes (it stops
// reading past that, so an oversize request costs one buffer, not its
// size), collecting up to maxFiles descriptors passed as SCM_RIGHTS. The
// control buffer only ever has room for the descriptors still allowed: the
// kernel closes any beyond it and says so with MSG_CTRUNC.
func readRequest(conn *net.UnixConn, maxFiles int) ([]byte, []*os.File, error) {
	var (
		data  []byte
		files []*os.File
		buf   = make([]byte, 4096)
	)
	for {
		var oob []byte
		if room := maxFiles - len(files); room > 0 {
			oob = make([]byte, unix.CmsgSpace(4*room))
		}
		want := min(len(buf), MaxRequestSize+1-len(data))
		n, oobn, flags, _, err := conn.ReadMsgUnix(buf[:want], oob)
		// On error the counts may be -1; nothing was received then.
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, files, fmt.Errorf("read request: %w", err)
		}
		if oobn > 0 {
			fs, perr := parseRights(oob[:oobn])
			files = append(files, fs...)
			if perr != nil {
				return nil, files, perr
			}
		}
		if flags&unix.MSG_CTRUNC != 0 {
			return nil, files, malformed("too many file descriptors (a request takes at most %d)", maxFiles)
		}
		if n > 0 {
			data = append(data, buf[:n]...)
		}
		if len(data) > MaxRequestSize {
			return nil, files, malformed("request exceeds %d bytes", MaxRequestSize)
		}
		if err != nil || (n <= 0 && oobn <= 0) {
			return data, files, nil // EOF: the client shut down its side
		}
	}
}

func parseRights(oob []byte) ([]*os.File, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, malformed("control message: %v", err)
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue // credentials or other ancillary data: ignored
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "passed-fd"))
		}
	}
	return files, nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}
