package api

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serveUpgrade runs a server whose "test.shout" method upgrades and then
// upper-cases every line it reads, and refuses the text "no".
func serveUpgrade(t *testing.T) (*Client, string) {
	t.Helper()
	srv := NewServer(slog.New(slog.DiscardHandler), time.Now)
	HandleUpgrade(srv, "test.shout", "test-proto", func(ctx context.Context, req echoReq) (Relay, error) {
		if req.Text == "no" {
			return nil, Errorf(CodeFailedPrecondition, "the VM is not running").WithHint("start it")
		}
		return func(conn io.ReadWriteCloser) {
			defer conn.Close()
			sc := bufio.NewScanner(conn)
			for sc.Scan() {
				if _, err := io.WriteString(conn, req.Text+":"+strings.ToUpper(sc.Text())+"\n"); err != nil {
					return
				}
			}
		}, nil
	})
	dir, err := os.MkdirTemp("", "bgraw")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: time.Second}
	go func() { _ = hs.Serve(ln) }()
	c := NewClient(sock)
	t.Cleanup(func() { c.Close(); _ = hs.Close(); _ = os.RemoveAll(dir) })
	if got := srv.Methods(); len(got) != 1 || got[0] != "test.shout" {
		t.Errorf("Methods() = %v, want the raw method listed", got)
	}
	return c, sock
}

func TestUpgradeCarriesABidirectionalStream(t *testing.T) {
	c, _ := serveUpgrade(t)
	conn, err := c.upgrade(context.Background(), "test.shout", "test-proto", echoReq{Text: "x"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	for _, line := range []string{"hello", "again"} {
		if _, err := io.WriteString(conn, line+"\n"); err != nil {
			t.Fatal(err)
		}
		got, err := r.ReadString('\n')
		if err != nil || got != "x:"+strings.ToUpper(line)+"\n" {
			t.Fatalf("got %q, %v", got, err)
		}
	}
}

func TestUpgradeRefusalIsAnAPIError(t *testing.T) {
	c, sock := serveUpgrade(t)
	_, err := c.upgrade(context.Background(), "test.shout", "test-proto", echoReq{Text: "no"})
	var ae *Error
	if !errors.As(err, &ae) || ae.Code != CodeFailedPrecondition || ae.Hint != "start it" {
		t.Fatalf("err = %#v, want the handler's coded error", err)
	}
	// A plain call (no Upgrade header) is told how to call it.
	err = c.Call(context.Background(), "test.shout", echoReq{Text: "x"}, nil, nil)
	if !IsCode(err, CodeInvalidArgument) || !strings.Contains(err.Error(), "Upgrade: test-proto") {
		t.Fatalf("plain call: %v", err)
	}
	// Unknown fields are refused as for every method.
	_, err = c.upgrade(context.Background(), "test.shout", "test-proto", map[string]string{"txet": "x"})
	if !IsCode(err, CodeInvalidArgument) || !strings.Contains(err.Error(), "malformed test.shout request") {
		t.Fatalf("bad body: %v", err)
	}
	if _, err := NewClient(sock+".missing").upgrade(context.Background(), "test.shout", "test-proto", nil); !errors.Is(err, ErrDaemonUnreachable) {
		t.Fatalf("no daemon: %v", err)
	}
}
