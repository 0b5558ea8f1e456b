package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

func TestHealthRoundTrip(t *testing.T) {
	path := startServer(t, &Server{
		Version:  "v9.9.9",
		Hostname: func() (string, error) { return "dev", nil },
	})
	info, err := Health(testCtx(t), dial(t, path))
	if err != nil {
		t.Fatal(err)
	}
	want := HealthInfo{AgentVersion: "v9.9.9", Hostname: "dev"}
	if info != want {
		t.Fatalf("Health = %+v, want %+v", info, want)
	}
}

func TestHealthReportsRemoteError(t *testing.T) {
	path := startServer(t, &Server{Hostname: func() (string, error) { return "", errors.New("no uts") }})
	_, err := Health(testCtx(t), dial(t, path))
	var remote *RemoteError
	if !errors.As(err, &remote) || !strings.Contains(remote.Message, "no uts") {
		t.Fatalf("err = %v, want *RemoteError mentioning the hostname failure", err)
	}
}

func TestHealthHonoursContext(t *testing.T) {
	// A peer that accepts and never answers the hello.
	client, server := net.Pipe()
	defer server.Close()
	go func() { _, _ = io.Copy(io.Discard, server) }()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := Health(ctx, client); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}

	client2, server2 := net.Pipe()
	defer server2.Close()
	go func() { _, _ = io.Copy(io.Discard, server2) }()
	ctx2, cancel2 := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel2)
	if _, err := Health(ctx2, client2); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestFrameRoundTripAndLimits(t *testing.T) {
	var buf bytes.Buffer
	fw := newFrameWriter(&buf)
	big := bytes.Repeat([]byte("x"), MaxFrame)
	for _, f := range []struct {
		typ     byte
		payload []byte
	}{{frameStdout, []byte("hello")}, {frameStdinEOF, nil}, {frameData, big}} {
		if err := fw.write(f.typ, f.payload); err != nil {
			t.Fatal(err)
		}
	}
	if err := fw.write(frameData, append(big, 'y')); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized write: %v, want ErrFrameTooLarge", err)
	}
	fr := newFrameReader(&buf)
	for _, want := range []struct {
		typ byte
		n   int
	}{{frameStdout, 5}, {frameStdinEOF, 0}, {frameData, MaxFrame}} {
		typ, payload, err := fr.next()
		if err != nil || typ != want.typ || len(payload) != want.n {
			t.Fatalf("next = %d, %d bytes, %v; want %d, %d bytes", typ, len(payload), err, want.typ, want.n)
		}
	}
	if _, _, err := fr.next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

