package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"
)

// Snapshots. The fake's state file is its own JSON (not Firecracker's
// format): what the VM was configured with, which is what a restore needs
// to bring the same devices back. The memory file is sparse, of the
// guest's memory size. A restore starts the stand-in guest afresh (a
// process cannot be frozen into a file), which is what banger can observe
// of a real restore: the agent answers again on the vsock, every
// connection open at snapshot time is gone (Firecracker resets the vsock
// device on restore; the guest's listeners survive).

// snapshotFormat marks a state file the fake wrote; anything else is
// refused as corrupt.
const snapshotFormat = "fake-firecracker-snapshot/1"

// Firecracker's fault texts for PUT /snapshot/load (api_server
// request/snapshot.rs and rpc_interface.rs), word for word.
const (
	msgLoadNotAllowed = "Load snapshot error: Loading a microVM snapshot not allowed after configuring boot-specific resources."
	msgMemTooMany     = "too many fields: either `mem_backend` or `mem_file_path` exclusively is required"
	msgMemMissing     = "missing field: either `mem_backend` or `mem_file_path` is required"
	// Every restore failure is a LoadSnapshotError::RestoreFromSnapshot.
	restoreFault = "Load snapshot error: Failed to restore from snapshot: "
)

// fakeSnapshot is the content of a snapshot_path written by the fake.
type fakeSnapshot struct {
	Format     string        `json:"format"`
	Note       string        `json:"note"`
	VMMVersion string        `json:"vmm_version"`
	ID         string        `json:"id"`
	Boot       *bootSource   `json:"boot_source"`
	Machine    machineConfig `json:"machine_config"`
	Drives     []drive       `json:"drives"`
	Ifaces     []netIface    `json:"network_interfaces"`
	Vsock      *vsockConfig  `json:"vsock,omitempty"`
}

// createSnapshot writes snapshot_path (the JSON record above) and
// mem_file_path (a sparse file of the guest's memory size, all zeros),
// like a real snapshot in size but not content. The VM must be paused, as
// with Firecracker; the phase rule (post-boot only) is the route's.
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
		Format:     snapshotFormat,
		Note:       "fake-firecracker snapshot; not loadable by Firecracker",
		VMMVersion: fcVersion, ID: v.id, Boot: v.boot, Machine: v.machine, Drives: v.drives, Ifaces: v.ifaces,
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

// loadRequest is the body of PUT /snapshot/load (already schema-checked).
type loadRequest struct {
	SnapshotPath string  `json:"snapshot_path"`
	MemFilePath  *string `json:"mem_file_path"`
	MemBackend   *struct {
		BackendType string `json:"backend_type"`
		BackendPath string `json:"backend_path"`
	} `json:"mem_backend"`
	ResumeVM         bool `json:"resume_vm"`
	NetworkOverrides []struct {
		IfaceID     string `json:"iface_id"`
		HostDevName string `json:"host_dev_name"`
	} `json:"network_overrides"`
	VsockOverride *struct {
		UDSPath string `json:"uds_path"`
	} `json:"vsock_override"`
}

// memPath is the memory file: mem_backend's path, or the deprecated
// mem_file_path; exactly one must be given, which Firecracker checks while
// parsing, before it looks at the VM.
func (r loadRequest) memPath() (string, error) {
	switch {
	case r.MemBackend != nil && r.MemFilePath != nil:
		return "", faultf("An error occurred when deserializing the json body of a request: %s.", msgMemTooMany)
	case r.MemBackend == nil && r.MemFilePath == nil:
		return "", faultf("An error occurred when deserializing the json body of a request: %s.", msgMemMissing)
	case r.MemFilePath != nil:
		return *r.MemFilePath, nil
	case r.MemBackend.BackendType != "File":
		return "", notImplemented("PUT", "/snapshot/load with a "+r.MemBackend.BackendType+" memory backend")
	}
	return r.MemBackend.BackendPath, nil
}

// loadSnapshot restores a VM into this fresh process. It is refused after
// boot and after any boot-specific configuration (only the logger and
// metrics may come first). Like Firecracker, a restore that fails past
// those checks leaves the process unusable: it answers the fault, then
// exits 1.
func (v *microVM) loadSnapshot(_ string, body []byte) (any, error) {
	var req loadRequest
	if err := decode(body, &req); err != nil {
		return nil, err
	}
	memPath, err := req.memPath()
	if err != nil {
		return nil, err
	}
	if v.state != stateNotStarted {
		return nil, faultf(msgNotAfterBoot)
	}
	if v.bootPath {
		return nil, faultf(msgLoadNotAllowed)
	}
	if err := v.restore(req, memPath); err != nil {
		v.log.logf(levelError, "%v; the process is too dirty to recover, exiting", err)
		time.AfterFunc(failExitDelay, func() { v.requestExit(1, "snapshot load failed") })
		return nil, err
	}
	return nil, nil
}

