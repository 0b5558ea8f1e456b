package firecracker

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/banger-dev/banger/test/fcspec"
	"github.com/banger-dev/banger/test/fcspec/oas"
)

// capturedRequest is one request as it arrived on the socket.
type capturedRequest struct {
	Method, Path string
	Body         []byte
}

// captureServer serves a minimal Firecracker API on a Unix socket and keeps
// every request. Answers are plausible, not validated: the point is what
// the client sends.
type captureServer struct {
	mu   sync.Mutex
	reqs []capturedRequest
}

func (s *captureServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.reqs = append(s.reqs, capturedRequest{Method: r.Method, Path: r.URL.EscapedPath(), Body: body})
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == "GET" && r.URL.Path == "/":
		_, _ = io.WriteString(w, `{"app_name":"Firecracker","id":"vm1","state":"Running","vmm_version":"1.16.1"}`)
	case r.Method == "GET" && r.URL.Path == "/version":
		_, _ = io.WriteString(w, `{"firecracker_version":"1.16.1"}`)
	case r.Method == "GET" && r.URL.Path == "/machine-config":
		_, _ = io.WriteString(w, `{"vcpu_count":2,"mem_size_mib":1024,"smt":false}`)
	case r.Method == "GET" && r.URL.Path == "/mmds":
		_, _ = io.WriteString(w, `{"latest":{"meta-data":{"instance-id":"vm1"}}}`)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s *captureServer) take() []capturedRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.reqs
	s.reqs = nil
	return r
}

func startCaptureServer(t *testing.T) (*Client, *captureServer) {
	t.Helper()
	sock := filepath.Join(shortTempDir(t), "api.sock")
	ln := listenUnix(t, sock)
	cs := &captureServer{}
	srv := &http.Server{Handler: cs}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return NewClient(sock), cs
}

func ptr[T any](v T) *T { return &v }

