package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// snapshotFiles is one snapshot the fake wrote, and the drive it recorded.
type snapshotFiles struct {
	state, mem, drive string
}

// takeSnapshot boots a fake with the agent, a tap and a vsock, pauses it,
// snapshots it into its dir and stops it, as banger does before a fork.
func takeSnapshot(t *testing.T) snapshotFiles {
	t.Helper()
	f := startFake(t, fakeOptions{withAgent: true})
	f.configureMinimal("", true)
	f.must("PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":64}`)
	f.must("PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"06:00:ac:10:00:02"}`)
	f.start()
	f.waitConsole("listening on")
	f.must("PATCH", "/vm", `{"state":"Paused"}`)
	s := snapshotFiles{state: filepath.Join(f.dir, "vm.state"), mem: filepath.Join(f.dir, "vm.mem"), drive: filepath.Join(f.dir, "rootfs.ext4")}
	f.must("PUT", "/snapshot/create", jsonBody(map[string]any{"snapshot_path": s.state, "mem_file_path": s.mem}))
	f.stop()
	return s
}

// loadBody is a PUT /snapshot/load body for s with the given extras.
func (s snapshotFiles) loadBody(extra map[string]any) string {
	body := map[string]any{"snapshot_path": s.state, "mem_backend": map[string]any{"backend_type": "File", "backend_path": s.mem}}
	for k, v := range extra {
		body[k] = v
	}
	return jsonBody(body)
}

// TestRestoreWithOverrides: a snapshot restored into a fresh fake comes
// back on the new tap, with the agent answering on the new vsock path.
func TestRestoreWithOverrides(t *testing.T) {
	s := takeSnapshot(t)
	f := startFake(t, fakeOptions{withAgent: true})
	// The logger (and metrics) may be configured before a load.
	f.must("PUT", "/logger", jsonBody(map[string]any{"log_path": f.file("fc.log")}))
	newVsock := filepath.Join(f.dir, "new.sock")
	f.must("PUT", "/snapshot/load", s.loadBody(map[string]any{
		"resume_vm":         true,
		"network_overrides": []map[string]any{{"iface_id": "eth0", "host_dev_name": "tap9"}},
		"vsock_override":    map[string]any{"uds_path": newVsock},
	}))
	if got := f.state(); got != stateRunning {
		t.Fatalf("state after load with resume_vm = %q, want Running", got)
	}
	waitAgent(t, newVsock)

	_, cfg := f.call("GET", "/vm/config", "")
	var full struct {
		Ifaces  []netIface     `json:"network-interfaces"`
		Machine machineConfig  `json:"machine-config"`
		Drives  []drive        `json:"drives"`
		Vsock   map[string]any `json:"vsock"`
		Boot    *bootSource    `json:"boot-source"`
	}
	if err := json.Unmarshal([]byte(cfg), &full); err != nil {
		t.Fatal(err)
	}
	if len(full.Ifaces) != 1 || full.Ifaces[0].HostDevName != "tap9" || full.Ifaces[0].GuestMAC != "06:00:ac:10:00:02" {
		t.Errorf("interfaces after restore: %+v; want eth0 on tap9 with the saved MAC", full.Ifaces)
	}
	if full.Machine.MemSizeMiB != 64 || len(full.Drives) != 1 || full.Drives[0].PathOnHost != s.drive || full.Boot != nil {
		t.Errorf("restored config %s; want the saved machine and drive, and no boot source (as Firecracker reports it)", cfg)
	}
	// Restored, the VM is booted: boot-time calls are refused, runtime ones work.
	f.wantFault("PUT", "/actions", `{"action_type":"InstanceStart"}`, msgNotAfterBoot)
	f.wantFault("PUT", "/snapshot/load", s.loadBody(nil), msgNotAfterBoot)
	f.must("PATCH", "/vm", `{"state":"Paused"}`)
	f.must("PUT", "/snapshot/create", jsonBody(map[string]any{"snapshot_path": filepath.Join(f.dir, "s2"), "mem_file_path": filepath.Join(f.dir, "m2")}))
}

// TestRestorePausedThenResume: without resume_vm the VM stays paused and
// its agent does not answer until PATCH /vm Resumed.
func TestRestorePausedThenResume(t *testing.T) {
	s := takeSnapshot(t)
	f := startFake(t, fakeOptions{withAgent: true})
	newVsock := filepath.Join(f.dir, "new.sock")
	f.must("PUT", "/snapshot/load", s.loadBody(map[string]any{"vsock_override": map[string]any{"uds_path": newVsock}}))
	if got := f.state(); got != statePaused {
		t.Fatalf("state after load = %q, want Paused", got)
	}
	f.waitConsole("restored from")
	if pids := f.guestPIDs(); len(pids) != 1 || procState(pids[0]) != "T" {
		t.Fatalf("guest of a paused restore: %v, want one stopped process", pids)
	}
	f.must("PATCH", "/vm", `{"state":"Resumed"}`)
	waitAgent(t, newVsock)
}

