package lifecycle

// Crash points name the steps of the VM lifecycle after which a test may
// kill the daemon (Ports.CrashPoint) to prove that the next daemon
// reconciles whatever the step left behind. The names are stable: crash
// tests refer to them, so a refactor keeps them on the equivalent step.
const (
	CrashCreateRecorded      = "create.recorded"       // the record exists (creating), no disk yet
	CrashCreateDiskReady     = "create.disk-ready"     // the disk is made, no boot yet
	CrashBootStarting        = "boot.starting"         // recorded starting, nothing acquired
	CrashBootDiskLocked      = "boot.disk-locked"      // the disk lock is taken
	CrashBootDiskAttached    = "boot.disk-attached"    // the overlay disk is attached (overlays only)
	CrashBootNetworkAttached = "boot.network-attached" // the tap is attached (networking only)
	CrashBootSpawned         = "boot.spawned"          // the VMM process exists, not yet recorded
	CrashBootPIDRecorded     = "boot.pid-recorded"     // the VMM's pid and start time are recorded, not configured
	CrashBootLaunched        = "boot.launched"         // the VMM is configured and the guest started
	CrashBootAgentReady      = "boot.agent-ready"      // the guest agent answered, guest setup not done
	CrashBootRunning         = "boot.running"          // recorded running, not yet supervised
	CrashStopStopping        = "stop.stopping"         // recorded stopping, the VMM not yet asked
	CrashStopVMMGone         = "stop.vmm-gone"         // the VMM exited, runtime not released
	CrashStopReleased        = "stop.released"         // runtime released, not yet recorded stopped
	CrashDeleteDeleting      = "delete.deleting"       // recorded deleting, files still there
	CrashDeleteFilesRemoved  = "delete.files-removed"  // files removed, the record still there

	CrashPausePaused          = "pause.paused"           // the VMM is paused, the VM still recorded running
	CrashSnapshotSaving       = "snapshot.saving"        // the snapshot is recorded saving, no file yet
	CrashSnapshotStateWritten = "snapshot.state-written" // memory and device state written, the VM paused, no disk copy
	CrashSnapshotFilesWritten = "snapshot.files-written" // every file written, the VM paused, not recorded ready
	CrashRollbackStopped      = "rollback.stopped"       // the VM's VMM is gone, its disk not yet replaced
	CrashRollbackDiskRestored = "rollback.disk-restored" // the VM's disk is the snapshot's, no VMM yet
	CrashForkRecorded         = "fork.recorded"          // the new VM is recorded (creating), no disk yet
	CrashForkDiskReady        = "fork.disk-ready"        // the new VM's disk is the snapshot's, no VMM yet
)
