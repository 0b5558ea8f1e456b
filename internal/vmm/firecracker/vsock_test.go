package firecracker

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/vmm/vmmproc"
)

// fakeVsockMuxer plays Firecracker's host-side vsock muxer: it accepts on
// the UDS, reads "CONNECT <port>\n" and hands the rest to guest, which
// stands in for the guest side (answering OK or hanging up).
func fakeVsockMuxer(t *testing.T, guest func(port uint32, conn net.Conn, br *bufio.Reader)) string {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "v.sock")
	ln := listenUnix(t, path)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				br := bufio.NewReader(conn)
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				var port uint32
				if _, err := fmt.Sscanf(line, "CONNECT %d\n", &port); err != nil {
					t.Errorf("muxer got %q", line)
					return
				}
				guest(port, conn, br)
			}()
		}
	}()
	return path
}

func TestDialHybridVsockHandshake(t *testing.T) {
	uds := fakeVsockMuxer(t, func(port uint32, conn net.Conn, br *bufio.Reader) {
		if port != 52 {
			t.Errorf("port = %d, want 52", port)
		}
		_, _ = io.WriteString(conn, "OK 1073741824\n")
		_, _ = io.Copy(conn, br) // echo
	})
	conn, err := DialHybridVsock(context.Background(), uds, 52)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if hp := conn.(*VsockConn).HostPort(); hp != 1073741824 {
		t.Errorf("HostPort = %d", hp)
	}
	if _, err := io.WriteString(conn, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo = %q, %v", buf, err)
	}
}

func TestDialHybridVsockKeepsDataSentWithOK(t *testing.T) {
	uds := fakeVsockMuxer(t, func(_ uint32, conn net.Conn, _ *bufio.Reader) {
		// One write, so the OK line and the greeting arrive in one read.
		_, _ = io.WriteString(conn, "OK 7\nhello from guest")
		time.Sleep(100 * time.Millisecond)
	})
	conn, err := DialHybridVsock(context.Background(), uds, 1024)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != "hello from guest" {
		t.Fatalf("read %q, %v; want the greeting sent with OK", got, err)
	}
}

func TestDialHybridVsockNoGuestListener(t *testing.T) {
	uds := fakeVsockMuxer(t, func(uint32, net.Conn, *bufio.Reader) {
		// Firecracker closes the connection when the guest port has no listener.
	})
	_, err := DialHybridVsock(context.Background(), uds, 52)
	if !errors.Is(err, ErrGuestNotListening) {
		t.Fatalf("want ErrGuestNotListening, got %v", err)
	}
	if !strings.Contains(err.Error(), "port 52") {
		t.Errorf("error should name the port: %v", err)
	}
}

func TestDialHybridVsockBadAnswer(t *testing.T) {
	for _, answer := range []string{"NOPE\n", "OK x\n", strings.Repeat("O", 200)} {
		uds := fakeVsockMuxer(t, func(_ uint32, conn net.Conn, _ *bufio.Reader) {
			_, _ = io.WriteString(conn, answer)
		})
		if _, err := DialHybridVsock(context.Background(), uds, 52); err == nil || errors.Is(err, ErrGuestNotListening) {
			t.Errorf("answer %.20q: want a handshake error, got %v", answer, err)
		}
	}
}

func TestDialHybridVsockContextTimeout(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	uds := fakeVsockMuxer(t, func(uint32, net.Conn, *bufio.Reader) { <-release })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := DialHybridVsock(ctx, uds, 52)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want DeadlineExceeded, got %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("dial took %v despite a 100ms context", d)
	}
}

func TestDialHybridVsockNoSocket(t *testing.T) {
	_, err := DialHybridVsock(context.Background(), filepath.Join(shortTempDir(t), "absent"), 52)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("want a not-exist dial error, got %v", err)
	}
}

// TestDialHybridVsockLargeTransfer pushes 32 MiB to an echoing guest and
// checks the same bytes come back, exercising both directions and the
// hand-over from the handshake buffer to the raw connection.
func TestDialHybridVsockLargeTransfer(t *testing.T) {
	const size = 32 << 20
	uds := fakeVsockMuxer(t, func(_ uint32, conn net.Conn, br *bufio.Reader) {
		_, _ = io.WriteString(conn, "OK 9\n")
		_, _ = io.Copy(conn, br)
		_ = conn.(*net.UnixConn).CloseWrite()
	})
	conn, err := DialHybridVsock(context.Background(), uds, 52)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	src := rand.New(rand.NewChaCha8([32]byte{1}))
	sent := sha256.New()
	writeErr := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.MultiWriter(conn, sent), io.LimitReader(readerFunc(func(p []byte) (int, error) {
			for i := range p {
				p[i] = byte(src.Uint32())
			}
			return len(p), nil
		}), size))
		if err == nil {
			err = conn.(*VsockConn).CloseWrite()
		}
		writeErr <- err
	}()
	got := sha256.New()
	n, err := io.Copy(got, conn)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
	if n != size || !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
		t.Fatalf("received %d bytes, checksum match %v", n, bytes.Equal(got.Sum(nil), sent.Sum(nil)))
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func TestListenHybridVsockGuestInitiated(t *testing.T) {
	uds := filepath.Join(shortTempDir(t), "v.sock")
	ln, err := ListenHybridVsock(uds, 10789)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		// Firecracker connects to <uds>_<port> on the guest's behalf.
		c, err := net.Dial("unix", uds+"_10789")
		if err != nil {
			t.Error(err)
			return
		}
		if _, err := io.WriteString(c, "ready"); err != nil {
			t.Error(err)
		}
		c.Close()
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if b, _ := io.ReadAll(c); string(b) != "ready" {
		t.Fatalf("got %q", b)
	}
}

func TestListenHybridVsockReclaimsStaleSocket(t *testing.T) {
	uds := filepath.Join(shortTempDir(t), "v.sock")
	// A listener that died without unlinking leaves a socket file behind.
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: uds + "_52", Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close()

	ln, err := ListenHybridVsock(uds, 52)
	if err != nil {
		t.Fatalf("stale socket not reclaimed: %v", err)
	}
	ln.Close()
}

func TestListenHybridVsockRefusesLiveSocket(t *testing.T) {
	uds := filepath.Join(shortTempDir(t), "v.sock")
	listenUnix(t, uds+"_52")
	_, err := ListenHybridVsock(uds, 52)
	if !errors.Is(err, ErrSocketInUse) {
		t.Fatalf("want ErrSocketInUse, got %v", err)
	}
	if _, statErr := os.Stat(uds + "_52"); statErr != nil {
		t.Fatalf("live socket was removed: %v", statErr)
	}
}

func TestListenHybridVsockRefusesRegularFile(t *testing.T) {
	uds := filepath.Join(shortTempDir(t), "v.sock")
	if err := os.WriteFile(uds+"_52", []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenHybridVsock(uds, 52); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("want a not-a-socket refusal, got %v", err)
	}
}

// ListenHybridVsock listens for guest-initiated vsock connections to port,
// as a host service would (banger has none: its agent is dialled by the host):
// Firecracker forwards them to the Unix socket "<udsPath>_<port>". A socket
// file left by a dead process is removed; one that still accepts
// connections is left alone and reported.
func ListenHybridVsock(udsPath string, port uint32) (net.Listener, error) {
	path := fmt.Sprintf("%s_%d", udsPath, port)
	if err := vmmproc.ReclaimSocket(path); err != nil {
		return nil, fmt.Errorf("vsock listen %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("vsock listen %s: %w", path, err)
	}
	return ln, nil
}
