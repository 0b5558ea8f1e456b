package firecracker

import (
	"context"
	"encoding/json"
)

// One method per Firecracker API operation banger uses. Pre-boot operations
// (logger, metrics, machine-config, boot-source, drives, network, vsock,
// mmds/config, snapshot load) are only accepted before InstanceStart;
// Firecracker answers 400 otherwise and the fault message says so.

// PutLogger configures Firecracker's own log (PUT /logger).
func (c *Client) PutLogger(ctx context.Context, l Logger) error {
	return c.do(ctx, "PUT", "/logger", l, nil)
}

// PutMetrics configures the metrics sink (PUT /metrics).
func (c *Client) PutMetrics(ctx context.Context, m Metrics) error {
	return c.do(ctx, "PUT", "/metrics", m, nil)
}

// PutMachineConfig sets vCPUs and memory (PUT /machine-config).
func (c *Client) PutMachineConfig(ctx context.Context, m MachineConfiguration) error {
	return c.do(ctx, "PUT", "/machine-config", m, nil)
}

// PatchMachineConfig updates the machine configuration (PATCH /machine-config).
func (c *Client) PatchMachineConfig(ctx context.Context, m MachineConfiguration) error {
	return c.do(ctx, "PATCH", "/machine-config", m, nil)
}

// GetMachineConfig reads the machine configuration (GET /machine-config).
func (c *Client) GetMachineConfig(ctx context.Context) (MachineConfiguration, error) {
	var m MachineConfiguration
	err := c.do(ctx, "GET", "/machine-config", nil, &m)
	return m, err
}

// PutBootSource sets kernel, initrd and kernel command line (PUT /boot-source).
func (c *Client) PutBootSource(ctx context.Context, b BootSource) error {
	return c.do(ctx, "PUT", "/boot-source", b, nil)
}

// PutDrive attaches or replaces a block device (PUT /drives/{drive_id}).
func (c *Client) PutDrive(ctx context.Context, d Drive) error {
	return c.do(ctx, "PUT", "/drives/"+pathID(d.DriveID), d, nil)
}

// PatchDrive swaps a drive's backing file or rate limiter after boot
// (PATCH /drives/{drive_id}).
func (c *Client) PatchDrive(ctx context.Context, d PartialDrive) error {
	return c.do(ctx, "PATCH", "/drives/"+pathID(d.DriveID), d, nil)
}

// PutNetworkInterface attaches a tap device (PUT /network-interfaces/{iface_id}).
func (c *Client) PutNetworkInterface(ctx context.Context, n NetworkInterface) error {
	return c.do(ctx, "PUT", "/network-interfaces/"+pathID(n.IfaceID), n, nil)
}

// PatchNetworkInterface updates an interface's rate limiters after boot
// (PATCH /network-interfaces/{iface_id}).
func (c *Client) PatchNetworkInterface(ctx context.Context, n PartialNetworkInterface) error {
	return c.do(ctx, "PATCH", "/network-interfaces/"+pathID(n.IfaceID), n, nil)
}

// PutVsock configures the hybrid vsock device (PUT /vsock).
func (c *Client) PutVsock(ctx context.Context, v Vsock) error {
	return c.do(ctx, "PUT", "/vsock", v, nil)
}

// PutMMDS replaces the metadata store with data, any JSON object (PUT /mmds).
func (c *Client) PutMMDS(ctx context.Context, data any) error {
	return c.do(ctx, "PUT", "/mmds", data, nil)
}

// PatchMMDS merges data into the metadata store (PATCH /mmds).
func (c *Client) PatchMMDS(ctx context.Context, data any) error {
	return c.do(ctx, "PATCH", "/mmds", data, nil)
}

// GetMMDS returns the metadata store as raw JSON (GET /mmds).
func (c *Client) GetMMDS(ctx context.Context) (json.RawMessage, error) {
	var raw json.RawMessage
	err := c.do(ctx, "GET", "/mmds", nil, &raw)
	return raw, err
}

// PutMMDSConfig configures the metadata service (PUT /mmds/config).
func (c *Client) PutMMDSConfig(ctx context.Context, m MmdsConfig) error {
	return c.do(ctx, "PUT", "/mmds/config", m, nil)
}

// action sends one synchronous action (PUT /actions).
func (c *Client) action(ctx context.Context, actionType string) error {
	return c.do(ctx, "PUT", "/actions", InstanceActionInfo{ActionType: actionType}, nil)
}

// InstanceStart boots the configured guest.
func (c *Client) InstanceStart(ctx context.Context) error {
	return c.action(ctx, ActionInstanceStart)
}

// SendCtrlAltDel asks the guest to shut down cleanly (x86 i8042 reset);
// Firecracker exits when the guest reboots.
func (c *Client) SendCtrlAltDel(ctx context.Context) error {
	return c.action(ctx, ActionSendCtrlAltDel)
}

// FlushMetrics writes the current metrics to the metrics sink now.
func (c *Client) FlushMetrics(ctx context.Context) error {
	return c.action(ctx, ActionFlushMetrics)
}

// PauseVM pauses the vCPUs (PATCH /vm).
func (c *Client) PauseVM(ctx context.Context) error {
	return c.do(ctx, "PATCH", "/vm", VM{State: VMStatePaused}, nil)
}

// ResumeVM resumes paused vCPUs (PATCH /vm).
func (c *Client) ResumeVM(ctx context.Context) error {
	return c.do(ctx, "PATCH", "/vm", VM{State: VMStateResumed}, nil)
}

// CreateSnapshot writes the state of a paused VM (PUT /snapshot/create).
func (c *Client) CreateSnapshot(ctx context.Context, p SnapshotCreateParams) error {
	return c.do(ctx, "PUT", "/snapshot/create", p, nil)
}

// LoadSnapshot restores a VM into a fresh Firecracker process (PUT /snapshot/load).
func (c *Client) LoadSnapshot(ctx context.Context, p SnapshotLoadParams) error {
	return c.do(ctx, "PUT", "/snapshot/load", p, nil)
}

// InstanceInfo describes the instance (GET /); it doubles as the liveness probe.
func (c *Client) InstanceInfo(ctx context.Context) (InstanceInfo, error) {
	var info InstanceInfo
	err := c.do(ctx, "GET", "/", nil, &info)
	return info, err
}

// Version reports the Firecracker version (GET /version).
func (c *Client) Version(ctx context.Context) (FirecrackerVersion, error) {
	var v FirecrackerVersion
	err := c.do(ctx, "GET", "/version", nil, &v)
	return v, err
}
