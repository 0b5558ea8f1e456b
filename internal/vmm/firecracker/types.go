package firecracker

// The structs below mirror the definitions of Firecracker's API spec
// (src/firecracker/swagger/firecracker.yaml) as released in v1.16.x. JSON
// tags are the spec's property names. Optional properties carry omitempty so
// an unset field is not sent and Firecracker applies its own default; fields
// that only exist on Firecracker's development branch (Metrics.emit_id and
// .properties, SnapshotLoadParams.huge_pages, huge_pages "Transparent") are
// deliberately absent because a released binary rejects them.

// Logger is the body of PUT /logger. Firecracker opens LogPath but does not
// create it, so the file (or FIFO) must exist beforehand.
type Logger struct {
	// Level is one of the LogLevel* constants; empty means Firecracker's default (Info).
	Level         string `json:"level,omitempty"`
	LogPath       string `json:"log_path,omitempty"`
	ShowLevel     bool   `json:"show_level,omitempty"`
	ShowLogOrigin bool   `json:"show_log_origin,omitempty"`
	Module        string `json:"module,omitempty"`
}

// Logger levels accepted by Firecracker.
const (
	LogLevelError   = "Error"
	LogLevelWarning = "Warning"
	LogLevelInfo    = "Info"
	LogLevelDebug   = "Debug"
	LogLevelTrace   = "Trace"
	LogLevelOff     = "Off"
)

// Metrics is the body of PUT /metrics.
type Metrics struct {
	MetricsPath string `json:"metrics_path"`
}

// MachineConfiguration is the body of PUT and PATCH /machine-config and the
// answer of GET /machine-config. The spec requires vcpu_count and
// mem_size_mib even for PATCH, so both are always sent.
type MachineConfiguration struct {
	VcpuCount       int    `json:"vcpu_count"`
	MemSizeMib      int    `json:"mem_size_mib"`
	SMT             bool   `json:"smt,omitempty"`
	TrackDirtyPages bool   `json:"track_dirty_pages,omitempty"`
	CPUTemplate     string `json:"cpu_template,omitempty"`
	// HugePages is HugePagesNone or HugePages2M; empty means None.
	HugePages string `json:"huge_pages,omitempty"`
}

// Huge page settings for MachineConfiguration.HugePages in v1.16.x.
const (
	HugePagesNone = "None"
	HugePages2M   = "2M"
)

// BootSource is the body of PUT /boot-source.
type BootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	BootArgs        string `json:"boot_args,omitempty"`
	InitrdPath      string `json:"initrd_path,omitempty"`
}

// Drive is the body of PUT /drives/{drive_id}. IsReadOnly and PathOnHost are
// required for virtio-block and must be omitted for vhost-user-block
// (Socket), hence the pointer.
type Drive struct {
	DriveID      string       `json:"drive_id"`
	IsRootDevice bool         `json:"is_root_device"`
	PathOnHost   string       `json:"path_on_host,omitempty"`
	IsReadOnly   *bool        `json:"is_read_only,omitempty"`
	PartUUID     string       `json:"partuuid,omitempty"`
	CacheType    string       `json:"cache_type,omitempty"` // "Unsafe" (default) or "Writeback"
	IOEngine     string       `json:"io_engine,omitempty"`  // "Sync" (default) or "Async"
	RateLimiter  *RateLimiter `json:"rate_limiter,omitempty"`
	Socket       string       `json:"socket,omitempty"`
}

// PartialDrive is the body of PATCH /drives/{drive_id} (post-boot).
type PartialDrive struct {
	DriveID     string       `json:"drive_id"`
	PathOnHost  string       `json:"path_on_host,omitempty"`
	RateLimiter *RateLimiter `json:"rate_limiter,omitempty"`
}

// RateLimiter limits a device's bandwidth (bytes) and operations.
type RateLimiter struct {
	Bandwidth *TokenBucket `json:"bandwidth,omitempty"`
	Ops       *TokenBucket `json:"ops,omitempty"`
}

// TokenBucket is one rate limiter bucket; RefillTime is in milliseconds.
type TokenBucket struct {
	Size         int64  `json:"size"`
	RefillTime   int64  `json:"refill_time"`
	OneTimeBurst *int64 `json:"one_time_burst,omitempty"`
}

