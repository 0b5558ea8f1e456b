package agent

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// Client is the host half: one session with one agent over one transport
// connection. It is safe for concurrent use; every call runs on its own
// stream.
type Client struct {
	sess *yamux.Session
}

// NewClient says hello on conn (a fresh connection to the agent, or the
// serial channel) and starts a session over it. ctx bounds the hello only.
// Closing the Client closes conn.
func NewClient(ctx context.Context, conn net.Conn) (*Client, error) {
	r, err := clientHello(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("agent hello: %w", err)
	}
	// The guest is untrusted: its frames pass the guard before yamux.
	sess, err := yamux.Client(newMuxGuard(r, conn, conn), yamuxConfig(nil))
	if err != nil {
		return nil, err
	}
	return &Client{sess: sess}, nil
}

// Close ends the session and closes the connection; streams in flight fail.
func (c *Client) Close() error { return c.sess.Close() }

// Done is closed when the session has ended (closed, or the transport
// failed), after which every call fails and a new Client is needed.
func (c *Client) Done() <-chan struct{} { return c.sess.CloseChan() }

// Health asks the agent on conn whether it is up: hello, one health call,
// then the session is closed (and with it conn). conn must be a fresh
// connection to the agent (for Firecracker, one that already passed the
// hybrid-vsock CONNECT handshake). Cancelling ctx aborts it.
func Health(ctx context.Context, conn net.Conn) (HealthInfo, error) {
	c, err := NewClient(ctx, conn)
	if err != nil {
		return HealthInfo{}, fmt.Errorf("agent health check: %w", err)
	}
	defer func() { _ = c.Close() }()
	info, err := c.Health(ctx)
	if err != nil {
		return HealthInfo{}, fmt.Errorf("agent health check: %w", err)
	}
	return info, nil
}

// Health reports the agent's version and the guest's hostname.
func (c *Client) Health(ctx context.Context) (HealthInfo, error) {
	reply, err := c.call(ctx, Request{Op: OpHealth})
	if err != nil {
		return HealthInfo{}, err
	}
	if reply.Health == nil {
		return HealthInfo{}, errors.New("health reply without health information")
	}
	return *reply.Health, nil
}

// GuestInfo describes the guest, including its SSH host keys (created on
// first request if the guest has none yet).
func (c *Client) GuestInfo(ctx context.Context) (GuestInfo, error) {
	reply, err := c.call(ctx, Request{Op: OpGuestInfo})
	if err != nil {
		return GuestInfo{}, err
	}
	if reply.Guest == nil {
		return GuestInfo{}, errors.New("guest_info reply without guest information")
	}
	return *reply.Guest, nil
}

// AuthorizeKey installs an SSH public key in a guest user's
// authorized_keys, replacing an earlier banger key.
func (c *Client) AuthorizeKey(ctx context.Context, req AuthorizeKeyRequest) (AuthorizeKeyResult, error) {
	reply, err := c.call(ctx, Request{Op: OpAuthorizeKey, AuthorizeKey: &req})
	if err != nil {
		return AuthorizeKeyResult{}, err
	}
	if reply.AuthorizeKey == nil {
		return AuthorizeKeyResult{}, errors.New("authorize_key reply without a result")
	}
	return *reply.AuthorizeKey, nil
}

// Reidentify makes the guest (just restored from a snapshot of another VM)
// take id: interface MAC and address, hostname, machine-id, RNG seed, clock
// and fresh SSH host keys. It is idempotent, so the host may retry it. id is
// validated here first so a bad value fails without a round trip. The
// guest's answer is untrusted: its hostname must be id's, its interface a
// plain name, and its host keys few, small and real SSH public keys
// (re-rendered without options or comments) before they are returned for
// pinning.
func (c *Client) Reidentify(ctx context.Context, id Identity) (IdentityResult, error) {
	if err := id.Validate(); err != nil {
		return IdentityResult{}, fmt.Errorf("reidentify: %w", err)
	}
	reply, err := c.call(ctx, Request{Op: OpIdentity, Identity: &id})
	if err != nil {
		return IdentityResult{}, err
	}
	if reply.Identity == nil {
		return IdentityResult{}, errors.New("identity reply without a result")
	}
	res, err := checkIdentityResult(id, *reply.Identity)
	if err != nil {
		return IdentityResult{}, fmt.Errorf("identity reply: %w", err)
	}
	return res, nil
}

// call runs a unary op on a new stream.
func (c *Client) call(ctx context.Context, req Request) (Reply, error) {
	stream, reply, err := c.open(ctx, req)
	if err != nil {
		return Reply{}, err
	}
	stream.Close()
	return reply, nil
}

// Open starts op req on a new stream and returns the stream once the agent
// accepted it, positioned just after the reply: what follows is the op's
// own frames (exec I/O, copy entries). The daemon relays such a stream to
// the CLI byte for byte. ctx bounds the opening only.
func (c *Client) Open(ctx context.Context, req Request) (net.Conn, error) {
	stream, _, err := c.open(ctx, req)
	return stream, err
}

