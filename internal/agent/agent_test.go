package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startServer runs srv on a unix socket in a temp dir and stops it (waiting
// for Serve to return) when the test ends.
func startServer(t *testing.T, srv *Server) string {
	t.Helper()
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

func dial(t *testing.T, path string) net.Conn {
	t.Helper()
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// rawExchange sends line as-is and returns the decoded reply, for requests the
// typed client cannot produce.
func rawExchange(t *testing.T, path, line string) Response {
	t.Helper()
	conn := dial(t, path)
	if _, err := conn.Write([]byte(line)); err != nil {
		t.Fatal(err)
	}
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("read reply to %q: %v", line, err)
	}
	var resp Response
	if err := json.Unmarshal([]byte(reply), &resp); err != nil {
		t.Fatalf("reply %q: %v", reply, err)
	}
	return resp
}

func TestHealthRoundTrip(t *testing.T) {
	path := startServer(t, &Server{
		Version:  "v9.9.9",
		Hostname: func() (string, error) { return "dev", nil },
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	info, err := Health(ctx, dial(t, path))
	if err != nil {
		t.Fatal(err)
	}
	want := HealthInfo{AgentVersion: "v9.9.9", Hostname: "dev"}
	if info != want {
		t.Fatalf("Health = %+v, want %+v", info, want)
	}
}

func TestHealthWireFormat(t *testing.T) {
	path := startServer(t, &Server{Version: "v1", Hostname: func() (string, error) { return "h", nil }})
	conn := dial(t, path)
	if _, err := conn.Write([]byte(`{"op":"health"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"ok":true,"agent_version":"v1","hostname":"h"}` + "\n"; reply != want {
		t.Fatalf("reply = %q, want %q", reply, want)
	}
}

func TestRequestErrors(t *testing.T) {
	path := startServer(t, &Server{})
	tests := []struct {
		name, line, wantErr string
	}{
		{"unknown op", `{"op":"x"}` + "\n", `unknown op "x"`},
		{"missing op", `{}` + "\n", `unknown op ""`},
		{"not json", "hello\n", "malformed request"},
		{"no newline then close", "", "read request"},
		{"too long", strings.Repeat("a", maxLine+10) + "\n", "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var resp Response
			if tt.line == "" {
				conn := dial(t, path)
				conn.(*net.UnixConn).CloseWrite()
				reply, err := bufio.NewReader(conn).ReadString('\n')
				if err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal([]byte(reply), &resp); err != nil {
					t.Fatal(err)
				}
			} else {
				resp = rawExchange(t, path, tt.line)
			}
			if resp.OK || !strings.Contains(resp.Error, tt.wantErr) {
				t.Fatalf("reply = %+v, want ok=false with error containing %q", resp, tt.wantErr)
			}
		})
	}
	// The server must still answer after all of the above.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := Health(ctx, dial(t, path)); err != nil {
		t.Fatalf("health after bad requests: %v", err)
	}
}

func TestHealthReportsRemoteError(t *testing.T) {
	path := startServer(t, &Server{Hostname: func() (string, error) { return "", errors.New("no uts") }})
	_, err := Health(context.Background(), dial(t, path))
	var remote *RemoteError
	if !errors.As(err, &remote) || !strings.Contains(remote.Message, "no uts") {
		t.Fatalf("err = %v, want *RemoteError mentioning the hostname failure", err)
	}
}

func TestHealthHonoursContext(t *testing.T) {
	// A peer that accepts and never answers: Health must give up when ctx does.
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		_, _ = bufio.NewReader(server).ReadString('\n')
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := Health(ctx, client)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}

	client2, server2 := net.Pipe()
	defer server2.Close()
	ctx2, cancel2 := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel2)
	if _, err := Health(ctx2, client2); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestHealthRejectsGarbledReply(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		r := bufio.NewReader(server)
		_, _ = r.ReadString('\n')
		_, _ = server.Write([]byte("not json\n"))
	}()
	_, err := Health(context.Background(), client)
	var remote *RemoteError
	if err == nil || errors.As(err, &remote) || !strings.Contains(err.Error(), "decode reply") {
		t.Fatalf("err = %v, want a transport (decode) error", err)
	}
}

func TestPortFromBootArgs(t *testing.T) {
	tests := []struct {
		cmdline string
		want    uint32
		wantErr bool
	}{
		{"console=ttyS0 panic=-1", DefaultPort, false},
		{"", DefaultPort, false},
		{"console=ttyS0 banger.agent_port=5000 quiet", 5000, false},
		{"banger.agent_port=abc", 0, true},
		{"banger.agent_port=0", 0, true},
		{"xbanger.agent_port=7", DefaultPort, false},
	}
	for _, tt := range tests {
		got, err := PortFromBootArgs(tt.cmdline)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("PortFromBootArgs(%q) = %d, %v; want %d, err=%v", tt.cmdline, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestListenRejectsBadAddresses(t *testing.T) {
	for _, addr := range []string{"", "vsock", "vsock:", "vsock:x", "tcp:1", "/tmp/sock"} {
		if ln, err := Listen(addr); err == nil {
			ln.Close()
			t.Errorf("Listen(%q) succeeded, want error", addr)
		}
	}
}

// TestServeShutdownDoesNotWaitForIdleClients: a host that connected but never
// sent a request must not delay the agent's exit by the request timeout.
func TestServeShutdownDoesNotWaitForIdleClients(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- (&Server{}).Serve(ln) }()

	dial(t, path) // connects and never sends a request
	// Accept is in order, so once this answers the idle one is in flight.
	if _, err := Health(context.Background(), dial(t, path)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ln.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v, want nil", err)
		}
		if waited := time.Since(start); waited > shutdownGrace+2*time.Second {
			t.Fatalf("Serve took %s to return", waited)
		}
	case <-time.After(shutdownGrace + 5*time.Second):
		t.Fatal("Serve still waiting for an idle client after the shutdown grace")
	}
}
