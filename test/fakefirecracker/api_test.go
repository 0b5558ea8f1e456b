package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFullBootSequence drives the fake the way banger's driver drives
// Firecracker: logger, metrics, machine, kernel, drives, network, vsock, start.
func TestFullBootSequence(t *testing.T) {
	f := startFake(t, fakeOptions{withAgent: true})
	logPath, metricsPath := f.file("fc.log"), f.file("fc.metrics")

	f.must("PUT", "/logger", jsonBody(map[string]any{"log_path": logPath, "level": "Info", "show_level": true}))
	f.must("PUT", "/metrics", jsonBody(map[string]any{"metrics_path": metricsPath}))
	f.must("PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":512,"smt":false}`)
	f.must("PUT", "/boot-source", jsonBody(map[string]any{
		"kernel_image_path": f.file("vmlinux"),
		"initrd_path":       f.file("initrd.img"),
		"boot_args":         "console=ttyS0 reboot=k panic=1 banger.agent_port=1024",
	}))
	f.must("PUT", "/drives/rootfs", jsonBody(map[string]any{
		"drive_id": "rootfs", "path_on_host": f.file("rootfs.ext4"), "is_root_device": true, "is_read_only": false,
	}))
	f.must("PUT", "/drives/data", jsonBody(map[string]any{
		"drive_id": "data", "path_on_host": f.file("data.ext4"), "is_root_device": false, "is_read_only": true,
	}))
	f.must("PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap-test0","guest_mac":"06:00:ac:10:00:02"}`)
	f.must("PUT", "/vsock", jsonBody(map[string]any{"guest_cid": 3, "uds_path": f.vsockPath()}))
	if got := f.state(); got != stateNotStarted {
		t.Fatalf("state before start = %q", got)
	}
	f.start()
	if got := f.state(); got != stateRunning {
		t.Fatalf("state after start = %q, want %q", got, stateRunning)
	}
	f.waitConsole("banger-vsock-agent: listening on unix:" + f.sock + ".guest/vsock_1024.sock")

	_, body := f.call("GET", "/machine-config", "")
	var mc machineConfig
	if err := json.Unmarshal([]byte(body), &mc); err != nil || mc.VCPUCount != 2 || mc.MemSizeMiB != 512 {
		t.Fatalf("GET /machine-config = %s (%v)", body, err)
	}
	_, body = f.call("GET", "/vm/config", "")
	var full struct {
		Drives []drive `json:"drives"`
	}
	if err := json.Unmarshal([]byte(body), &full); err != nil || len(full.Drives) != 2 || full.Drives[0].DriveID != "rootfs" {
		t.Fatalf("GET /vm/config drives = %s (%v), want rootfs first", body, err)
	}
	if _, body := f.call("GET", "/version", ""); body != `{"firecracker_version":"1.16.1"}` {
		t.Fatalf("GET /version = %s", body)
	}

	f.must("PUT", "/actions", `{"action_type":"FlushMetrics"}`)
	if data, _ := os.ReadFile(metricsPath); !strings.Contains(string(data), "utc_timestamp_ms") {
		t.Errorf("metrics file after FlushMetrics = %q", data)
	}
	data, _ := os.ReadFile(logPath)
	for _, want := range []string{
		`[vm_test:fc_api:INFO] The API server received a Put request on "/actions" with body "{\"action_type\":\"InstanceStart\"}".`,
		"Status code: 204 No Content.",
	} {
		if !strings.Contains(string(data), want) {
			t.Errorf("log file lacks %q:\n%s", want, data)
		}
	}
}

