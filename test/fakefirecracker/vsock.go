package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Firecracker's hybrid vsock, host side. The host connects to uds_path and
// writes "CONNECT <port>\n"; Firecracker forwards the connection to that guest
// vsock port and, once the guest accepts, answers "OK <host-side port>\n" and
// relays bytes both ways. If nothing in the guest listens, the guest resets
// the connection and Firecracker closes the host socket without a reply.
//
// In the fake the guest's vsock port N is the unix socket
// <guestdir>/vsock_N.sock, where the stand-in guest listens. Guest-initiated
// connections need no proxy: by Firecracker's contract they arrive on the
// host's own listener at <uds_path>_<port>, so the stand-in guest dials that
// path directly (it learns uds_path from BANGER_FAKE_VSOCK_HOST).

type vsockConfig struct {
	GuestCID uint32 `json:"guest_cid"`
	UDSPath  string `json:"uds_path"`
	VsockID  string `json:"vsock_id,omitempty"`
}

// maxConnectLine bounds the CONNECT request; Firecracker reads it byte by
// byte with a similarly small limit.
const maxConnectLine = 32

// firstLocalPort is where Firecracker starts numbering the host-side ports it
// reports in "OK <port>".
const firstLocalPort = 1 << 30

type hybridVsock struct {
	cfg    vsockConfig
	ln     *net.UnixListener
	stderr io.Writer

	mu       sync.Mutex
	serving  bool
	closed   bool
	conns    map[net.Conn]struct{}
	nextPort uint32
	wg       sync.WaitGroup
}

// bindVsock creates uds_path and listens on it. Like Firecracker, it fails
// if the path exists, and it leaves the socket file behind when the process
// exits: whoever launches the VMM must remove a stale one first.
func bindVsock(cfg vsockConfig, stderr io.Writer) (*hybridVsock, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.UDSPath, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	return &hybridVsock{
		cfg:      cfg,
		ln:       ln,
		stderr:   stderr,
		conns:    map[net.Conn]struct{}{},
		nextPort: firstLocalPort,
	}, nil
}

// serve starts accepting host connections, forwarding them to guest ports
// under guestDir. Called at InstanceStart; before that, connections wait in
// the backlog as they would against a VM that is not running yet.
func (h *hybridVsock) serve(guestDir string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.serving || h.closed {
		return
	}
	h.serving = true
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			conn, err := h.ln.AcceptUnix()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					fmt.Fprintf(h.stderr, "fake-firecracker: vsock accept: %v\n", err)
				}
				return
			}
			if !h.track(conn) {
				return
			}
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				defer h.untrack(conn)
				h.forward(conn, guestDir)
			}()
		}
	}()
}

// forward performs the CONNECT handshake on one host connection and relays it.
func (h *hybridVsock) forward(host *net.UnixConn, guestDir string) {
	defer host.Close()
	port, err := readConnect(host)
	if err != nil {
		fmt.Fprintf(h.stderr, "fake-firecracker: vsock: %v\n", err)
		return
	}
	conn, err := net.Dial("unix", filepath.Join(guestDir, fmt.Sprintf("vsock_%d.sock", port)))
	if err != nil {
		// Nothing listens on that guest port: close without a reply.
		return
	}
	guestConn := conn.(*net.UnixConn)
	if !h.track(guestConn) {
		guestConn.Close()
		return
	}
	defer h.untrack(guestConn)
	defer guestConn.Close()

	if _, err := fmt.Fprintf(host, "OK %d\n", h.allocPort()); err != nil {
		return
	}
	relay(host, guestConn)
}

// readConnect reads "CONNECT <port>\n" one byte at a time, so that anything
// the host sends right after the newline stays in the socket for the relay.
func readConnect(conn net.Conn) (uint32, error) {
	var line []byte
	b := make([]byte, 1)
	for len(line) < maxConnectLine {
		if _, err := io.ReadFull(conn, b); err != nil {
			return 0, fmt.Errorf("read CONNECT request: %w", err)
		}
		if b[0] == '\n' {
			return parseConnect(string(line))
		}
		line = append(line, b[0])
	}
	return 0, fmt.Errorf("CONNECT request longer than %d bytes", maxConnectLine)
}

func parseConnect(line string) (uint32, error) {
	arg, ok := strings.CutPrefix(line, "CONNECT ")
	if !ok {
		return 0, fmt.Errorf("invalid port request %q", line)
	}
	port, err := strconv.ParseUint(strings.TrimSpace(arg), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid port in request %q", line)
	}
	return uint32(port), nil
}

// relay copies both ways until both directions end. A clean EOF is passed on
// as a half-close, as vsock passes on a shutdown; an error ends both.
func relay(a, b *net.UnixConn) {
	var wg sync.WaitGroup
	pipe := func(dst, src *net.UnixConn) {
		defer wg.Done()
		if _, err := io.Copy(dst, src); err != nil {
			a.Close()
			b.Close()
			return
		}
		_ = dst.CloseWrite()
	}
	wg.Add(2)
	go pipe(b, a)
	go pipe(a, b)
	wg.Wait()
}

func (h *hybridVsock) allocPort() uint32 {
	h.mu.Lock()
	defer h.mu.Unlock()
	port := h.nextPort
	h.nextPort++
	return port
}

func (h *hybridVsock) track(c net.Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		c.Close()
		return false
	}
	h.conns[c] = struct{}{}
	return true
}

func (h *hybridVsock) untrack(c net.Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.conns, c)
}

// close stops accepting, cuts every relayed connection and waits for the
// relays to finish. The socket file stays, as with Firecracker.
func (h *hybridVsock) close() {
	h.mu.Lock()
	h.closed = true
	h.ln.Close()
	for c := range h.conns {
		c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
}
