package api

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDaemonDyingMidCallSaysSo: a daemon that goes away while a call runs
// (after streaming progress, or before any answer) gives ErrDaemonStopped,
// not a bare "unexpected EOF" (issue 14, item 10).
func TestDaemonDyingMidCallSaysSo(t *testing.T) {
	for _, stream := range []bool{true, false} {
		t.Run(map[bool]string{true: "stream", false: "plain"}[stream], func(t *testing.T) {
			srv := NewServer(slog.New(slog.DiscardHandler), time.Now)
			working := make(chan struct{})
			Handle(srv, "test.hang", func(ctx context.Context, _ struct{}, p Progress) (struct{}, error) {
				p(Event{Stage: "boot", Message: "starting"})
				close(working)
				<-ctx.Done()
				return struct{}{}, ctx.Err()
			})
			dir, err := os.MkdirTemp("", "bgapi")
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = os.RemoveAll(dir) }()
			ln, err := net.Listen("unix", filepath.Join(dir, "s.sock"))
			if err != nil {
				t.Fatal(err)
			}
			hs := &http.Server{Handler: srv, ReadHeaderTimeout: time.Second}
			go func() { _ = hs.Serve(ln) }()
			// The daemon dies: every connection is cut mid-response.
			go func() { <-working; _ = hs.Close() }()

			c := NewClient(filepath.Join(dir, "s.sock"))
			defer c.Close()
			var events []Event
			var onEvent func(Event)
			if stream {
				onEvent = func(e Event) { events = append(events, e) }
			}
			err = c.Call(context.Background(), "test.hang", nil, nil, onEvent)
			if !errors.Is(err, ErrDaemonStopped) {
				t.Fatalf("got %v, want ErrDaemonStopped", err)
			}
			if !strings.Contains(err.Error(), "the daemon stopped") || !strings.Contains(err.Error(), "test.hang") {
				t.Fatalf("error does not say the daemon stopped during which call: %v", err)
			}
			if stream && len(events) != 1 {
				t.Fatalf("progress before the hang-up was lost: %+v", events)
			}
		})
	}
}

// TestCanceledCallIsNotADaemonStop: the caller giving up is not reported as
// the daemon stopping.
func TestCanceledCallIsNotADaemonStop(t *testing.T) {
	srv := NewServer(slog.New(slog.DiscardHandler), time.Now)
	Handle(srv, "test.hang", func(ctx context.Context, _ struct{}, p Progress) (struct{}, error) {
		p(Event{Stage: "boot"})
		<-ctx.Done()
		return struct{}{}, ctx.Err()
	})
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: time.Second}
	go func() { _ = hs.Serve(ln) }()
	defer func() { _ = hs.Close() }()
	c := NewClient(sock)
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	err = c.Call(ctx, "test.hang", nil, nil, func(Event) { cancel() })
	if err == nil || errors.Is(err, ErrDaemonStopped) {
		t.Fatalf("canceled call: %v", err)
	}
}
