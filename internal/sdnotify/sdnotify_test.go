package sdnotify

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listen opens a datagram socket as systemd does for NOTIFY_SOCKET.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func receive(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 256)
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("nothing arrived on the notify socket: %v", err)
	}
	return string(buf[:n])
}

func TestNotifySendsStateToPathSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	conn := listen(t, path)
	sent, err := Notify(path, Ready)
	if err != nil || !sent {
		t.Fatalf("Notify = %v, %v", sent, err)
	}
	if got := receive(t, conn); got != "READY=1" {
		t.Fatalf("systemd got %q, want READY=1", got)
	}
}

func TestNotifyAbstractSocket(t *testing.T) {
	name := "@banger-sdnotify-test-" + filepath.Base(t.TempDir())
	conn := listen(t, name)
	if sent, err := Notify(name, Stopping); err != nil || !sent {
		t.Fatalf("Notify = %v, %v", sent, err)
	}
	if got := receive(t, conn); got != "STOPPING=1" {
		t.Fatalf("systemd got %q", got)
	}
}

func TestNotifyWithoutSocketDoesNothing(t *testing.T) {
	if sent, err := Notify("", Ready); sent || err != nil {
		t.Fatalf("Notify(\"\") = %v, %v; want false, nil", sent, err)
	}
}

func TestNotifyRefusesRelativeNameAndMissingSocket(t *testing.T) {
	if _, err := Notify("relative/sock", Ready); err == nil || !strings.Contains(err.Error(), "neither a path") {
		t.Fatalf("relative name: %v", err)
	}
	if _, err := Notify(filepath.Join(t.TempDir(), "absent"), Ready); err == nil {
		t.Fatal("a socket nobody listens on: no error")
	}
}