// restore does the loading: state file, memory file, drives, taps, vsock,
// then the guest, running or paused. Called with v.mu held.
func (v *microVM) restore(req loadRequest, memPath string) error {
	snap, err := readSnapshot(req.SnapshotPath)
	if err != nil {
		return err
	}
	if err := checkMemoryFile(memPath, snap.Machine.MemSizeMiB); err != nil {
		return err
	}
	// Firecracker re-opens every block device at the path recorded in the
	// snapshot (relative paths against its working directory).
	for _, d := range snap.Drives {
		if err := canOpen(d.PathOnHost, d.openFlag()); err != nil {
			return faultf(restoreFault+"Failed to build microVM from snapshot: Failed to restore devices: Block: Virtio backend error: Error manipulating the backing file: %s %s", osError(err), d.PathOnHost)
		}
	}
	ifaces, err := overrideTaps(snap.Ifaces, req)
	if err != nil {
		return err
	}
	if err := v.restoreVsock(snap.Vsock, req); err != nil {
		return err
	}
	if snap.Boot == nil {
		return faultf(restoreFault + "Failed to get snapshot state from file: fake-firecracker: the state has no boot source to find the guest agent's port")
	}
	v.boot, v.machine, v.drives, v.ifaces, v.restored = snap.Boot, snap.Machine, snap.Drives, ifaces, true
	return v.resumeGuest(req)
}

// readSnapshot opens and parses a state file the fake wrote.
func readSnapshot(path string) (fakeSnapshot, error) {
	var snap fakeSnapshot
	data, err := os.ReadFile(path)
	if err != nil {
		return snap, faultf(restoreFault+"Failed to get snapshot state from file: Failed to open snapshot file: %s: %s", path, osError(err))
	}
	if err := json.Unmarshal(data, &snap); err != nil || snap.Format != snapshotFormat {
		// Approximated wording.
		return snap, faultf(restoreFault+"Failed to get snapshot state from file: Failed to load snapshot state from file: %s is not a snapshot state file (corrupt or from another VMM)", path)
	}
	if snap.VMMVersion != fcVersion {
		// Approximated wording.
		return snap, faultf(restoreFault+"Failed to get snapshot state from file: Failed to load snapshot state from file: Snapshot version %s is not supported by Firecracker %s", snap.VMMVersion, fcVersion)
	}
	return snap, nil
}

// checkMemoryFile opens the memory file; a size other than the guest's
// memory means a truncated or foreign file.
func checkMemoryFile(path string, memMiB int) error {
	st, err := os.Stat(path)
	if err == nil && !st.Mode().IsRegular() {
		err = errors.New("not a regular file")
	}
	if err != nil {
		// Approximated wording.
		return faultf(restoreFault+"Failed to load guest memory: Cannot open the memory file: %s: %s", path, osError(err))
	}
	if want := int64(memMiB) << 20; st.Size() != want {
		// Approximated wording.
		return faultf(restoreFault+"Failed to load guest memory: the memory file %s has %d bytes; the snapshot's guest has %d", path, st.Size(), want)
	}
	return nil
}

// overrideTaps applies network_overrides: each must name an interface the
// snapshot has.
func overrideTaps(ifaces []netIface, req loadRequest) ([]netIface, error) {
	out := append([]netIface(nil), ifaces...)
	for _, o := range req.NetworkOverrides {
		found := false
		for i := range out {
			if out[i].IfaceID == o.IfaceID {
				out[i].HostDevName, found = o.HostDevName, true
			}
		}
		if !found {
			// Approximated wording.
			return nil, faultf(restoreFault+"Invalid network override: the snapshot has no network interface %q", o.IfaceID)
		}
	}
	return out, nil
}

// restoreVsock binds the vsock's socket at vsock_override's path, or at the
// recorded one; like PUT /vsock it fails if the path exists.
func (v *microVM) restoreVsock(saved *vsockConfig, req loadRequest) error {
	if saved == nil {
		if req.VsockOverride != nil {
			// Approximated wording.
			return faultf(restoreFault + "Invalid vsock override: the snapshot has no vsock device")
		}
		return nil
	}
	cfg := *saved
	if req.VsockOverride != nil {
		cfg.UDSPath = req.VsockOverride.UDSPath
	}
	hv, err := bindVsock(cfg, v.stderr)
	if err != nil {
		return faultf(restoreFault+"Failed to build microVM from snapshot: Failed to restore devices: Vsock: Error binding to the host-side Unix socket: %s", osError(err))
	}
	v.vsock = hv
	return nil
}

// resumeGuest starts the stand-in guest the way InstanceStart does, paused
// unless resume_vm asked for it to run; PATCH /vm Resumed resumes it.
func (v *microVM) resumeGuest(req loadRequest) error {
	plan, err := planBoot(v.boot.args(), v.getenv)
	if err != nil {
		return faultf(restoreFault+"fake-firecracker: %v", err)
	}
	dir, agentSock, err := v.prepareGuestDir(plan.agentPort)
	if err != nil {
		return faultf(restoreFault+"fake-firecracker: %v", err)
	}
	v.state = statePaused
	if req.ResumeVM {
		v.state = stateRunning
	}
	fmt.Fprintf(v.console, "fake-firecracker: restored from %s (%s)\n", req.SnapshotPath, v.state)
	if plan.guestBin == "" {
		fmt.Fprintf(v.console, "fake-firecracker: %s is not set; no stand-in guest, nothing listens on vsock\n", envGuest)
	} else if err := v.launchGuest(plan, agentSock); err != nil {
		return faultf(restoreFault+"fake-firecracker: start stand-in guest %s: %v", plan.guestBin, err)
	}
	if v.vsock != nil {
		v.vsock.serve(dir)
	}
	return nil
}
