package firecracker

import (
	"context"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmproc"
)

// defaultRootDriveID names the root drive when the spec leaves ID empty.
const defaultRootDriveID = "rootfs"

// minGuestCID is the smallest CID Firecracker accepts (0-2 are reserved).
const minGuestCID = 3

// bootSteps builds the boot sequence on c: logger, machine config, boot
// source, drives (root first), network interfaces, vsock, InstanceStart.
// Firecracker requires this order.
func (d *Driver) bootSteps(spec vmm.LaunchSpec, l layout, c *Client) ([]vmmproc.Step, error) {
	tr := &jailPaths{l: l}
	var steps []vmmproc.Step
	step := func(name string, call func(ctx context.Context) error) {
		steps = append(steps, vmmproc.Step{Name: name, Do: call})
	}
	steps = append(steps, d.loggerSteps(spec, tr, c)...)
	mc := MachineConfiguration{VcpuCount: spec.VCPUs, MemSizeMib: spec.MemoryMiB}
	step("configure machine", func(ctx context.Context) error { return c.PutMachineConfig(ctx, mc) })
	bs := BootSource{KernelImagePath: tr.path(spec.KernelPath), InitrdPath: tr.path(spec.InitrdPath), BootArgs: spec.BootArgs}
	step("set boot source", func(ctx context.Context) error { return c.PutBootSource(ctx, bs) })
	for i, dr := range drives(spec) {
		drive := Drive{DriveID: dr.ID, PathOnHost: drivePath(l, tr, dr), IsRootDevice: i == 0, IsReadOnly: &dr.ReadOnly}
		step("attach drive "+quote(dr.ID), func(ctx context.Context) error { return c.PutDrive(ctx, drive) })
	}
	for _, n := range spec.Network {
		iface := NetworkInterface{IfaceID: n.ID, HostDevName: n.TapName, GuestMAC: n.MAC}
		step("attach network interface "+quote(n.ID), func(ctx context.Context) error { return c.PutNetworkInterface(ctx, iface) })
	}
	if spec.Agent.UDSPath != "" {
		vs := Vsock{GuestCID: max(spec.Agent.GuestCID, minGuestCID), UDSPath: tr.path(spec.Agent.UDSPath)}
		step("configure vsock", func(ctx context.Context) error { return c.PutVsock(ctx, vs) })
	}
	step("start instance", c.InstanceStart)
	return steps, tr.firstErr
}

// loggerSteps configures Firecracker's own log when spec asks for one; it
// is the one resource allowed before a snapshot load as well as a boot.
func (d *Driver) loggerSteps(spec vmm.LaunchSpec, tr *jailPaths, c *Client) []vmmproc.Step {
	if spec.VMMLogPath == "" {
		return nil
	}
	lg := Logger{LogPath: tr.path(spec.VMMLogPath), Level: d.cfg.LogLevel, ShowLevel: true}
	return []vmmproc.Step{{Name: "configure logger", Do: func(ctx context.Context) error { return c.PutLogger(ctx, lg) }}}
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
