package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/mdlayher/vsock"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmproc"
)

// ErrAgentBusy means the single virtio-serial agent stream is held by
// another caller of DialAgent on this Instance.
var ErrAgentBusy = errors.New("the virtio-serial agent stream is held by another connection; close it first")

// ErrSocketInUse means a socket path is bound by a live process, most
// likely another QEMU for the same VM.
var ErrSocketInUse = vmmproc.ErrSocketInUse

// Instance is one running QEMU process, started by Launch or Restore or
// adopted by Attach. Its vmmproc.Supervisor makes it a vmm.Instance (Stop
// presses the ACPI power button: QEMU exits when the guest powers off); it
// also implements vmm.Pauser, vmm.Snapshotter and vmm.AgentDialer.
type Instance struct {
	*vmmproc.Supervisor
	spec      vmm.LaunchSpec
	layout    layout
	transport Transport
	// accel is how this QEMU runs the guest; a snapshot records it.
	accel Accel
	// files hands a snapshot's state file to the driver's Owner.
	files           vmmproc.HandOver
	snapshotTimeout time.Duration
	log             *slog.Logger

	// serial is the virtio-serial agent stream; nil with vhost-vsock.
	serial *serialChannel
}

// newInstance supervises one QEMU process of spec, started with opts'
// acceleration and transport, which start runs or adopts (vmmproc.Spawn,
// Pinned.Supervise) with the driver's supervision config.
func (d *Driver) newInstance(spec vmm.LaunchSpec, l layout, opts Options, start func(vmmproc.Config) (*vmmproc.Supervisor, error)) (*Instance, error) {
	tr := opts.Transport
	inst := &Instance{
		spec: spec, layout: l, transport: tr, accel: opts.Accel,
		files: d.files, snapshotTimeout: d.cfg.SnapshotTimeout,
		log: d.cfg.Logger.With("vm", spec.Name),
	}
	cfg := vmmproc.Config{
		Name:          "qemu",
		VM:            spec.Name,
		ConsoleLog:    spec.SerialLogPath,
		ConsoleLogMax: d.cfg.ConsoleLogMax,
		Sockets:       []string{l.qmpSock, l.agentSock},
		PowerOff:      inst.pressPowerButton,
		PowerOffName:  "the power button",
		StopTimeout:   d.cfg.StopTimeout,
		Logger:        d.cfg.Logger,
	}
	if tr == TransportSerial && l.agentSock != "" {
		inst.serial = newSerialChannel(l.agentSock)
		cfg.OnExit = inst.serial.close
	}
	s, err := start(cfg)
	if err != nil {
		return nil, err
	}
	inst.Supervisor = s
	return inst, nil
}

// Transport is the agent transport this QEMU was started with.
func (i *Instance) Transport() Transport { return i.transport }

// APISocket is the path of the QMP socket, QEMU's control API; the
// daemon records it as the VM's API socket.
func (i *Instance) APISocket() string { return i.layout.qmpSock }

// QMP connects a QMP client for calls the Instance does not wrap. QEMU
// serves one QMP client at a time: close it promptly.
func (i *Instance) QMP(ctx context.Context) (*QMPClient, error) {
	c, err := DialQMP(ctx, i.layout.qmpSock)
	if err != nil {
		return nil, fmt.Errorf("connect to qmp of vm %q: %w", i.spec.Name, err)
	}
	return c, nil
}

// qmp runs fn on a fresh QMP connection. A connection per task, rather
// than one held for the instance's life, leaves the socket free for an
// adopting daemon and for `socat` when someone debugs by hand.
func (i *Instance) qmp(ctx context.Context, fn func(*QMPClient) error) error {
	c, err := DialQMP(ctx, i.layout.qmpSock)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	return fn(c)
}

// Status asks QEMU for the guest's run state.
func (i *Instance) Status(ctx context.Context) (Status, error) {
	var st Status
	err := i.qmp(ctx, func(c *QMPClient) error {
		var err error
		st, err = c.QueryStatus(ctx)
		return err
	})
	return st, err
}

// pressPowerButton presses the guest's ACPI power button, resuming a
// paused guest first, which could not react otherwise.
func (i *Instance) pressPowerButton(ctx context.Context) error {
	return i.qmp(ctx, func(c *QMPClient) error {
		st, err := c.QueryStatus(ctx)
		if err != nil {
			return err
		}
		if st.paused() {
			if err := c.Cont(ctx); err != nil {
				return err
			}
		}
		return c.SystemPowerdown(ctx)
	})
}

// Pause stops the guest's vCPUs (QMP stop).
func (i *Instance) Pause(ctx context.Context) error {
	if err := i.qmp(ctx, func(c *QMPClient) error { return c.Stop(ctx) }); err != nil {
		return fmt.Errorf("pause vm %q: %w", i.spec.Name, err)
	}
	return nil
}

// Resume restarts a paused guest's vCPUs (QMP cont).
func (i *Instance) Resume(ctx context.Context) error {
	if err := i.qmp(ctx, func(c *QMPClient) error { return c.Cont(ctx) }); err != nil {
		return fmt.Errorf("resume vm %q: %w", i.spec.Name, err)
	}
	return nil
}

// DialAgent opens a stream to the guest agent.
//
// Over vhost-vsock it dials the guest's CID and agent port; any number of
// streams may be open at once.
//
// Over virtio-serial there is exactly one stream per VM, and DialAgent
// lends it to one holder at a time: while a stream from this Instance is
// open, another DialAgent waits for it to be closed until ctx ends, then
// fails with ErrAgentBusy. Callers that need several sessions must
// multiplex them over the one stream (the agent protocol runs yamux over
// it) and must not hold two. Closing the stream hands it back; the
// Instance keeps its connection to QEMU open underneath, so the guest sees
// one host for the VM's life rather than a disconnect per holder. What the
// previous holder left unread, or the guest wrote for it, may reach the
// next holder first: the protocol must resynchronize (the agent's hello
// does). The stream also connects at once while the guest agent is not up
// yet; the first read simply waits.
func (i *Instance) DialAgent(ctx context.Context) (net.Conn, error) {
	conn, err := i.dialAgent(ctx)
	if err != nil {
		return nil, fmt.Errorf("dial agent of vm %q: %w", i.spec.Name, err)
	}
	return conn, nil
}

func (i *Instance) dialAgent(ctx context.Context) (net.Conn, error) {
	select {
	case <-i.Done():
		return nil, fmt.Errorf("qemu is not running (%s)", i.Exit())
	default:
	}
	switch {
	case i.transport == TransportVsock:
		return dialVsock(ctx, i.spec.Agent.GuestCID, i.spec.Agent.Port)
	case i.serial != nil:
		conn, err := i.serial.acquire(ctx, i.Done())
		if errors.Is(err, errQEMUGone) {
			<-i.Done() // the reaper is finishing; Exit is valid once it has
			return nil, fmt.Errorf("qemu is not running (%s)", i.Exit())
		}
		return conn, err
	default:
		return nil, fmt.Errorf("no agent channel: %w", vmm.ErrNotSupported)
	}
}

// dialVsock connects to cid:port over AF_VSOCK. The connect cannot take a
// context, so a cancelled dial is left to finish (the kernel bounds it)
// and its connection closed.
func dialVsock(ctx context.Context, cid, port uint32) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := vsock.Dial(cid, port, nil)
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, ctx.Err()
	}
}
