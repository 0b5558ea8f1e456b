package daemon

import "github.com/banger-dev/banger/internal/lifecycle"

// Crash points name the steps of the VM lifecycle after which a test may
// kill the daemon (Options.CrashPoint); the lifecycle package defines them
// and says what each leaves behind. Crash tests refer to them by these names.
const (
	CrashCreateRecorded      = lifecycle.CrashCreateRecorded
	CrashCreateDiskReady     = lifecycle.CrashCreateDiskReady
	CrashBootStarting        = lifecycle.CrashBootStarting
	CrashBootDiskLocked      = lifecycle.CrashBootDiskLocked
	CrashBootDiskAttached    = lifecycle.CrashBootDiskAttached
	CrashBootNetworkAttached = lifecycle.CrashBootNetworkAttached
	CrashBootSpawned         = lifecycle.CrashBootSpawned
	CrashBootPIDRecorded     = lifecycle.CrashBootPIDRecorded
	CrashBootLaunched        = lifecycle.CrashBootLaunched
	CrashBootAgentReady      = lifecycle.CrashBootAgentReady
	CrashBootRunning         = lifecycle.CrashBootRunning
	CrashStopStopping        = lifecycle.CrashStopStopping
	CrashStopVMMGone         = lifecycle.CrashStopVMMGone
	CrashStopReleased        = lifecycle.CrashStopReleased
	CrashDeleteDeleting      = lifecycle.CrashDeleteDeleting
	CrashDeleteFilesRemoved  = lifecycle.CrashDeleteFilesRemoved
)

// CrashPoints lists every crash point, in lifecycle order.
func CrashPoints() []string { return lifecycle.CrashPoints() }
