package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// QMPClient speaks the QEMU Machine Protocol on one connection to QEMU's
// QMP socket. Commands are serialized; asynchronous events arriving in
// between are skipped. QEMU serves one QMP client at a time on a socket,
// so hold a client only for as long as a task needs it.
type QMPClient struct {
	conn net.Conn
	r    *bufio.Reader

	mu     sync.Mutex
	nextID uint64
	// broken is set after an I/O error: the stream may stop mid-reply, so
	// the connection cannot be trusted for another command.
	broken error
	// Version is what QEMU announced in its greeting.
	Version QMPVersion
}

// QMPVersion is QEMU's version from the QMP greeting.
type QMPVersion struct {
	Major, Minor, Micro int
	// Package is the distribution's build, e.g. "Debian 1:7.2+dfsg-7".
	Package string
}

func (v QMPVersion) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro) }

// Status is the reply of query-status.
type Status struct {
	// Status is QEMU's run state: "running", "paused", "shutdown",
	// "prelaunch", "internal-error", ...
	Status  string `json:"status"`
	Running bool   `json:"running"`
}

// paused reports whether the guest's vCPUs are stopped by request:
// "paused" after QMP stop, "postmigrate" after a snapshot was written
// (CreateSnapshot) from a paused guest. Both resume with cont.
func (s Status) paused() bool { return s.Status == "paused" || s.Status == "postmigrate" }

// QMPError is an error QEMU returned for a command.
type QMPError struct {
	Command string
	Class   string `json:"class"`
	Desc    string `json:"desc"`
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s (%s)", e.Command, e.Desc, e.Class)
}

// DialQMP connects to the QMP socket at path, reads the greeting and
// leaves capabilities negotiation mode, so commands can be sent.
func DialQMP(ctx context.Context, path string) (*QMPClient, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	c := &QMPClient{conn: conn, r: bufio.NewReader(conn)}
	if err := c.handshake(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func (c *QMPClient) handshake(ctx context.Context) error {
	stop := c.deadline(ctx)
	defer stop()
	line, err := c.r.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("read QMP greeting: %w", ctxErr(ctx, err))
	}
	var g struct {
		QMP *struct {
			Version struct {
				QEMU struct {
					Major int `json:"major"`
					Minor int `json:"minor"`
					Micro int `json:"micro"`
				} `json:"qemu"`
				Package string `json:"package"`
			} `json:"version"`
		} `json:"QMP"`
	}
	if err := json.Unmarshal(line, &g); err != nil || g.QMP == nil {
		return fmt.Errorf("QMP greeting %q is not one", truncate(line))
	}
	v := g.QMP.Version
	c.Version = QMPVersion{Major: v.QEMU.Major, Minor: v.QEMU.Minor, Micro: v.QEMU.Micro, Package: v.Package}
	return c.exec(ctx, "qmp_capabilities", nil, nil, nil)
}

// Execute runs command with args (nil for none) and decodes its "return"
// value into out (nil to ignore it). A command QEMU refuses is a *QMPError.
func (c *QMPClient) Execute(ctx context.Context, command string, args, out any) error {
	stop := c.deadline(ctx)
	defer stop()
	return c.exec(ctx, command, args, out, nil)
}

// SendFile hands f to QEMU under name (QMP getfd; the descriptor travels
// as SCM_RIGHTS with the command), for a later command to use as
// "fd:NAME". QEMU holds its own copy, so a path never reaches QEMU and no
// shell is involved; f stays the caller's to close.
func (c *QMPClient) SendFile(ctx context.Context, name string, f *os.File) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("qmp getfd: %w", err)
	}
	var oob []byte
	if err := raw.Control(func(fd uintptr) { oob = unix.UnixRights(int(fd)) }); err != nil {
		return fmt.Errorf("qmp getfd: %w", err)
	}
	stop := c.deadline(ctx)
	defer stop()
	// The descriptor number in oob must stay valid until the message is
	// sent; f is open until the caller closes it, after this returns.
	err = c.exec(ctx, "getfd", map[string]string{"fdname": name}, nil, oob)
	runtime.KeepAlive(f)
	return err
}