func TestInvalidRequestsAreRejected(t *testing.T) {
	f := startFake(t, fakeOptions{})
	kernel, rootfs := f.file("vmlinux"), f.file("rootfs.ext4")
	missing := filepath.Join(f.dir, "missing.img")
	tests := []struct {
		name, method, path, body, want string
	}{
		{"unknown path", "GET", "/nope/deeper", "", "Invalid request method and/or path: GET nope."},
		{"wrong method", "PATCH", "/boot-source", `{"kernel_image_path":"x"}`, "Invalid request method and/or path: PATCH boot-source."},
		{"unknown field", "PUT", "/boot-source", `{"kernel_image_path":"x","kernel":"y"}`, "An error occurred when deserializing the json body of a request"},
		{"missing required field", "PUT", "/machine-config", `{"vcpu_count":1}`, "mem_size_mib"},
		{"wrong type", "PUT", "/machine-config", `{"vcpu_count":"two","mem_size_mib":128}`, "vcpu_count"},
		{"out of range", "PUT", "/machine-config", `{"vcpu_count":64,"mem_size_mib":128}`, "vcpu_count"},
		{"bad enum", "PUT", "/actions", `{"action_type":"Reboot"}`, "action_type"},
		{"not json", "PUT", "/boot-source", `kernel`, "An error occurred when deserializing the json body of a request"},
		{"path and body ids differ", "PUT", "/drives/rootfs", `{"drive_id":"other","path_on_host":"x","is_root_device":true,"is_read_only":false}`, "does not match"},
		{"empty put", "PUT", "/boot-source", "", "Empty PUT request."},
		{"get with body", "GET", "/machine-config", `{}`, "GET request cannot have a body."},
		{"bad resource id", "PUT", "/drives/a-b", `{"drive_id":"a-b","path_on_host":"x","is_root_device":true,"is_read_only":false}`, "API Resource IDs can only contain alphanumeric characters and underscores."},
		{"missing kernel", "PUT", "/boot-source", jsonBody(map[string]any{"kernel_image_path": missing}), "The kernel file cannot be opened: " + missing + ": No such file or directory (os error 2)"},
		{"missing initrd", "PUT", "/boot-source", jsonBody(map[string]any{"kernel_image_path": kernel, "initrd_path": missing}), "The initrd file cannot be opened: " + missing},
		{"missing drive file", "PUT", "/drives/rootfs", jsonBody(map[string]any{"drive_id": "rootfs", "path_on_host": missing, "is_root_device": true, "is_read_only": false}), "Drive config error: Unable to create the block device: " + missing},
		{"missing log file", "PUT", "/logger", jsonBody(map[string]any{"log_path": missing}), missing},
		{"unmodelled operation", "PUT", "/pmem/p0", `{"id":"p0","path_on_host":"x"}`, "fake-firecracker does not implement PUT /pmem/p0"},
		{"start without kernel", "PUT", "/actions", `{"action_type":"InstanceStart"}`, "Start microvm error: Cannot start microvm without kernel configuration."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.t = t
			f.wantFault(tt.method, tt.path, tt.body, tt.want)
		})
	}
	f.t = t

	// Semantic rules between resources.
	f.must("PUT", "/drives/rootfs", jsonBody(map[string]any{"drive_id": "rootfs", "path_on_host": rootfs, "is_root_device": true, "is_read_only": false}))
	f.wantFault("PUT", "/drives/second", jsonBody(map[string]any{"drive_id": "second", "path_on_host": rootfs, "is_root_device": true, "is_read_only": false}),
		"Drive config error: A root block device already exists!")
	f.must("PUT", "/drives/rootfs", jsonBody(map[string]any{"drive_id": "rootfs", "path_on_host": rootfs, "is_root_device": true, "is_read_only": true}))
	f.must("PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0"}`)
	f.wantFault("PUT", "/network-interfaces/eth1", `{"iface_id":"eth1","host_dev_name":"tap0"}`, "The host device name tap0 is already in use.")

	f.must("PUT", "/vsock", jsonBody(map[string]any{"guest_cid": 3, "uds_path": f.vsockPath()}))
	other := filepath.Join(f.dir, "taken.sock")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f.wantFault("PUT", "/vsock", jsonBody(map[string]any{"guest_cid": 3, "uds_path": other}),
		"Vsock config error: Cannot create backend for vsock device: Error binding to the host-side Unix socket: Address in use (os error 98)")
	if got := f.state(); got != stateNotStarted {
		t.Fatalf("state after rejected requests = %q", got)
	}
}

// TestChunkedBodyArrivesEmpty: Firecracker's HTTP server only honours
// Content-Length, so a chunked upload looks like a request without a body.
func TestChunkedBodyArrivesEmpty(t *testing.T) {
	f := startFake(t, fakeOptions{})
	conn, err := net.Dial("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"kernel_image_path":"/x"}`
	fmt.Fprintf(conn, "PUT /boot-source HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(body), body)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var fault struct {
		FaultMessage string `json:"fault_message"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&fault)
	if resp.StatusCode != 400 || fault.FaultMessage != "Empty PUT request." {
		t.Fatalf("chunked PUT: %d %q, want 400 \"Empty PUT request.\"", resp.StatusCode, fault.FaultMessage)
	}
}

// TestBootPhaseRules checks which calls Firecracker refuses before and after
// InstanceStart, and that the post-boot calls work once running.
func TestBootPhaseRules(t *testing.T) {
	f := startFake(t, fakeOptions{withAgent: true})
	snapDir := f.dir
	postBoot := []struct{ method, path, body string }{
		{"PATCH", "/vm", `{"state":"Paused"}`},
		{"PUT", "/snapshot/create", jsonBody(map[string]any{"snapshot_path": filepath.Join(snapDir, "s"), "mem_file_path": filepath.Join(snapDir, "m")})},
		{"PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`},
		{"PUT", "/actions", `{"action_type":"FlushMetrics"}`},
		{"PATCH", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"/x"}`},
		{"PATCH", "/network-interfaces/eth0", `{"iface_id":"eth0"}`},
	}
	for _, c := range postBoot {
		f.wantFault(c.method, c.path, c.body, msgNotBeforeBoot)
	}

	f.configureMinimal("", true)
	f.must("PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0"}`)
	f.start()
	f.waitConsole("listening on")

	preBoot := []struct{ method, path, body string }{
		{"PUT", "/boot-source", jsonBody(map[string]any{"kernel_image_path": f.file("vmlinux2")})},
		{"PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128}`},
		{"PATCH", "/machine-config", `{"vcpu_count":1,"mem_size_mib":256}`},
		{"PUT", "/drives/data", jsonBody(map[string]any{"drive_id": "data", "path_on_host": f.file("d"), "is_root_device": false, "is_read_only": false})},
		{"PUT", "/network-interfaces/eth1", `{"iface_id":"eth1","host_dev_name":"tap1"}`},
		{"PUT", "/vsock", jsonBody(map[string]any{"guest_cid": 4, "uds_path": filepath.Join(f.dir, "v2.sock")})},
		{"PUT", "/logger", jsonBody(map[string]any{"log_path": f.file("l")})},
		{"PUT", "/metrics", jsonBody(map[string]any{"metrics_path": f.file("m")})},
		{"PUT", "/mmds/config", `{"network_interfaces":["eth0"]}`},
		{"PUT", "/snapshot/load", jsonBody(map[string]any{"snapshot_path": "/s", "mem_backend": map[string]any{"backend_type": "File", "backend_path": "/m"}})},
		{"PUT", "/actions", `{"action_type":"InstanceStart"}`},
	}
	for _, c := range preBoot {
		f.wantFault(c.method, c.path, c.body, msgNotAfterBoot)
	}

	// What is allowed after boot works.
	f.must("PUT", "/mmds", `{"latest":{"meta-data":{"hostname":"dev"}}}`)
	f.must("PATCH", "/drives/rootfs", jsonBody(map[string]any{"drive_id": "rootfs", "path_on_host": f.file("rootfs2.ext4")}))
	f.must("PATCH", "/network-interfaces/eth0", `{"iface_id":"eth0","rx_rate_limiter":{"bandwidth":{"size":1000,"refill_time":100}}}`)
	f.must("PUT", "/actions", `{"action_type":"FlushMetrics"}`) // no metrics configured: a no-op, as in Firecracker
	f.wantFault("PUT", "/snapshot/create", jsonBody(map[string]any{"snapshot_path": filepath.Join(snapDir, "s"), "mem_file_path": filepath.Join(snapDir, "m")}), "paused")
}

