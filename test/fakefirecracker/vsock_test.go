package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/agent"
)

var errNoReply = errors.New("connection closed without a reply")

// vsockConnect performs the host side of the hybrid-vsock handshake. It reads
// the "OK <port>" line byte by byte, as a real dialer must, so no byte of the
// relayed stream is consumed.
func vsockConnect(udsPath string, port uint32) (net.Conn, string, error) {
	conn, err := net.Dial("unix", udsPath)
	if err != nil {
		return nil, "", err
	}
	if _, err := fmt.Fprintf(conn, "CONNECT %d\n", port); err != nil {
		conn.Close()
		return nil, "", err
	}
	line, err := readOKLine(conn)
	if err != nil {
		conn.Close()
		return nil, "", err
	}
	return conn, line, nil
}

func readOKLine(conn net.Conn) (string, error) {
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer func() { _ = conn.SetReadDeadline(time.Time{}) }()
	var line []byte
	b := make([]byte, 1)
	for {
		if _, err := conn.Read(b); err != nil {
			if errors.Is(err, io.EOF) && len(line) == 0 {
				return "", errNoReply
			}
			return "", err
		}
		if b[0] == '\n' {
			return string(line), nil
		}
		line = append(line, b[0])
	}
}

func TestHybridVsockReachesAgent(t *testing.T) {
	f := startFake(t, fakeOptions{withAgent: true})
	f.configureMinimal("banger.agent_port=2000", true)
	f.start()
	f.waitConsole("vsock_2000.sock")

	conn, ok, err := vsockConnect(f.vsockPath(), 2000)
	if err != nil {
		t.Fatalf("CONNECT 2000: %v\nstderr:\n%s", err, f.stderr)
	}
	defer conn.Close()
	if ok != "OK 1073741824" {
		t.Errorf("handshake reply %q, want Firecracker's first host port", ok)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := agent.Health(ctx, conn)
	if err != nil {
		t.Fatalf("health through the fake's vsock: %v", err)
	}
	if info.AgentVersion != "dev" || info.Hostname == "" {
		t.Fatalf("health = %+v", info)
	}

	// A second connection gets the next host-side port.
	conn2, ok2, err := vsockConnect(f.vsockPath(), 2000)
	if err != nil {
		t.Fatal(err)
	}
	conn2.Close()
	if ok2 != "OK 1073741825" {
		t.Errorf("second handshake reply %q", ok2)
	}
}

// TestVsockDataRightAfterConnectIsNotLost sends the CONNECT line and the
// agent request in one write, before the OK arrives.
func TestVsockDataRightAfterConnectIsNotLost(t *testing.T) {
	f := startFake(t, fakeOptions{withAgent: true})
	f.configureMinimal("", true)
	f.start()
	f.waitConsole("listening on")

	conn, err := net.Dial("unix", f.vsockPath())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The agent's hello goes out in the same write as CONNECT: it must reach
	// the guest even though the fake has not answered OK yet.
	nonce := strings.Repeat("ab", 16)
	if _, err := io.WriteString(conn, "CONNECT 1024\nBANGER-AGENT/1 HELLO "+nonce+"\n"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	ok, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(ok, "OK ") {
		t.Fatalf("handshake: %q, %v", ok, err)
	}
	reply, err := r.ReadString('\n')
	if err != nil || reply != "BANGER-AGENT/1 READY "+nonce+"\n" {
		t.Fatalf("agent reply: %q, %v", reply, err)
	}
}

func TestVsockWithoutGuestListenerClosesWithoutReply(t *testing.T) {
	t.Run("no stand-in guest", func(t *testing.T) {
		f := startFake(t, fakeOptions{})
		f.configureMinimal("", true)
		f.start()
		f.waitConsole("no stand-in guest")
		if _, _, err := vsockConnect(f.vsockPath(), 1024); !errors.Is(err, errNoReply) {
			t.Fatalf("CONNECT with no guest: %v, want the connection closed without a reply", err)
		}
	})
	t.Run("nothing on that port", func(t *testing.T) {
		f := startFake(t, fakeOptions{withAgent: true})
		f.configureMinimal("", true)
		f.start()
		f.waitConsole("listening on")
		if _, _, err := vsockConnect(f.vsockPath(), 5555); !errors.Is(err, errNoReply) {
			t.Fatalf("CONNECT 5555: %v, want the connection closed without a reply", err)
		}
	})
	t.Run("malformed request", func(t *testing.T) {
		f := startFake(t, fakeOptions{withAgent: true})
		f.configureMinimal("", true)
		f.start()
		f.waitConsole("listening on")
		conn, err := net.Dial("unix", f.vsockPath())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "HELLO 1024\n"); err != nil {
			t.Fatal(err)
		}
		if _, err := readOKLine(conn); !errors.Is(err, errNoReply) {
			t.Fatalf("malformed CONNECT: %v, want the connection closed without a reply", err)
		}
	})
}

// TestVsockConnectBeforeStartWaits: the socket exists from PUT /vsock, but a
// connection is only answered once the VM runs.
func TestVsockConnectBeforeStartWaits(t *testing.T) {
	f := startFake(t, fakeOptions{withAgent: true})
	f.configureMinimal("", true)
	conn, err := net.Dial("unix", f.vsockPath())
	if err != nil {
		t.Fatalf("uds_path not listening after PUT /vsock: %v", err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "CONNECT 1024\n"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := conn.Read(make([]byte, 1)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("pre-boot CONNECT answered: n=%d err=%v", n, err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	f.start()
	// The queued connection is served once the VM starts; its guest port may
	// not be listening yet, so either answer is fine, but it must end.
	if _, err := readOKLine(conn); err != nil && !errors.Is(err, errNoReply) {
		t.Fatalf("queued CONNECT after start: %v", err)
	}
}
