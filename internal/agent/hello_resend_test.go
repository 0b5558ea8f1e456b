package agent

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"testing"
	"time"
)

// TestALostHelloIsRepeatedBeforeTheAgentIsBack: on a serial port a host's
// first hello is often lost (the port drops it while the guest has it
// closed; an agent still in its previous session reads it as that
// session's bytes). An agent reopening its port is back after
// reopenFirstDelay, so the host's first repeats must come at least that
// often, or every such session waits a whole helloResend (100 ms, what
// warm creates paid); later ones settle at helloResend.
func TestALostHelloIsRepeatedBeforeTheAgentIsBack(t *testing.T) {
	var elapsed time.Duration
	for n := 0; elapsed < 4*reopenFirstDelay; n++ {
		d := helloResendDelay(n)
		if d > reopenFirstDelay {
			t.Fatalf("repeat %d of the hello comes %v after the previous one, after %v: longer than the agent's %v reopen delay", n, d, elapsed, reopenFirstDelay)
		}
		elapsed += d
	}
	if d := helloResendDelay(1000); d != helloResend {
		t.Errorf("a host still unanswered after 1000 repeats resends every %v, want %v", d, helloResend)
	}
}

// TestNoHelloAfterTheSessionStarts: the agent skips repeated hellos only
// before the session's first bytes. A repeat whose timer fired while READY
// arrived used to be written after clientHello returned, in the middle of
// the yamux stream ("yamux: Invalid protocol version: 66" in the agent,
// seen with 20 VMs starting at once). The agent here answers READY after
// about one resend interval, the host then writes a marker at once, and
// nothing may follow the marker.
func TestNoHelloAfterTheSessionStarts(t *testing.T) {
	for i := range 150 {
		host, guest := net.Pipe()
		errc := make(chan error, 1)
		go func() {
			defer guest.Close()
			br := bufio.NewReader(guest)
			line, err := br.ReadSlice('\n')
			if err != nil {
				errc <- err
				return
			}
			nonce, ok := parseHello(line)
			if !ok {
				errc <- fmt.Errorf("not a hello: %q", line)
				return
			}
			// Answer when a repeat is due, give or take.
			time.Sleep(helloFastResend - time.Duration(i%5)*time.Millisecond/2)
			go func() { _, _ = guest.Write([]byte(helloPrefix + readyWord + nonce + "\n")) }()
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					errc <- err
					return
				}
				if string(line) == "MARK\n" {
					break
				}
			}
			_ = guest.SetReadDeadline(time.Now().Add(3 * helloFastResend))
			if b, err := br.ReadByte(); err == nil {
				errc <- fmt.Errorf("byte %q arrived after the session's first bytes", b)
				return
			}
			errc <- nil
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := clientHello(ctx, host); err != nil {
			cancel()
			t.Fatalf("round %d: hello: %v", i, err)
		}
		cancel()
		if _, err := host.Write([]byte("MARK\n")); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		host.Close()
	}
}