// contractCalls exercises every client method with realistic values. The
// key is the method name so TestContractCoversClient can tell when a new
// method was added without a contract case.
func contractCalls() map[string]func(context.Context, *Client) error {
	limiter := &RateLimiter{
		Bandwidth: &TokenBucket{Size: 100 << 20, RefillTime: 1000, OneTimeBurst: ptr[int64](200 << 20)},
		Ops:       &TokenBucket{Size: 5000, RefillTime: 1000},
	}
	return map[string]func(context.Context, *Client) error{
		"PutLogger": func(ctx context.Context, c *Client) error {
			return c.PutLogger(ctx, Logger{LogPath: "/run/banger/vms/dev/firecracker.log", Level: LogLevelInfo, ShowLevel: true, ShowLogOrigin: true, Module: "api_server::request"})
		},
		"PutMetrics": func(ctx context.Context, c *Client) error {
			return c.PutMetrics(ctx, Metrics{MetricsPath: "/run/banger/vms/dev/metrics.fifo"})
		},
		"PutMachineConfig": func(ctx context.Context, c *Client) error {
			return c.PutMachineConfig(ctx, MachineConfiguration{VcpuCount: 2, MemSizeMib: 1024, SMT: false, TrackDirtyPages: true, HugePages: HugePagesNone})
		},
		"PatchMachineConfig": func(ctx context.Context, c *Client) error {
			return c.PatchMachineConfig(ctx, MachineConfiguration{VcpuCount: 4, MemSizeMib: 2048, CPUTemplate: "None"})
		},
		"GetMachineConfig": func(ctx context.Context, c *Client) error {
			m, err := c.GetMachineConfig(ctx)
			if err == nil && m.VcpuCount != 2 {
				return errors.New("GetMachineConfig did not decode vcpu_count")
			}
			return err
		},
		"PutBootSource": func(ctx context.Context, c *Client) error {
			return c.PutBootSource(ctx, BootSource{
				KernelImagePath: "/var/lib/banger/kernels/6.1/vmlinux",
				InitrdPath:      "/var/lib/banger/kernels/6.1/initrd.img",
				BootArgs:        "console=ttyS0 reboot=k panic=1 pci=off banger.hostname=dev",
			})
		},
		"PutDrive": func(ctx context.Context, c *Client) error {
			return c.PutDrive(ctx, Drive{DriveID: "rootfs", PathOnHost: "/var/lib/banger/vms/dev/rootfs.ext4", IsRootDevice: true, IsReadOnly: ptr(false), CacheType: "Writeback", IOEngine: "Async", RateLimiter: limiter})
		},
		"PatchDrive": func(ctx context.Context, c *Client) error {
			return c.PatchDrive(ctx, PartialDrive{DriveID: "data", PathOnHost: "/var/lib/banger/vms/dev/data.ext4", RateLimiter: limiter})
		},
		"PutNetworkInterface": func(ctx context.Context, c *Client) error {
			return c.PutNetworkInterface(ctx, NetworkInterface{IfaceID: "eth0", HostDevName: "bgr-dev0", GuestMAC: "06:00:ac:1e:00:02", MTU: 1500, RxRateLimiter: limiter})
		},
		"PatchNetworkInterface": func(ctx context.Context, c *Client) error {
			return c.PatchNetworkInterface(ctx, PartialNetworkInterface{IfaceID: "eth0", TxRateLimiter: limiter})
		},
		"PutVsock": func(ctx context.Context, c *Client) error {
			return c.PutVsock(ctx, Vsock{GuestCID: 3, UDSPath: "/run/banger/vms/dev/vsock.sock"})
		},
		"PutMMDS": func(ctx context.Context, c *Client) error {
			return c.PutMMDS(ctx, map[string]any{"latest": map[string]any{"meta-data": map[string]string{"instance-id": "dev"}}})
		},
		"PatchMMDS": func(ctx context.Context, c *Client) error {
			return c.PatchMMDS(ctx, map[string]any{"latest": map[string]any{"meta-data": map[string]string{"hostname": "dev"}}})
		},
		"GetMMDS": func(ctx context.Context, c *Client) error {
			raw, err := c.GetMMDS(ctx)
			if err == nil && !strings.Contains(string(raw), "instance-id") {
				return errors.New("GetMMDS lost the store")
			}
			return err
		},
		"PutMMDSConfig": func(ctx context.Context, c *Client) error {
			return c.PutMMDSConfig(ctx, MmdsConfig{NetworkInterfaces: []string{"eth0"}, Version: "V2", IPv4Address: "169.254.169.254", ImdsCompat: true})
		},
		"InstanceStart":  func(ctx context.Context, c *Client) error { return c.InstanceStart(ctx) },
		"SendCtrlAltDel": func(ctx context.Context, c *Client) error { return c.SendCtrlAltDel(ctx) },
		"FlushMetrics":   func(ctx context.Context, c *Client) error { return c.FlushMetrics(ctx) },
		"PauseVM":        func(ctx context.Context, c *Client) error { return c.PauseVM(ctx) },
		"ResumeVM":       func(ctx context.Context, c *Client) error { return c.ResumeVM(ctx) },
		"CreateSnapshot": func(ctx context.Context, c *Client) error {
			return c.CreateSnapshot(ctx, SnapshotCreateParams{SnapshotPath: "/var/lib/banger/snap/dev.state", MemFilePath: "/var/lib/banger/snap/dev.mem", SnapshotType: SnapshotFull})
		},
		"LoadSnapshot": func(ctx context.Context, c *Client) error {
			return c.LoadSnapshot(ctx, SnapshotLoadParams{
				SnapshotPath:     "/var/lib/banger/snap/dev.state",
				MemBackend:       &MemoryBackend{BackendType: MemBackendFile, BackendPath: "/var/lib/banger/snap/dev.mem"},
				TrackDirtyPages:  true,
				ResumeVM:         true,
				NetworkOverrides: []NetworkOverride{{IfaceID: "eth0", HostDevName: "bgr-dev1"}},
				VsockOverride:    &VsockOverride{UDSPath: "/run/banger/vms/dev2/vsock.sock"},
				ClockRealtime:    true,
			})
		},
		"InstanceInfo": func(ctx context.Context, c *Client) error {
			info, err := c.InstanceInfo(ctx)
			if err == nil && info.State != "Running" {
				return errors.New("InstanceInfo did not decode state")
			}
			return err
		},
		"Version": func(ctx context.Context, c *Client) error {
			v, err := c.Version(ctx)
			if err == nil && v.FirecrackerVersion == "" {
				return errors.New("Version did not decode firecracker_version")
			}
			return err
		},
	}
}

