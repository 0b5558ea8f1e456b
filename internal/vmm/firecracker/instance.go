package firecracker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmproc"
)

// Instance is one running Firecracker process, started by Launch or adopted
// by Attach. Its vmmproc.Supervisor makes it a vmm.Instance (Stop sends
// Ctrl-Alt-Del: Firecracker exits when the guest reboots); it also
// implements vmm.Pauser, vmm.Snapshotter and vmm.AgentDialer.
type Instance struct {
	*vmmproc.Supervisor
	spec   vmm.LaunchSpec
	layout layout
	client *Client
}

// newInstance supervises one Firecracker process of spec, which start
// runs or adopts (vmmproc.Spawn, Pinned.Supervise) with the driver's
// supervision config.
func (d *Driver) newInstance(spec vmm.LaunchSpec, l layout, start func(vmmproc.Config) (*vmmproc.Supervisor, error)) (*Instance, error) {
	c := NewClient(l.apiSock)
	cfg := vmmproc.Config{
		Name:          "firecracker",
		VM:            spec.Name,
		ConsoleLog:    spec.SerialLogPath,
		ConsoleLogMax: d.cfg.ConsoleLogMax,
		Sockets:       []string{l.apiSock, spec.Agent.UDSPath},
		PowerOff:      c.SendCtrlAltDel,
		PowerOffName:  "Ctrl-Alt-Del",
		StopTimeout:   d.cfg.StopTimeout,
		Logger:        d.cfg.Logger,
	}
	if l.jailRoot != "" {
		cfg.OnExit = func() { d.removeJail(spec) }
	}
	s, err := start(cfg)
	if err != nil {
		return nil, err
	}
	return &Instance{Supervisor: s, spec: spec, layout: l, client: c}, nil
}

// Client is the API client for this VMM, for calls the Instance does not wrap.
func (i *Instance) Client() *Client { return i.client }

// Pause pauses the guest's vCPUs.
func (i *Instance) Pause(ctx context.Context) error {
	if err := i.client.PauseVM(ctx); err != nil {
		return fmt.Errorf("pause vm %q: %w", i.spec.Name, err)
	}
	return nil
}

// Resume resumes a paused guest.
func (i *Instance) Resume(ctx context.Context) error {
	if err := i.client.ResumeVM(ctx); err != nil {
		return fmt.Errorf("resume vm %q: %w", i.spec.Name, err)
	}
	return nil
}

// CreateSnapshot writes a full snapshot of a paused VM to files.State and
// files.Memory, host paths the caller chose. A jailed Firecracker can only
// write inside its jail, so it writes there and the files are then moved
// to the caller's paths.
func (i *Instance) CreateSnapshot(ctx context.Context, files vmm.SnapshotFiles) error {
	if err := i.createSnapshot(ctx, files); err != nil {
		return fmt.Errorf("snapshot vm %q: %w", i.spec.Name, err)
	}
	return nil
}

func (i *Instance) createSnapshot(ctx context.Context, files vmm.SnapshotFiles) error {
	if files.State == "" || files.Memory == "" {
		return errors.New("a firecracker snapshot needs both a state and a memory file")
	}
	target := files
	if root := i.layout.jailRoot; root != "" {
		target = vmm.SnapshotFiles{State: filepath.Join(root, jailStateOut), Memory: filepath.Join(root, jailMemOut)}
	}
	tr := &jailPaths{l: i.layout}
	p := SnapshotCreateParams{SnapshotPath: tr.path(target.State), MemFilePath: tr.path(target.Memory), SnapshotType: SnapshotFull}
	if tr.firstErr != nil {
		return tr.firstErr
	}
	if err := i.client.CreateSnapshot(ctx, p); err != nil {
		return err
	}
	if target == files {
		return nil
	}
	for _, m := range [][2]string{{target.State, files.State}, {target.Memory, files.Memory}} {
		if err := moveOut(m[0], m[1]); err != nil {
			return fmt.Errorf("move the snapshot out of the jail: %w", err)
		}
	}
	return nil
}

// DialAgent opens a stream to the guest agent over the hybrid vsock. It
// fails with ErrGuestNotListening until the agent is up.
func (i *Instance) DialAgent(ctx context.Context) (net.Conn, error) {
	if i.spec.Agent.UDSPath == "" {
		return nil, fmt.Errorf("dial agent of vm %q: no vsock configured: %w", i.spec.Name, vmm.ErrNotSupported)
	}
	conn, err := DialHybridVsock(ctx, i.spec.Agent.UDSPath, i.spec.Agent.Port)
	if err != nil {
		return nil, fmt.Errorf("dial agent of vm %q: %w", i.spec.Name, err)
	}
	return conn, nil
}
