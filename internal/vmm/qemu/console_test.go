package qemu

import (
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/vmm/vmmproc/logcaptest"
)

// TestLaunchCapsAFloodedConsole: a guest that floods its serial console
// (64 MiB here) leaves a log held to the driver's cap, ending with its
// newest output.
func TestLaunchCapsAFloodedConsole(t *testing.T) {
	const limit = 1 << 20
	d := fakeDriver(t, "flood", Config{ConsoleLogMax: limit})
	spec := fakeSpec(t)
	launch(t, d, spec)

	// Until the flood has ended and the cap caught up; the guard only
	// keeps a broken cap from hanging the test.
	deadline := time.Now().Add(30 * time.Second)
	for {
		used, what := logcaptest.Use(t, spec.SerialLogPath)
		tail := logcaptest.Tail(t, spec.SerialLogPath, 200)
		if used <= limit && strings.HasSuffix(tail, floodConsoleEnd+"\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the serial log's %s is %d (cap %d) and it ends with %q", what, used, limit, tail)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
