package main

import (
	"encoding/json"
	"fmt"
	"os"
	"syscall"
	"time"
)

const (
	sigStop = syscall.SIGSTOP
	sigCont = syscall.SIGCONT
)

// putAction runs InstanceStart, SendCtrlAltDel or FlushMetrics. The phase
// rule depends on the action, so it is checked here rather than in routes.
func (v *microVM) putAction(_ string, body []byte) (any, error) {
	var req struct {
		ActionType string `json:"action_type"`
	}
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	started := v.state != stateNotStarted
	switch req.ActionType {
	case "InstanceStart":
		if started {
			return nil, faultf(msgNotAfterBoot)
		}
		return v.instanceStart()
	case "SendCtrlAltDel":
		if !started {
			return nil, faultf(msgNotBeforeBoot)
		}
		return v.sendCtrlAltDel()
	case "FlushMetrics":
		if !started {
			return nil, faultf(msgNotBeforeBoot)
		}
		return v.flushMetrics()
	default:
		// The spec's enum already rejects anything else.
		return nil, notImplemented("PUT", "/actions "+req.ActionType)
	}
}

// sendCtrlAltDel is the guest's cue to shut down. The stand-in guest gets
// SIGTERM (delivered only once it runs again if the VM is paused, as a paused
// vCPU reads no keyboard); the fake exits when the guest does. Without a
// stand-in guest the VM "reboots" at once.
func (v *microVM) sendCtrlAltDel() (any, error) {
	if v.guest == nil {
		v.requestExit(0, "Ctrl-Alt-Del with no stand-in guest")
		return nil, nil
	}
	if err := v.guest.signal(syscall.SIGTERM); err != nil {
		return nil, faultf("Internal VMM error: %v", err)
	}
	return nil, nil
}

// flushMetrics writes one metrics line. Like Firecracker, flushing without a
// configured metrics file succeeds and writes nothing.
func (v *microVM) flushMetrics() (any, error) {
	if v.metrics == nil {
		return nil, nil
	}
	line, _ := json.Marshal(map[string]any{
		"utc_timestamp_ms": time.Now().UnixMilli(),
		"fake_firecracker": map[string]string{"note": "placeholder metrics from the fake Firecracker"},
	})
	if _, err := v.metrics.Write(append(line, '\n')); err != nil {
		return nil, faultf("Internal VMM error: Error writing metrics: %s", osError(err))
	}
	return nil, nil
}

// patchVMState pauses or resumes the vCPUs: SIGSTOP/SIGCONT to the guest.
func (v *microVM) patchVMState(_ string, body []byte) (any, error) {
	var req struct {
		State string `json:"state"`
	}
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	sig, next := sigCont, stateRunning
	if req.State == "Paused" {
		sig, next = sigStop, statePaused
	}
	if v.guest != nil {
		if err := v.guest.signal(sig); err != nil {
			return nil, faultf("Internal VMM error: %v", err)
		}
		if sig == sigStop {
			if err := v.guest.waitStopped(5 * time.Second); err != nil {
				return nil, faultf("Internal VMM error: %v", err)
			}
		}
	}
	v.state = next
	return nil, nil
}

// fakeSnapshot is the content of a snapshot_path written by the fake. It is
// not Firecracker's format; it records what was configured, for debugging.
type fakeSnapshot struct {
	Note       string        `json:"note"`
	VMMVersion string        `json:"vmm_version"`
	ID         string        `json:"id"`
	Boot       *bootSource   `json:"boot_source"`
	Machine    machineConfig `json:"machine_config"`
	Drives     []drive       `json:"drives"`
	Vsock      *vsockConfig  `json:"vsock,omitempty"`
}

// createSnapshot writes snapshot_path (a small JSON record) and mem_file_path
// (a sparse file of the guest's memory size, all zeros), like a real snapshot
// in size but not content. The VM must be paused, as with Firecracker.
func (v *microVM) createSnapshot(_ string, body []byte) (any, error) {
	var req struct {
		SnapshotPath string `json:"snapshot_path"`
		MemFilePath  string `json:"mem_file_path"`
		SnapshotType string `json:"snapshot_type"`
	}
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	if v.state != statePaused {
		// Approximated wording.
		return nil, faultf("Create snapshot error: Cannot save the microVM state: Operation not allowed: the microVM must be paused first.")
	}
	if req.SnapshotType == "Diff" && !v.machine.TrackDirtyPages {
		// Approximated wording.
		return nil, faultf("The requested operation is not supported: Diff snapshots are not allowed on uVMs with dirty page tracking disabled.")
	}
	snap := fakeSnapshot{
		Note:       "fake-firecracker snapshot placeholder; not loadable by Firecracker",
		VMMVersion: fcVersion, ID: v.id, Boot: v.boot, Machine: v.machine, Drives: v.drives,
	}
	if v.vsock != nil {
		snap.Vsock = &v.vsock.cfg
	}
	data, _ := json.MarshalIndent(snap, "", "  ")
	if err := os.WriteFile(req.SnapshotPath, append(data, '\n'), 0o600); err != nil {
		return nil, faultf("Create snapshot error: Cannot perform open on the snapshot backing file: %s: %s", req.SnapshotPath, osError(err))
	}
	if err := writeSparse(req.MemFilePath, int64(v.machine.MemSizeMiB)<<20); err != nil {
		return nil, faultf("Create snapshot error: Cannot perform open on the memory backing file: %s: %s", req.MemFilePath, osError(err))
	}
	return nil, nil
}

func writeSparse(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// loadSnapshot enforces Firecracker's rule that a snapshot cannot be loaded
// into a VM already configured for a fresh boot; restoring itself is not
// modelled.
func (v *microVM) loadSnapshot(_ string, body []byte) (any, error) {
	if v.bootPath {
		return nil, faultf("Load snapshot error: Loading a microVM snapshot not allowed after configuring boot-specific resources.")
	}
	return nil, notImplemented("PUT", fmt.Sprintf("/snapshot/load (%d-byte body)", len(body)))
}