// TestContractRequestsMatchSpec sends every request the client can make and
// validates each against the official Firecracker API spec.
func TestContractRequestsMatchSpec(t *testing.T) {
	v := oas.LoadForTest(t)
	client, srv := startCaptureServer(t)
	for name, call := range contractCalls() {
		t.Run(name, func(t *testing.T) {
			if err := call(context.Background(), client); err != nil {
				t.Fatalf("call: %v", err)
			}
			reqs := srv.take()
			if len(reqs) != 1 {
				t.Fatalf("want 1 request, got %d", len(reqs))
			}
			r := reqs[0]
			if err := v.ValidateRequest(r.Method, r.Path, r.Body); err != nil {
				t.Fatalf("spec %s rejects %s %s %s: %v", v.SpecVersion(), r.Method, r.Path, r.Body, err)
			}
			if f := unreleasedField(r); f != "" {
				t.Fatalf("%s %s sends %s, which Firecracker v1.16.x does not know: %s", r.Method, r.Path, f, r.Body)
			}
		})
	}
}

// unreleasedField names a field the spec on Firecracker's main branch has
// but the v1.16.x release lacks (see shared/firecracker/SOURCE.md).
func unreleasedField(r capturedRequest) string {
	var body map[string]any
	if json.Unmarshal(r.Body, &body) != nil {
		return ""
	}
	switch r.Path {
	case "/metrics":
		for _, f := range []string{"emit_id", "properties"} {
			if _, ok := body[f]; ok {
				return f
			}
		}
	case "/snapshot/load":
		if _, ok := body["huge_pages"]; ok {
			return "huge_pages"
		}
	case "/machine-config":
		if body["huge_pages"] == "Transparent" {
			return `huge_pages "Transparent"`
		}
	}
	return ""
}

// TestContractCoversClient fails when a request-sending method is added to
// Client without a contract case.
func TestContractCoversClient(t *testing.T) {
	calls := contractCalls()
	var missing []string
	typ := reflect.TypeOf(&Client{})
	for i := 0; i < typ.NumMethod(); i++ {
		name := typ.Method(i).Name
		if name == "SocketPath" {
			continue
		}
		if _, ok := calls[name]; !ok {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("client methods without a contract case: %v", missing)
	}
}

// TestContractValidatorBites proves the validator used above is not
// vacuous: deliberately wrong bodies built like the client's are rejected.
func TestContractValidatorBites(t *testing.T) {
	v := oas.LoadForTest(t)
	bad := []struct {
		name, method, path, body string
	}{
		{"unknown field", "PUT", "/boot-source", `{"kernel_image_path":"/vmlinux","kernel_args":"console=ttyS0"}`},
		{"unknown nested field", "PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0","rx_rate_limiter":{"bandwidth":{"size":1,"refill_time":1,"rate":5}}}`},
		{"wrong type", "PUT", "/machine-config", `{"vcpu_count":"2","mem_size_mib":1024}`},
		{"bad enum", "PUT", "/actions", `{"action_type":"Reboot"}`},
		{"bad vm state", "PATCH", "/vm", `{"state":"Stopped"}`},
		{"missing required", "PUT", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"/r.ext4"}`},
		{"below minimum cid", "PUT", "/vsock", `{"guest_cid":2,"uds_path":"/v.sock"}`},
		{"above maximum vcpus", "PUT", "/machine-config", `{"vcpu_count":64,"mem_size_mib":1024}`},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			if err := v.ValidateRequest(b.method, b.path, []byte(b.body)); !errors.Is(err, fcspec.ErrInvalidRequest) {
				t.Fatalf("validator accepted %s %s %s (err %v)", b.method, b.path, b.body, err)
			}
		})
	}
}

func TestAPIErrorCarriesFaultMessage(t *testing.T) {
	sock := filepath.Join(shortTempDir(t), "api.sock")
	ln := listenUnix(t, sock)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"fault_message":"Kernel image path is invalid: No such file or directory (os error 2)"}`)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	err := NewClient(sock).PutBootSource(context.Background(), BootSource{KernelImagePath: "/nope"})
	want := "firecracker: PUT /boot-source: 400: Kernel image path is invalid: No such file or directory (os error 2)"
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v\nwant %s", err, want)
	}
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 400 || apiErr.Method != "PUT" || apiErr.Path != "/boot-source" {
		t.Fatalf("want *APIError{PUT /boot-source 400}, got %#v", err)
	}
}

func TestClientSocketMissing(t *testing.T) {
	c := NewClient(filepath.Join(shortTempDir(t), "absent.sock"))
	_, err := c.InstanceInfo(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "firecracker: GET /: ") || strings.Contains(err.Error(), "http://") {
		t.Fatalf("unexpected error: %v", err)
	}
}
