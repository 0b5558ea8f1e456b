package agent

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// servePty runs the agent on the slave side of a pty pair, which stands in
// for the guest's virtio-serial port (one byte stream, kept open for the
// agent's life), and returns the master side: the host's end.
func servePty(t *testing.T, srv *Server) *os.File {
	t.Helper()
	master, slave, err := pty.Open()
	if err != nil {
		t.Skipf("skipping: no pty: %v", err)
	}
	name := slave.Name()
	defer slave.Close()
	// Raw mode lives in the pair's one termios; setting it on the slave
	// (OpenChannel) covers the master too, so the first open must happen
	// before the host writes.
	first, err := OpenChannel(name)
	if err != nil {
		t.Fatal(err)
	}
	opens := 0
	open := func() (Channel, error) {
		if opens++; opens == 1 {
			return first, nil
		}
		return OpenChannel(name)
	}
	hostEnd := master
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeChannel(ctx, open) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeChannel: %v", err)
		}
		hostEnd.Close()
	})
	return hostEnd
}

func TestChannelOverPtyServesSessions(t *testing.T) {
	host := servePty(t, &Server{Version: "v-serial"})
	// Bytes left in the pipe by an earlier host are skipped.
	if _, err := host.Write([]byte("\x00\x01leftover yamux bytes BANGER-AGENT/1 junk\n")); err != nil {
		t.Fatal(err)
	}
	// The first host's connection can vanish without closing the port, as a
	// killed daemon's would.
	first := &channelConn{ch: host, r: host}
	start := time.Now()
	c, err := NewClient(testCtx(t), fileConn{host, first})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first hello after %s", time.Since(start))
	info, err := c.Health(testCtx(t))
	if err != nil || info.AgentVersion != "v-serial" {
		t.Fatalf("health over the channel: %+v %v", info, err)
	}
	var out bytes.Buffer
	st, err := c.Run(testCtx(t), ExecRequest{Argv: []string{"sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x; echo; echo err >&2"}}, nil, &out, &out)
	if err != nil || st.Code != 0 || out.Len() != 3000000+1+4 {
		t.Fatalf("exec over the channel: %+v %v (%d bytes)", st, err, out.Len())
	}

	// A new host takes the port over without the old one closing anything
	// (the daemon restarted): the agent drops the old session and answers.
	_ = first.Close()
	start = time.Now()
	c2, err := NewClient(testCtx(t), fileConn{host, nil})
	if err != nil {
		t.Fatalf("second host: %v", err)
	}
	defer func() { _ = c2.Close() }()
	t.Logf("takeover hello after %s", time.Since(start))
	if _, err := c2.Health(testCtx(t)); err != nil {
		t.Fatalf("health for the second host: %v", err)
	}
	out.Reset()
	if st, err := c2.Run(testCtx(t), ExecRequest{Argv: []string{"echo", "again"}}, nil, &out, &out); err != nil || st.Code != 0 || out.String() != "again\n" {
		t.Fatalf("exec for the second host: %+v %v %q", st, err, out.String())
	}
	// The first client's session is gone, not mixed up with the second.
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		// It may also just fail on use; either way it must not work.
		if _, err := c.Health(testCtx(t)); err == nil {
			t.Fatal("the displaced host's session still works")
		}
	}
}

func TestWaitForHelloIgnoresLookalikes(t *testing.T) {
	for _, junk := range []string{
		"BANGER-AGENT/1 HELLO 1234\n",
		"BANGER-AGENT/1 HELLO " + strings.Repeat("g", nonceLen) + "\n",
		"BANGER-AGENT/1 READY " + strings.Repeat("a", nonceLen) + "\n",
	} {
		if _, ok := parseHello([]byte(junk)); ok {
			t.Errorf("parseHello accepted %q", junk)
		}
	}
	if n, ok := parseHello([]byte("BANGER-AGENT/1 HELLO " + strings.Repeat("ab", nonceLen/2) + "\n")); !ok || len(n) != nonceLen {
		t.Error("parseHello refused a good hello")
	}
}

