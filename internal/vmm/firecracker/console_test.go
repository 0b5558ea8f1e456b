package firecracker

import (
	"testing"

	"github.com/banger-dev/banger/internal/vmm/vmmproc/logcaptest"
)

// TestLaunchCapsAFloodedConsole: a guest that floods its console (64 MiB
// here) leaves a serial log held to the driver's cap, with its newest
// output (the flood's end) last.
func TestLaunchCapsAFloodedConsole(t *testing.T) {
	const limit = 1 << 20
	d, _ := newFakeDriver(t, fakeEnv{mode: "flood-console"}, Config{ConsoleLogMax: limit})
	spec := testSpec(t)
	launch(t, d, spec)
	logcaptest.AwaitCapped(t, spec.SerialLogPath, limit, floodConsoleEnd)
}
