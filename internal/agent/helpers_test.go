package agent

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// startServer runs srv on a unix socket in a temp dir and stops it (waiting
// for Serve to return) when the test ends.
func startServer(t testing.TB, srv *Server) string {
	t.Helper()
	if srv.Power == nil {
		srv.Power = func(string) error { return nil }
	}
	path := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ln.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve returned %v after Close, want nil", err)
		}
	})
	return path
}

func dial(t testing.TB, path string) net.Conn {
	t.Helper()
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// newClient opens a session to the agent at path.
func newClient(t testing.TB, path string) *Client {
	t.Helper()
	c, err := NewClient(testCtx(t), dial(t, path))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fileConn makes an *os.File (a pty master) usable where a net.Conn is
// expected, as QEMU's unix socket for a virtio-serial port would be. With
// via set, I/O goes through it, so the test can cut this host off without
// closing the file.
type fileConn struct {
	*os.File
	via *channelConn
}

func (c fileConn) Read(p []byte) (int, error) {
	if c.via != nil {
		return c.via.Read(p)
	}
	return c.File.Read(p)
}

func (c fileConn) Write(p []byte) (int, error) {
	if c.via != nil {
		return c.via.Write(p)
	}
	return c.File.Write(p)
}

func (c fileConn) Close() error {
	if c.via != nil {
		return c.via.Close()
	}
	return c.File.Close()
}

func (fileConn) LocalAddr() net.Addr  { return fakeAddr{} }
func (fileConn) RemoteAddr() net.Addr { return fakeAddr{} }

type fakeAddr struct{}

func (fakeAddr) Network() string { return "pty" }
func (fakeAddr) String() string  { return "pty" }

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root")
	}
}