func TestPauseResumeAndSnapshot(t *testing.T) {
	f := startFake(t, fakeOptions{withAgent: true})
	f.configureMinimal("", true)
	f.must("PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":64}`)
	f.start()
	f.waitConsole("listening on")
	pids := f.guestPIDs()
	if len(pids) != 1 {
		t.Fatalf("guest processes = %v, want exactly one", pids)
	}
	guest := pids[0]

	f.must("PATCH", "/vm", `{"state":"Paused"}`)
	if got := f.state(); got != statePaused {
		t.Fatalf("state = %q, want Paused", got)
	}
	if st := procState(guest); st != "T" {
		t.Fatalf("paused guest %d is in state %q, want T (stopped)", guest, st)
	}

	snap, mem := filepath.Join(f.dir, "vm.snap"), filepath.Join(f.dir, "vm.mem")
	f.must("PUT", "/snapshot/create", jsonBody(map[string]any{"snapshot_path": snap, "mem_file_path": mem, "snapshot_type": "Full"}))
	if st, err := os.Stat(mem); err != nil || st.Size() != 64<<20 {
		t.Fatalf("memory file: %v, size %d; want 64 MiB", err, st.Size())
	}
	if data, err := os.ReadFile(snap); err != nil || !strings.Contains(string(data), `"vmm_version": "1.16.1"`) {
		t.Fatalf("snapshot file: %v, %s", err, data)
	}
	f.wantFault("PUT", "/snapshot/create", jsonBody(map[string]any{"snapshot_path": filepath.Join(f.dir, "no", "s"), "mem_file_path": mem}),
		"Cannot perform open on the snapshot backing file")
	f.wantFault("PUT", "/snapshot/create", jsonBody(map[string]any{"snapshot_path": snap, "mem_file_path": mem, "snapshot_type": "Diff"}),
		"dirty page tracking disabled")

	f.must("PATCH", "/vm", `{"state":"Resumed"}`)
	if got := f.state(); got != stateRunning {
		t.Fatalf("state = %q, want Running", got)
	}
	if st := procState(guest); st == "T" || st == "" {
		t.Fatalf("resumed guest %d is in state %q, want running or sleeping", guest, st)
	}
}