// exec sends command with oob (ancillary data, nil for none) alongside
// and waits for its reply.
func (c *QMPClient) exec(ctx context.Context, command string, args, out any, oob []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return fmt.Errorf("qmp %s: connection unusable after an earlier error: %w", command, c.broken)
	}
	c.nextID++
	id := c.nextID
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        uint64 `json:"id"`
	}{command, args, id}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode qmp %s: %w", command, err)
	}
	if err := c.send(append(b, '\n'), oob); err != nil {
		return c.fail(fmt.Errorf("send qmp %s: %w", command, ctxErr(ctx, err)))
	}
	for {
		line, err := c.r.ReadBytes('\n')
		if err != nil {
			return c.fail(fmt.Errorf("read qmp %s reply: %w", command, ctxErr(ctx, err)))
		}
		var resp struct {
			Event  string          `json:"event"`
			ID     *uint64         `json:"id"`
			Return json.RawMessage `json:"return"`
			Error  *QMPError       `json:"error"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			return c.fail(fmt.Errorf("qmp %s: reply %q is not JSON", command, truncate(line)))
		}
		// Events are not replies; a reply with another id answers a command
		// whose caller gave up (its context ended) on this connection.
		if resp.Event != "" || resp.ID == nil || *resp.ID != id {
			continue
		}
		if resp.Error != nil {
			resp.Error.Command = command
			return resp.Error
		}
		if out != nil && resp.Return != nil {
			if err := json.Unmarshal(resp.Return, out); err != nil {
				return fmt.Errorf("qmp %s: decode reply: %w", command, err)
			}
		}
		return nil
	}
}

// send writes one request, with oob as ancillary data when given.
func (c *QMPClient) send(b, oob []byte) error {
	if oob == nil {
		_, err := c.conn.Write(b)
		return err
	}
	uc, ok := c.conn.(*net.UnixConn)
	if !ok {
		return errors.New("descriptors can only be passed over a Unix socket")
	}
	n, _, err := uc.WriteMsgUnix(b, oob, nil)
	if err == nil && n < len(b) {
		// The descriptor went with the first part; the rest is plain data.
		_, err = c.conn.Write(b[n:])
	}
	return err
}

// fail marks the connection broken and closes it; the caller holds mu.
func (c *QMPClient) fail(err error) error {
	c.broken = err
	c.conn.Close()
	return err
}

// deadline makes ctx's end reach blocked reads and writes; the returned
// func must be called when the call is over. It acts only once ctx is done
// (rather than copying ctx's deadline onto the connection) so the I/O error
// it causes always finds ctx.Err set and is reported as ctx's error.
func (c *QMPClient) deadline(ctx context.Context) func() {
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(time.Now()) })
	return func() {
		stop()
		_ = c.conn.SetDeadline(time.Time{})
	}
}

// QueryStatus asks QEMU's run state.
func (c *QMPClient) QueryStatus(ctx context.Context) (Status, error) {
	var s Status
	err := c.Execute(ctx, "query-status", nil, &s)
	return s, err
}

// Migration is the reply of query-migrate: how the current (or last)
// migration stands.
type Migration struct {
	// Status is "none", "setup", "active", "completed", "failed",
	// "cancelling", "cancelled", ...
	Status string `json:"status"`
	// ErrorDesc says why a migration failed.
	ErrorDesc string `json:"error-desc"`
	RAM       struct {
		Transferred int64 `json:"transferred"`
		Total       int64 `json:"total"`
	} `json:"ram"`
}

// QueryMigrate asks how the current (or last) migration stands.
func (c *QMPClient) QueryMigrate(ctx context.Context) (Migration, error) {
	var m Migration
	err := c.Execute(ctx, "query-migrate", nil, &m)
	return m, err
}

// SystemPowerdown presses the guest's ACPI power button. The guest decides
// what to do; a guest that shuts down makes QEMU exit.
func (c *QMPClient) SystemPowerdown(ctx context.Context) error {
	return c.Execute(ctx, "system_powerdown", nil, nil)
}

// Stop pauses the guest's vCPUs.
func (c *QMPClient) Stop(ctx context.Context) error { return c.Execute(ctx, "stop", nil, nil) }

// Cont resumes the guest's vCPUs.
func (c *QMPClient) Cont(ctx context.Context) error { return c.Execute(ctx, "cont", nil, nil) }

// Quit ends QEMU at once, without asking the guest. QEMU may close the
// connection before its reply arrives; that counts as success.
func (c *QMPClient) Quit(ctx context.Context) error {
	err := c.Execute(ctx, "quit", nil, nil)
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return nil
	}
	return err
}

// Close closes the connection.
func (c *QMPClient) Close() error { return c.conn.Close() }

// ctxErr prefers the context's error over the I/O error it caused.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return err
}

func truncate(b []byte) string {
	const max = 200
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}
