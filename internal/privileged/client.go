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

// Client calls the root helper over its socket. It implements Ops, so the
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
	var info HelperInfo
	err := c.call(ctx, OpInfo, nil, &info)
	return info, err
}

// EnsureBridge implements Ops.
func (c *Client) EnsureBridge(ctx context.Context, spec BridgeSpec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	return c.call(ctx, OpEnsureBridge, spec, nil)
}

// DeleteBridge implements Ops.
func (c *Client) DeleteBridge(ctx context.Context, name string) error {
	if err := ValidBridgeName(name); err != nil {
		return err
	}
	return c.call(ctx, OpDeleteBridge, nameArgs{Name: name}, nil)
}

// CreateTap implements Ops.
func (c *Client) CreateTap(ctx context.Context, spec TapSpec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	return c.call(ctx, OpCreateTap, spec, nil)
}

// DeleteTap implements Ops.
func (c *Client) DeleteTap(ctx context.Context, name string) error {
	if err := ValidTapName(name); err != nil {
		return err
	}
	return c.call(ctx, OpDeleteTap, nameArgs{Name: name}, nil)
}

// EnsureNAT implements Ops.
func (c *Client) EnsureNAT(ctx context.Context, spec NATSpec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	return c.call(ctx, OpEnsureNAT, spec, nil)
}

// RemoveNAT implements Ops.
func (c *Client) RemoveNAT(ctx context.Context, spec NATSpec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	return c.call(ctx, OpRemoveNAT, spec, nil)
}

// Isolate implements Ops.
func (c *Client) Isolate(ctx context.Context, spec IsolationSpec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	return c.call(ctx, OpIsolate, spec, nil)
}

// Unisolate implements Ops.
func (c *Client) Unisolate(ctx context.Context, spec IsolationSpec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	return c.call(ctx, OpUnisolate, spec, nil)
}

// EnableIPForward implements Ops.
func (c *Client) EnableIPForward(ctx context.Context) error {
	return c.call(ctx, OpEnableIPForward, nil, nil)
}

// ConfigureResolver implements Ops.
func (c *Client) ConfigureResolver(ctx context.Context, spec ResolverSpec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	return c.call(ctx, OpConfigureResolver, spec, nil)
}

// RevertResolver implements Ops.
func (c *Client) RevertResolver(ctx context.Context, link string) error {
	if err := ValidBridgeName(link); err != nil {
		return err
	}
	return c.call(ctx, OpRevertResolver, linkArgs{Link: link}, nil)
}

// AttachLoop implements Ops; the backing file's descriptor is passed to the
// helper, never its path.
func (c *Client) AttachLoop(ctx context.Context, spec LoopAttach) (string, error) {
	if err := spec.Validate(); err != nil {
		return "", err
	}
	var res deviceResult
	err := c.call(ctx, OpAttachLoop, spec, &res, spec.Backing)
	return res.Device, err
}

// DetachLoop implements Ops.
func (c *Client) DetachLoop(ctx context.Context, device string) error {
	if err := ValidLoopDevice(device); err != nil {
		return err
	}
	return c.call(ctx, OpDetachLoop, deviceArgs{Device: device}, nil)
}

// CreateSnapshot implements Ops.
func (c *Client) CreateSnapshot(ctx context.Context, spec SnapshotSpec) (string, error) {
	if err := spec.Validate(); err != nil {
		return "", err
	}
	var res deviceResult
	err := c.call(ctx, OpCreateSnapshot, spec, &res)
	return res.Device, err
}

// RemoveSnapshot implements Ops.
func (c *Client) RemoveSnapshot(ctx context.Context, name string) error {
	if err := ValidSnapshotName(name); err != nil {
		return err
	}
	return c.call(ctx, OpRemoveSnapshot, nameArgs{Name: name}, nil)
}

// Chown implements Ops.
func (c *Client) Chown(ctx context.Context, spec ChownSpec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	return c.call(ctx, OpChown, spec, nil)
}

// Chmod implements Ops.
func (c *Client) Chmod(ctx context.Context, spec ChmodSpec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	return c.call(ctx, OpChmod, spec, nil)
}

// maxResponseSize bounds what the client reads back.
const maxResponseSize = 1 << 20

func (c *Client) call(ctx context.Context, op string, args any, result any, files ...*os.File) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	data, err := EncodeRequest(op, args)
	if err != nil {
		return err
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return fmt.Errorf("%w at %s (%v): is banger-root-helper.service running? `sudo systemctl start banger-root-helper` or `sudo banger system install`",
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
		return c.ioError(ctx, op, "send", err)
	}
	raw, err := io.ReadAll(io.LimitReader(conn, maxResponseSize))
	if err != nil {
		return c.ioError(ctx, op, "read reply", err)
	}
	var resp Response
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&resp); err != nil {
		return fmt.Errorf("root helper: %s: unreadable reply (%v); is the helper the same build as this daemon?", op, err)
	}
	if !resp.OK {
		if resp.Error == nil {
			return fmt.Errorf("root helper: %s failed without saying why", op)
		}
		return &RemoteError{Op: op, Code: resp.Error.Code, Message: resp.Error.Message}
	}
	if result != nil && len(resp.Result) > 0 {
		if err := json.Unmarshal(resp.Result, result); err != nil {
			return fmt.Errorf("root helper: %s: unreadable result: %w", op, err)
		}
	}
	return nil
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

// LaunchJailer implements Ops; every file travels as a descriptor.
func (c *Client) LaunchJailer(ctx context.Context, spec JailerLaunch) (JailedVMM, error) {
	if err := spec.Validate(); err != nil {
		return JailedVMM{}, err
	}
	args, files := spec.wire()
	var res JailedVMM
	err := c.call(ctx, OpLaunchJailer, args, &res, files...)
	return res, err
}

// RemoveJail implements Ops.
func (c *Client) RemoveJail(ctx context.Context, vmID string) error {
	if err := ValidJailID(vmID); err != nil {
		return err
	}
	return c.call(ctx, OpRemoveJail, vmArgs{VMID: vmID}, nil)
}
