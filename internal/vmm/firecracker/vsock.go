package firecracker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/banger-dev/banger/internal/vmm/vmmproc"
)

// ErrGuestNotListening means Firecracker accepted the host connection but
// closed it without an OK: nothing in the guest listens on that vsock port
// (yet). Callers waiting for the guest agent retry on it.
var ErrGuestNotListening = errors.New("nothing in the guest listens on this vsock port")

// maxAckLine bounds the handshake answer; a real one is "OK 1073741824\n".
const maxAckLine = 64

// DialHybridVsock opens a stream to a guest vsock port through Firecracker's
// hybrid vsock: connect to udsPath, send "CONNECT <port>\n", and wait for
// "OK <host port>\n". ctx bounds the dial and the handshake only; the
// returned connection has no deadline.
func DialHybridVsock(ctx context.Context, udsPath string, port uint32) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", udsPath)
	if err != nil {
		return nil, fmt.Errorf("vsock %s port %d: dial: %w", udsPath, port, err)
	}
	vc, err := handshake(ctx, conn, port)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("vsock %s port %d: %w", udsPath, port, err)
	}
	return vc, nil
}

// handshake runs the CONNECT/OK exchange on conn, honouring ctx by
// expiring the connection's deadline when ctx ends.
func handshake(ctx context.Context, conn net.Conn, port uint32) (net.Conn, error) {
	// Expiring the deadline from ctx (rather than copying ctx's deadline
	// onto conn) guarantees ctx.Err() is set whenever the read was cut short.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })

	br := bufio.NewReader(conn)
	hostPort, err := exchange(conn, br, port)
	if !stop() || ctx.Err() != nil {
		// ctx ended during the handshake: whatever the read returned, the
		// caller's deadline is the reason.
		return nil, fmt.Errorf("handshake: %w", context.Cause(ctx))
	}
	if err != nil {
		return nil, err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("clear handshake deadline: %w", err)
	}
	return &VsockConn{Conn: conn, r: br, hostPort: hostPort}, nil
}

func exchange(conn net.Conn, br *bufio.Reader, port uint32) (uint32, error) {
	if _, err := fmt.Fprintf(conn, "CONNECT %d\n", port); err != nil {
		return 0, fmt.Errorf("send CONNECT: %w", err)
	}
	line, err := readAckLine(br)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return 0, fmt.Errorf("connection closed before OK: %w", ErrGuestNotListening)
		}
		return 0, fmt.Errorf("read OK: %w", err)
	}
	rest, ok := strings.CutPrefix(line, "OK ")
	if !ok {
		return 0, fmt.Errorf("unexpected handshake answer %q, want \"OK <port>\"", line)
	}
	hostPort, err := strconv.ParseUint(rest, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("unexpected handshake answer %q: %w", line, err)
	}
	return uint32(hostPort), nil
}

// readAckLine reads one '\n'-terminated line of at most maxAckLine bytes
// without consuming anything after it: bytes the guest sent right after the
// OK stay in br for the caller.
func readAckLine(br *bufio.Reader) (string, error) {
	var line []byte
	for len(line) <= maxAckLine {
		b, err := br.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) && len(line) > 0 {
				return "", fmt.Errorf("truncated handshake answer %q: %w", line, io.ErrUnexpectedEOF)
			}
			return "", err
		}
		if b == '\n' {
			return string(line), nil
		}
		line = append(line, b)
	}
	return "", fmt.Errorf("handshake answer longer than %d bytes: %q…", maxAckLine, line)
}

// VsockConn is a connected hybrid-vsock stream. Reads first drain what the
// handshake reader buffered, so no guest data is lost.
type VsockConn struct {
	net.Conn
	r        *bufio.Reader
	hostPort uint32
}

// Read reads guest data, starting with bytes buffered during the handshake.
// bufio.Reader passes large reads straight through once its buffer is empty.
func (c *VsockConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// HostPort is the host-side port Firecracker assigned (from "OK <port>").
func (c *VsockConn) HostPort() uint32 { return c.hostPort }

// CloseWrite half-closes the stream so the guest reads EOF while replies can
// still arrive.
func (c *VsockConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("vsock: CloseWrite on %T: %w", c.Conn, errors.ErrUnsupported)
}

// ErrSocketInUse means a live process answers on a socket path we were
// about to take.
var ErrSocketInUse = vmmproc.ErrSocketInUse