// NetworkInterface is the body of PUT /network-interfaces/{iface_id}.
type NetworkInterface struct {
	IfaceID       string       `json:"iface_id"`
	HostDevName   string       `json:"host_dev_name"`
	GuestMAC      string       `json:"guest_mac,omitempty"`
	MTU           int          `json:"mtu,omitempty"`
	RxRateLimiter *RateLimiter `json:"rx_rate_limiter,omitempty"`
	TxRateLimiter *RateLimiter `json:"tx_rate_limiter,omitempty"`
}

// PartialNetworkInterface is the body of PATCH /network-interfaces/{iface_id}.
type PartialNetworkInterface struct {
	IfaceID       string       `json:"iface_id"`
	RxRateLimiter *RateLimiter `json:"rx_rate_limiter,omitempty"`
	TxRateLimiter *RateLimiter `json:"tx_rate_limiter,omitempty"`
}

// Vsock is the body of PUT /vsock. Firecracker listens on UDSPath for
// host-initiated connections and connects to UDSPath_<port> for
// guest-initiated ones.
type Vsock struct {
	GuestCID uint32 `json:"guest_cid"` // at least 3
	UDSPath  string `json:"uds_path"`
	// VsockID is deprecated by Firecracker; leave empty.
	VsockID string `json:"vsock_id,omitempty"`
}

// MmdsConfig is the body of PUT /mmds/config.
type MmdsConfig struct {
	NetworkInterfaces []string `json:"network_interfaces"`
	Version           string   `json:"version,omitempty"` // "V1" (default) or "V2"
	IPv4Address       string   `json:"ipv4_address,omitempty"`
	ImdsCompat        bool     `json:"imds_compat,omitempty"`
}

// Action types for PUT /actions.
const (
	ActionInstanceStart  = "InstanceStart"
	ActionSendCtrlAltDel = "SendCtrlAltDel"
	ActionFlushMetrics   = "FlushMetrics"
)

// InstanceActionInfo is the body of PUT /actions.
type InstanceActionInfo struct {
	ActionType string `json:"action_type"`
}

// VM states for PATCH /vm.
const (
	VMStatePaused  = "Paused"
	VMStateResumed = "Resumed"
)

// VM is the body of PATCH /vm.
type VM struct {
	State string `json:"state"`
}

// Snapshot types for SnapshotCreateParams.SnapshotType.
const (
	SnapshotFull = "Full"
	SnapshotDiff = "Diff"
)

// SnapshotCreateParams is the body of PUT /snapshot/create.
type SnapshotCreateParams struct {
	SnapshotPath string `json:"snapshot_path"`
	MemFilePath  string `json:"mem_file_path"`
	SnapshotType string `json:"snapshot_type,omitempty"`
}

// SnapshotLoadParams is the body of PUT /snapshot/load. Exactly one of
// MemFilePath (deprecated) and MemBackend must be set.
type SnapshotLoadParams struct {
	SnapshotPath     string            `json:"snapshot_path"`
	MemFilePath      string            `json:"mem_file_path,omitempty"`
	MemBackend       *MemoryBackend    `json:"mem_backend,omitempty"`
	TrackDirtyPages  bool              `json:"track_dirty_pages,omitempty"`
	ResumeVM         bool              `json:"resume_vm,omitempty"`
	NetworkOverrides []NetworkOverride `json:"network_overrides,omitempty"`
	VsockOverride    *VsockOverride    `json:"vsock_override,omitempty"`
	ClockRealtime    bool              `json:"clock_realtime,omitempty"`
}

// MemoryBackend says where a snapshot's guest memory comes from.
type MemoryBackend struct {
	BackendType string `json:"backend_type"` // "File" or "Uffd"
	BackendPath string `json:"backend_path"`
}

// NetworkOverride swaps an interface's tap device on snapshot restore.
type NetworkOverride struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
}

// VsockOverride swaps the vsock device's Unix socket on snapshot restore.
type VsockOverride struct {
	UDSPath string `json:"uds_path"`
}

// InstanceInfo is the answer of GET /.
type InstanceInfo struct {
	AppName    string `json:"app_name"`
	ID         string `json:"id"`
	State      string `json:"state"` // "Not started", "Running" or "Paused"
	VMMVersion string `json:"vmm_version"`
}

// FirecrackerVersion is the answer of GET /version.
type FirecrackerVersion struct {
	FirecrackerVersion string `json:"firecracker_version"`
}

// apiFault is Firecracker's error body.
type apiFault struct {
	FaultMessage string `json:"fault_message"`
}