func (c *Client) open(ctx context.Context, req Request) (net.Conn, Reply, error) {
	if err := ctx.Err(); err != nil {
		return nil, Reply{}, err
	}
	stream, err := c.sess.OpenStream()
	if err != nil {
		return nil, Reply{}, fmt.Errorf("open agent stream: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = stream.SetDeadline(time.Unix(1, 0)) })
	reply, err := exchange(stream, req)
	if !stop() {
		stream.Close()
		return nil, Reply{}, context.Cause(ctx)
	}
	if err != nil {
		stream.Close()
		return nil, Reply{}, err
	}
	if !reply.OK {
		stream.Close()
		return nil, Reply{}, &RemoteError{Op: req.Op, Code: reply.Code, Message: reply.Error}
	}
	return stream, reply, nil
}

// exchange writes the request frame and reads the reply frame without
// buffering past it, so the caller can hand the stream on intact.
func exchange(rw io.ReadWriter, req Request) (Reply, error) {
	if err := newFrameWriter(rw).writeJSON(frameRequest, req); err != nil {
		return Reply{}, fmt.Errorf("send %s request: %w", req.Op, err)
	}
	var reply Reply
	if err := readFrameUnbuffered(rw, frameReply, &reply); err != nil {
		return Reply{}, fmt.Errorf("read %s reply: %w", req.Op, err)
	}
	return reply, nil
}

// readFrameUnbuffered reads one frame of type want straight from r (no
// read-ahead) and decodes it into v.
func readFrameUnbuffered(r io.Reader, want byte, v any) error {
	var hdr [frameHeader]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if hdr[0] != want {
		return fmt.Errorf("unexpected frame type %d, want %d", hdr[0], want)
	}
	if n > MaxFrame {
		return fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, n)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return err
	}
	if err := json.Unmarshal(payload, v); err != nil {
		return fmt.Errorf("malformed reply %q: %w", truncate(payload), err)
	}
	return nil
}

// Put copies local path src into the guest as req describes.
func (c *Client) Put(ctx context.Context, req PutRequest, src string, ts TreeSender) (CopyResult, error) {
	stream, err := c.Open(ctx, Request{Op: OpPut, Put: &req})
	if err != nil {
		return CopyResult{}, err
	}
	defer stream.Close()
	stop := context.AfterFunc(ctx, func() { _ = stream.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	res, err := SendPut(stream, src, ts)
	if err != nil && ctx.Err() != nil {
		return res, context.Cause(ctx)
	}
	return res, err
}

// SendPut is the host side of an accepted put on rw: it sends src and
// returns the agent's result. It stops sending as soon as the agent refuses.
func SendPut(rw io.ReadWriter, src string, ts TreeSender) (CopyResult, error) {
	fr := newFrameReader(rw)
	type result struct {
		reply Reply
		err   error
	}
	replies := make(chan result, 1)
	var refused atomic.Bool
	go func() {
		var reply Reply
		err := fr.nextJSON(frameReply, &reply)
		if err == nil && !reply.OK {
			refused.Store(true)
		}
		replies <- result{reply, err}
	}()
	ts.stop = func() bool { return refused.Load() }
	_, sendErr := ts.sendTree(newFrameWriter(rw), src)
	r := <-replies
	switch {
	case r.err != nil && sendErr != nil:
		return CopyResult{}, sendErr
	case r.err != nil:
		return CopyResult{}, fmt.Errorf("read put result: %w", r.err)
	case !r.reply.OK:
		return CopyResult{}, &RemoteError{Op: OpPut, Code: r.reply.Code, Message: r.reply.Error}
	case sendErr != nil:
		return CopyResult{}, sendErr
	case r.reply.Put == nil:
		return CopyResult{}, errors.New("put reply without a result")
	}
	return *r.reply.Put, nil
}

// ReceiveGet is the host side of an accepted get on r: it writes the tree
// at dest. With tr.IdleTimeout set and r able to take read deadlines (a
// connection or stream), a sender that goes quiet fails the copy with
// ErrCopyStalled instead of hanging it.
func ReceiveGet(r io.Reader, dest string, tr TreeReceiver) (CopyResult, error) {
	if d, ok := r.(readDeadliner); ok && tr.IdleTimeout > 0 {
		r = &idleReader{r: d, timeout: tr.IdleTimeout}
	}
	res, err := tr.receiveTree(newFrameReader(r), dest)
	if err != nil {
		var remote *RemoteError
		if errors.As(err, &remote) {
			remote.Op = OpGet
		}
		return res, err
	}
	return res, nil
}

type readDeadliner interface {
	io.Reader
	SetReadDeadline(time.Time) error
}

// idleReader fails a read that waits longer than timeout for its first byte.
type idleReader struct {
	r       readDeadliner
	timeout time.Duration
}

func (ir *idleReader) Read(p []byte) (int, error) {
	if err := ir.r.SetReadDeadline(time.Now().Add(ir.timeout)); err != nil {
		return 0, err
	}
	n, err := ir.r.Read(p)
	var ne net.Error
	if n == 0 && errors.As(err, &ne) && ne.Timeout() {
		return 0, fmt.Errorf("%w: the sender sent nothing for %s", ErrCopyStalled, ir.timeout)
	}
	return n, err
}
