package privileged

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Client calls the root helper over its socket. It is an Ops, so the
// daemon uses it exactly like Local. Each call is one connection: the helper
// checks the caller's credentials per connection, and connecting to a local
// socket costs microseconds.
type Client struct {
	socket string
	// timeout applies when the caller's context has no deadline.
	timeout time.Duration
}

var _ Ops = (*Client)(nil)

// NewClient returns a client for the helper socket at path (see
// paths.Layout.HelperSocketPath).
func NewClient(socket string) *Client {
	return &Client{socket: socket, timeout: 2 * time.Minute}
}

// Socket is the path this client dials.
func (c *Client) Socket() string { return c.socket }

// Info asks the helper who it is and whom it serves.
func (c *Client) Info(ctx context.Context) (HelperInfo, error) {
	return Call(ctx, c, OpInfo, None{})
}

// perform implements Ops: the request is checked here too, for an early,
// clear error, and its descriptors travel as SCM_RIGHTS, never as paths.
func (c *Client) perform(ctx context.Context, op entry, req any) (any, error) {
	if err := op.validate(req); err != nil {
		return nil, err
	}
	args, files := op.encode(req)
	raw, err := c.call(ctx, op.opName(), args, files...)
	if err != nil {
		return nil, err
	}
	return op.decodeResult(raw)
}

// maxResponseSize bounds what the client reads back.
const maxResponseSize = 1 << 20

// call sends one request and returns the result the helper answered with.
func (c *Client) call(ctx context.Context, op string, args any, files ...*os.File) (json.RawMessage, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	data, err := EncodeRequest(op, args)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return nil, fmt.Errorf("%w at %s (%v): is banger-root-helper.service running? `sudo systemctl start banger-root-helper` or `sudo banger system install`",
			ErrUnreachable, c.socket, unwrapSyscall(err))
	}
	conn := nc.(*net.UnixConn)
	defer func() { _ = conn.Close() }()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()

	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	n, _, err := conn.WriteMsgUnix(data, oob, nil)
	if err == nil && n < len(data) {
		_, err = conn.Write(data[n:])
	}
	if err == nil {
		err = conn.CloseWrite()
	}
	if err != nil {
		return nil, c.ioError(ctx, op, "send", err)
	}
	raw, err := io.ReadAll(io.LimitReader(conn, maxResponseSize))
	if err != nil {
		return nil, c.ioError(ctx, op, "read reply", err)
	}
	var resp Response
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&resp); err != nil {
		return nil, fmt.Errorf("root helper: %s: unreadable reply (%v); is the helper the same build as this daemon?", op, err)
	}
	if !resp.OK {
		if resp.Error == nil {
			return nil, fmt.Errorf("root helper: %s failed without saying why", op)
		}
		return nil, &RemoteError{Op: op, Code: resp.Error.Code, Message: resp.Error.Message}
	}
	return resp.Result, nil
}

func (c *Client) ioError(ctx context.Context, op, what string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("root helper: %s: %w", op, ctx.Err())
	}
	return fmt.Errorf("root helper: %s: %s: %w", op, what, err)
}

// unwrapSyscall shortens "dial unix /run/…: connect: no such file or
// directory" to its last part; the socket path is already in the message.
func unwrapSyscall(err error) error {
	if oe, ok := err.(*net.OpError); ok && oe.Err != nil {
		if se, ok := oe.Err.(*os.SyscallError); ok {
			return se.Err
		}
		return oe.Err
	}
	return err
}
