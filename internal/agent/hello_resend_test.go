package agent

import (
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