func TestFrameReaderRejectsBadFrames(t *testing.T) {
	header := func(typ byte, n uint32) []byte {
		b := []byte{typ, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[1:], n)
		return b
	}
	tests := []struct {
		name    string
		input   []byte
		wantErr string
	}{
		{"type zero", header(0, 1), "unknown frame type 0"},
		{"type unknown", header(200, 1), "unknown frame type 200"},
		{"length over limit", header(frameData, MaxFrame+1), "frame longer than"},
		{"length 4 GiB", header(frameData, 0xffffffff), "frame longer than"},
		{"truncated header", []byte{frameData, 0, 0}, "unexpected EOF"},
		{"truncated payload", append(header(frameData, 10), "abc"...), "unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := newFrameReader(bytes.NewReader(tt.input)).next()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// TestHelloRefusesGarbage: a connection that does not start with a hello is
// refused with a reason, and the agent keeps serving.
func TestHelloRefusesGarbage(t *testing.T) {
	path := startServer(t, &Server{})
	for _, junk := range []string{"GET / HTTP/1.1\r\n\r\n", `{"op":"health"}` + "\n", "BANGER-AGENT/1 HELLO short\n", strings.Repeat("z", 10000)} {
		conn := dial(t, path)
		if _, err := conn.Write([]byte(junk)); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(conn).ReadString('\n')
		if !strings.HasPrefix(line, "BANGER-AGENT/1 ERROR") {
			t.Errorf("after %.20q: got %q, want an ERROR line", junk, line)
		}
	}
	if _, err := Health(testCtx(t), dial(t, path)); err != nil {
		t.Fatalf("health after garbage: %v", err)
	}
}

// TestGarbageSessionBytes: after a valid hello, bytes that are not yamux
// kill that session only.
func TestGarbageSessionBytes(t *testing.T) {
	path := startServer(t, &Server{})
	conn := dial(t, path)
	r, err := clientHello(testCtx(t), conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(bytes.Repeat([]byte{0xff, 0x00, 0x13}, 1000)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, r); err != nil {
		t.Fatalf("agent did not close the garbled session: %v", err)
	}
	if _, err := Health(testCtx(t), dial(t, path)); err != nil {
		t.Fatalf("health after a garbled session: %v", err)
	}
}

// TestGarbageStreamFrames: a stream with a bad first frame gets a refusal
// (or is dropped), and the same session goes on serving.
func TestGarbageStreamFrames(t *testing.T) {
	path := startServer(t, &Server{})
	c := newClient(t, path)
	header := func(typ byte, n uint32) []byte {
		b := []byte{typ, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[1:], n)
		return b
	}
	tests := []struct {
		name    string
		input   []byte
		wantErr string // "" when the only requirement is that nothing breaks
	}{
		{"not json", append(header(frameRequest, 5), "hello"...), "bad request"},
		{"wrong first frame", append(header(frameStdin, 2), "hi"...), "unexpected frame type"},
		{"unknown type", header(99, 0), "unknown frame type"},
		{"huge length", header(frameRequest, 1<<31), "frame longer than"},
		{"truncated", append(header(frameRequest, 100), `{"op":`...), ""},
		{"unknown op", append(header(frameRequest, 13), `{"op":"fly"}`+" "...), "unknown op"},
		{"exec without params", append(header(frameRequest, 13), `{"op":"exec"}`...), "without parameters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream, err := c.sess.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			defer stream.Close()
			if _, err := stream.Write(tt.input); err != nil {
				t.Fatal(err)
			}
			if tt.wantErr == "" {
				stream.Close()
				return
			}
			var reply Reply
			_ = stream.SetReadDeadline(time.Now().Add(5 * time.Second))
			if err := readFrameUnbuffered(stream, frameReply, &reply); err != nil {
				t.Fatal(err)
			}
			if reply.OK || !strings.Contains(reply.Error, tt.wantErr) {
				t.Fatalf("reply = %+v, want a refusal containing %q", reply, tt.wantErr)
			}
		})
	}
	if _, err := c.Health(testCtx(t)); err != nil {
		t.Fatalf("health on the same session after bad streams: %v", err)
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

// TestServeShutdownDoesNotWaitForIdleClients: a host that connected but
// never said hello, or holds an idle session, must not delay the agent's
// exit.
func TestServeShutdownDoesNotWaitForIdleClients(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- (&Server{}).Serve(ln) }()

	dial(t, path) // connects and never says hello
	c := newClient(t, path)
	if _, err := c.Health(testCtx(t)); err != nil {
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
		t.Fatal("Serve still waiting for idle clients after the shutdown grace")
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client session still open after the agent stopped")
	}
}

func TestPowerCallsHookAfterReplying(t *testing.T) {
	got := make(chan string, 1)
	path := startServer(t, &Server{Power: func(action string) error { got <- action; return nil }})
	c := newClient(t, path)
	if err := c.Power(testCtx(t), PowerReboot); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-got:
		if a != PowerReboot {
			t.Fatalf("power hook got %q", a)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("power hook not called")
	}
	err := c.Power(testCtx(t), "explode")
	var remote *RemoteError
	if !errors.As(err, &remote) || remote.Code != CodeInvalid {
		t.Fatalf("bad action: %v", err)
	}
}

func TestUnknownOpIsARemoteError(t *testing.T) {
	c := newClient(t, startServer(t, &Server{Version: "v1"}))
	_, err := c.call(testCtx(t), Request{Op: "teleport"})
	var remote *RemoteError
	if !errors.As(err, &remote) || remote.Code != CodeUnknownOp {
		t.Fatalf("err = %v, want a RemoteError with code %s", err, CodeUnknownOp)
	}
}

// TestYamuxConfigValid guards the tunables against yamux's own checks.
func TestYamuxConfigValid(t *testing.T) {
	if err := yamux.VerifyConfig(yamuxConfig(nil)); err != nil {
		t.Fatal(err)
	}
}
