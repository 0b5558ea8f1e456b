package qemu

import (
	"testing"

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
	logcaptest.AwaitCapped(t, spec.SerialLogPath, limit, floodConsoleEnd)
}
