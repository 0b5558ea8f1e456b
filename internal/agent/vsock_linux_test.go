package agent

import (
	"errors"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestListenVsock checks what this machine can check without a hypervisor:
// the socket binds, reports its address, and Close wakes a blocked Accept with
// net.ErrClosed (which is how Server.Serve knows to return nil). Accepting a
// real connection needs a guest or the vsock_loopback transport.
func TestListenVsock(t *testing.T) {
	ln, err := ListenVsock(0x7a11)
	if errors.Is(err, unix.EAFNOSUPPORT) {
		t.Skip("skipping: kernel has no AF_VSOCK support")
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := ln.Addr().String(); got != "4294967295:31249" {
		t.Errorf("Addr = %q, want any-CID:31249", got)
	}

	accepted := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		accepted <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-accepted:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still blocked 5s after Close")
	}
}
