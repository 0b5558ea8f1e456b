package firecracker

import (
	"context"

	"github.com/banger-dev/banger/internal/vmm"
)

// defaultRootDriveID names the root drive when the spec leaves ID empty.
const defaultRootDriveID = "rootfs"

// minGuestCID is the smallest CID Firecracker accepts (0-2 are reserved).
const minGuestCID = 3

// bootStep is one pre-boot API call; name is what a failure reports.
type bootStep struct {
	name string
	call func(context.Context, *Client) error
}

// boot configures the VM in Firecracker's required order and starts it. It
// returns the failed step's name with the error.
func (d *Driver) boot(ctx context.Context, c *Client, spec vmm.LaunchSpec, l layout) (string, error) {
	steps, err := d.bootSteps(spec, l)
	if err != nil {
		return "translate paths into the jail", err
	}
	for _, s := range steps {
		if err := s.call(ctx, c); err != nil {
			return s.name, err
		}
	}
	return "", nil
}

// bootSteps builds the boot sequence: logger, machine config, boot source,
// drives (root first), network interfaces, vsock, InstanceStart.
func (d *Driver) bootSteps(spec vmm.LaunchSpec, l layout) ([]bootStep, error) {
	tr := &jailPaths{l: l}
	var steps []bootStep
	if spec.VMMLogPath != "" {
		logPath := tr.path(spec.VMMLogPath)
		steps = append(steps, bootStep{"configure logger", func(ctx context.Context, c *Client) error {
			return c.PutLogger(ctx, Logger{LogPath: logPath, Level: d.cfg.LogLevel, ShowLevel: true})
		}})
	}
	mc := MachineConfiguration{VcpuCount: spec.VCPUs, MemSizeMib: spec.MemoryMiB}
	steps = append(steps, bootStep{"configure machine", func(ctx context.Context, c *Client) error {
		return c.PutMachineConfig(ctx, mc)
	}})
	bs := BootSource{KernelImagePath: tr.path(spec.KernelPath), InitrdPath: tr.path(spec.InitrdPath), BootArgs: spec.BootArgs}
	steps = append(steps, bootStep{"set boot source", func(ctx context.Context, c *Client) error {
		return c.PutBootSource(ctx, bs)
	}})

	root := spec.RootDrive
	if root.ID == "" {
		root.ID = defaultRootDriveID
	}
	for i, dr := range append([]vmm.Drive{root}, spec.ExtraDrives...) {
		drive := Drive{DriveID: dr.ID, PathOnHost: tr.path(dr.Path), IsRootDevice: i == 0, IsReadOnly: &dr.ReadOnly}
		steps = append(steps, bootStep{"attach drive " + quote(dr.ID), func(ctx context.Context, c *Client) error {
			return c.PutDrive(ctx, drive)
		}})
	}
	for _, n := range spec.Network {
		iface := NetworkInterface{IfaceID: n.ID, HostDevName: n.TapName, GuestMAC: n.MAC}
		steps = append(steps, bootStep{"attach network interface " + quote(n.ID), func(ctx context.Context, c *Client) error {
			return c.PutNetworkInterface(ctx, iface)
		}})
	}
	if spec.Agent.UDSPath != "" {
		vs := Vsock{GuestCID: max(spec.Agent.GuestCID, minGuestCID), UDSPath: tr.path(spec.Agent.UDSPath)}
		steps = append(steps, bootStep{"configure vsock", func(ctx context.Context, c *Client) error {
			return c.PutVsock(ctx, vs)
		}})
	}
	steps = append(steps, bootStep{"start instance", func(ctx context.Context, c *Client) error {
		return c.InstanceStart(ctx)
	}})
	return steps, tr.firstErr
}

func quote(s string) string { return `"` + s + `"` }

// jailPaths translates many paths with layout.inside and keeps the first
// error, so building the step list reads straight through.
type jailPaths struct {
	l        layout
	firstErr error
}

func (j *jailPaths) path(hostPath string) string {
	in, err := j.l.inside(hostPath)
	if err != nil && j.firstErr == nil {
		j.firstErr = err
	}
	return in
}
