package portforward_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/network/nstest"
	"github.com/banger-dev/banger/internal/network/portforward"
)

func TestParseSpec(t *testing.T) {
	good := map[string]string{
		"8080:80":           "127.0.0.1:8080:80",
		"localhost:2222:22": "127.0.0.1:2222:22",
		"0.0.0.0:8080:80":   "0.0.0.0:8080:80",
		"65535:1":           "127.0.0.1:65535:1",
	}
	for in, want := range good {
		s, err := portforward.ParseSpec(in)
		if err != nil || s.String() != want {
			t.Errorf("ParseSpec(%q) = %v, %v; want %s", in, s, err, want)
		}
	}
	for _, in := range []string{"", "80", "0:80", "80:0", "65536:80", "80:-1", "+80:80", "a:80", "::1:80:80", "1.2.3:80:80", "x:1:2:3", "80:80 "} {
		if s, err := portforward.ParseSpec(in); err == nil {
			t.Errorf("ParseSpec(%q) = %v, want an error", in, s)
		}
	}
}

// TestForwarder forwards loopback ports of the test's namespace to TCP
// servers in a guest namespace reached over a veth pair.
func TestForwarder(t *testing.T) {
	t.Parallel()
	if nstest.Sandbox(t) {
		return
	}
	guest := nstest.NewNS(t)
	nstest.Link(t, guest, nstest.LinkConfig{HostName: "bgt-pf", HostAddr: netip.MustParsePrefix("10.200.0.1/24"), GuestAddr: netip.MustParsePrefix("10.200.0.2/24")})
	echo := serve(t, guest, "10.200.0.2:80", func(c net.Conn) {
		_, _ = io.Copy(c, c) // echo until the client half-closes
		_ = c.(*net.TCPConn).CloseWrite()
	})
	hold := serve(t, guest, "10.200.0.2:81", func(c net.Conn) {
		_, _ = io.WriteString(c, "hi\n")
		_, _ = io.Copy(io.Discard, c) // until the proxy goes away
	})

	fwd, err := portforward.Start(netip.MustParseAddrPort("127.0.0.1:0"), echo, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fwd.Stop() }()
	if fwd.Addr().Port() == 0 || fwd.Target() != echo {
		t.Errorf("Addr = %v, Target = %v", fwd.Addr(), fwd.Target())
	}

	// Many clients at once, each sending 1 MiB and half-closing: each must
	// get exactly its own bytes back.
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			payload := make([]byte, 1<<20)
			_, _ = rand.Read(payload)
			c, err := net.Dial("tcp", fwd.Addr().String())
			if err != nil {
				t.Error(err)
				return
			}
			defer func() { _ = c.Close() }()
			go func() {
				_, _ = c.Write(payload)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, payload) {
				t.Errorf("echo through the forward: %d of %d bytes back, equal=%v, err %v", len(got), len(payload), bytes.Equal(got, payload), err)
			}
		})
	}
	wg.Wait()

	if _, err := portforward.Start(netip.AddrPort{}, echo, nil); err == nil {
		t.Error("Start without a listen address succeeded; it would listen on every interface")
	}

	// The host port is taken now.
	if _, err := portforward.Start(fwd.Addr(), echo, nil); err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Errorf("second forward on %s: %v, want 'already in use'", fwd.Addr(), err)
	}

	// Nothing listens on the guest port: the client is closed promptly.
	dead, err := portforward.Start(netip.MustParseAddrPort("127.0.0.1:0"), netip.MustParseAddrPort("10.200.0.2:99"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = dead.Stop() }()
	c, err := net.Dial("tcp", dead.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read through a forward to a closed guest port: %d, %v; want EOF", n, err)
	}
	_ = c.Close()

	// Stop closes live connections and the listener.
	hf, err := portforward.Start(netip.MustParseAddrPort("127.0.0.1:0"), hold, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err = net.Dial("tcp", hf.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	if line, err := r.ReadString('\n'); err != nil || line != "hi\n" {
		t.Fatalf("greeting through the forward: %q, %v", line, err)
	}
	done := make(chan error, 1)
	go func() { done <- hf.Stop() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Stop: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Stop hung with a connection open")
	}
	if _, err := r.ReadString('\n'); err == nil {
		t.Error("connection still open after Stop")
	}
	if c2, err := net.DialTimeout("tcp", hf.Addr().String(), time.Second); err == nil {
		_ = c2.Close()
		t.Error("listener still accepting after Stop")
	}
	if err := hf.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// serve runs handle for every connection to addr inside ns.
func serve(t *testing.T, ns *nstest.NS, addr string, handle func(net.Conn)) netip.AddrPort {
	t.Helper()
	l, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				handle(c)
			}()
		}
	}()
	return netip.MustParseAddrPort(addr)
}