// TestLoadRefusedAfterConfiguration: any boot-specific resource configured
// first makes Firecracker refuse the load (the process stays usable).
func TestLoadRefusedAfterConfiguration(t *testing.T) {
	s := takeSnapshot(t)
	for _, c := range []struct{ name, method, path, body string }{
		{"boot source", "PUT", "/boot-source", `{"kernel_image_path":"KERNEL"}`},
		{"machine config", "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":64}`},
		{"drive", "PUT", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"KERNEL","is_root_device":true,"is_read_only":true}`},
		{"network", "PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0"}`},
		{"vsock", "PUT", "/vsock", `{"guest_cid":3,"uds_path":"VSOCK"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := startFake(t, fakeOptions{})
			body := strings.NewReplacer("KERNEL", f.file("vmlinux"), "VSOCK", f.vsockPath()).Replace(c.body)
			f.must(c.method, c.path, body)
			f.wantFault("PUT", "/snapshot/load", s.loadBody(nil), msgLoadNotAllowed)
			if got := f.state(); got != stateNotStarted {
				t.Fatalf("state after a refused load = %q", got)
			}
		})
	}
}

// TestLoadMemoryFieldsExclusive: exactly one of mem_backend and
// mem_file_path, checked while parsing (the process stays usable).
func TestLoadMemoryFieldsExclusive(t *testing.T) {
	s := takeSnapshot(t)
	f := startFake(t, fakeOptions{})
	f.wantFault("PUT", "/snapshot/load", s.loadBody(map[string]any{"mem_file_path": s.mem}), msgMemTooMany)
	f.wantFault("PUT", "/snapshot/load", jsonBody(map[string]any{"snapshot_path": s.state}), msgMemMissing)
	// The deprecated field alone still loads. (The saved vsock socket was
	// left behind by the first VMM, as Firecracker leaves it, so the load
	// needs another path.)
	f.must("PUT", "/snapshot/load", jsonBody(map[string]any{"snapshot_path": s.state, "mem_file_path": s.mem,
		"vsock_override": map[string]any{"uds_path": f.vsockPath()}}))
}

// TestLoadBadSnapshotExits: a restore that fails on its files answers a
// fault naming the problem, then the process exits 1 like Firecracker's.
func TestLoadBadSnapshotExits(t *testing.T) {
	s := takeSnapshot(t)
	corrupt := filepath.Join(filepath.Dir(s.state), "corrupt.state")
	if err := os.WriteFile(corrupt, []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(filepath.Dir(s.state), "short.mem")
	if err := writeSparse(short, 1<<20); err != nil {
		t.Fatal(err)
	}
	noDrive := filepath.Join(filepath.Dir(s.state), "nodrive.state")
	data, _ := os.ReadFile(s.state)
	if err := os.WriteFile(noDrive, []byte(strings.ReplaceAll(string(data), s.drive, s.drive+".gone")), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, body, want string }{
		{"missing state", snapshotFiles{state: s.state + ".gone", mem: s.mem}.loadBody(nil), "Failed to open snapshot file"},
		{"corrupt state", snapshotFiles{state: corrupt, mem: s.mem}.loadBody(nil), "is not a snapshot state file"},
		{"missing memory", snapshotFiles{state: s.state, mem: s.mem + ".gone"}.loadBody(nil), "Cannot open the memory file"},
		{"short memory", snapshotFiles{state: s.state, mem: short}.loadBody(nil), "has 1048576 bytes; the snapshot's guest has 67108864"},
		{"missing drive", snapshotFiles{state: noDrive, mem: s.mem}.loadBody(nil), "Error manipulating the backing file: No such file or directory (os error 2) " + s.drive + ".gone"},
		// The first VMM left its vsock socket behind, as Firecracker does.
		{"saved vsock path in use", s.loadBody(nil), "Vsock: Error binding to the host-side Unix socket: Address in use (os error 98)"},
		{"unknown interface", s.loadBody(map[string]any{"network_overrides": []map[string]any{{"iface_id": "eth7", "host_dev_name": "tap9"}}}), `no network interface "eth7"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := startFake(t, fakeOptions{withAgent: true})
			f.wantFault("PUT", "/snapshot/load", c.body, c.want)
			if code, _ := exitCode(f.waitExit(10 * time.Second)); code != 1 {
				t.Fatalf("exit %d after a failed restore, want 1", code)
			}
		})
	}
}

// waitAgent waits until the agent answers a CONNECT on the vsock at path.
func waitAgent(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, _, err := vsockConnect(path, 1024)
		if err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not answering on %s: %v", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
