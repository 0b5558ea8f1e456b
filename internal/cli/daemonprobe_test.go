package cli

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// TestProbeOutlastsADyingDaemon: a daemon killed a moment ago can still
// accept a connection and drop it (its last threads hold the socket after
// the process is a zombie). The next command used to fail with "the daemon
// stopped before it answered" instead of starting a new daemon; the probe
// now waits for the socket to answer or refuse.
func TestProbeOutlastsADyingDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	// The dying daemon: it drops the first two connections unanswered.
	dropped := make(chan struct{})
	go func() {
		for range 2 {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = conn.Close()
		}
		close(dropped)
		// The new daemon takes over the socket and answers.
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_ = json.NewEncoder(w).Encode(map[string]any{"result": api.DaemonInfo{PID: 4242}})
		})}
		_ = srv.Serve(ln)
	}()
	defer ln.Close()

	c := api.NewClient(sock)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := probeDaemon(ctx, c)
	if err != nil {
		t.Fatalf("probe failed although the socket answered after two dropped connections: %v", err)
	}
	<-dropped
	if info.PID != 4242 {
		t.Errorf("probe answered pid %d, want the new daemon's 4242", info.PID)
	}
}

// TestProbeGivesUpOnADaemonThatKeepsHangingUp: a socket that drops every
// connection is reported after about a second, not waited on forever.
func TestProbeGivesUpOnADaemonThatKeepsHangingUp(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = conn.Close()
		}
	}()
	c := api.NewClient(sock)
	defer c.Close()
	start := time.Now()
	_, err = probeDaemon(context.Background(), c)
	if !errors.Is(err, api.ErrDaemonStopped) {
		t.Fatalf("err = %v, want ErrDaemonStopped", err)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("probe waited %s", waited)
	}
}