func TestResolveSerialPortThroughSysfs(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	for port, name := range map[string]string{"vport0p1": "console-ish", "vport0p2": "banger"} {
		writeFile(t, filepath.Join(sys, port, "name"), name+"\n", 0o644)
		writeFile(t, filepath.Join(dev, port), "", 0o600)
	}
	if got := resolveSerialPort("/dev/virtio-ports/banger", sys, dev); got != filepath.Join(dev, "vport0p2") {
		t.Fatalf("resolved to %s", got)
	}
	if got := resolveSerialPort("/dev/virtio-ports/other", sys, dev); got != "/dev/virtio-ports/other" {
		t.Fatalf("unknown port resolved to %s", got)
	}
	existing := filepath.Join(dev, "vport0p1")
	if got := resolveSerialPort(existing, sys, dev); got != existing {
		t.Fatalf("existing path changed to %s", got)
	}
}

// socketpairDevice is a fake virtio-serial port: every open makes a new
// socketpair, gives the agent one end and hands the test (the host) the
// other on hosts. Closing the host end is what a VMM going away does to the
// port: the agent's reads end with EOF, and only a new open reaches the next
// host.
type socketpairDevice struct {
	hosts chan net.Conn
	opens atomic.Int64
}

func (d *socketpairDevice) open() (Channel, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	d.opens.Add(1)
	guest := os.NewFile(uintptr(fds[0]), "fake-port")
	hostFile := os.NewFile(uintptr(fds[1]), "fake-port-host")
	host, err := net.FileConn(hostFile)
	hostFile.Close()
	if err != nil {
		guest.Close()
		return nil, err
	}
	select {
	case d.hosts <- host:
	default:
		// Nobody is listening for hosts: the port has no host behind it.
		host.Close()
	}
	return guest, nil
}

func (d *socketpairDevice) nextHost(t *testing.T) net.Conn {
	t.Helper()
	select {
	case h := <-d.hosts:
		t.Cleanup(func() { h.Close() })
		return h
	case <-time.After(10 * time.Second):
		t.Fatal("the agent never opened the channel again after its host end hung up")
		return nil
	}
}

func TestChannelReopensAfterHangUp(t *testing.T) {
	dev := &socketpairDevice{hosts: make(chan net.Conn)}
	srv := &Server{Version: "v-reopen"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeChannel(ctx, dev.open) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeChannel: %v", err)
		}
	})

	c, err := NewClient(testCtx(t), dev.nextHost(t))
	if err != nil {
		t.Fatal(err)
	}
	if info, err := c.Health(testCtx(t)); err != nil || info.AgentVersion != "v-reopen" {
		t.Fatalf("health from the first host: %+v %v", info, err)
	}
	// The VMM goes away (the VM is restored into a new one): the host end
	// closes under the live session.
	_ = c.Close()

	// For a while no host is behind the port (each open finds its host end
	// closed, reads EOF at once): the agent keeps trying at a calm pace
	// rather than spinning. A spinning agent opens thousands of times here.
	before := dev.opens.Load()
	time.Sleep(500 * time.Millisecond)
	if n := dev.opens.Load() - before; n > 50 {
		t.Errorf("the agent reopened a hung-up channel %d times in 0.5 s; it must back off", n)
	}

	// The new VMM's host connects: the agent, on a fresh open, answers it.
	c2, err := NewClient(testCtx(t), dev.nextHost(t))
	if err != nil {
		t.Fatalf("hello from the host after the hang-up: %v", err)
	}
	defer func() { _ = c2.Close() }()
	if info, err := c2.Health(testCtx(t)); err != nil || info.AgentVersion != "v-reopen" {
		t.Fatalf("health after the hang-up: %+v %v", info, err)
	}
}
