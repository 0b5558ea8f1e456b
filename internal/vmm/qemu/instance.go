package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"time"

	"github.com/mdlayher/vsock"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmproc"
)

// qmpCallTimeout bounds one QMP exchange inside Stop, where the caller's
// context may allow far longer than a healthy QEMU needs to answer.
const qmpCallTimeout = 2 * time.Second

// ErrAgentBusy means the single virtio-serial agent stream is held by
// another caller of DialAgent on this Instance.
var ErrAgentBusy = errors.New("the virtio-serial agent stream is held by another connection; close it first")

// Instance is one running QEMU process, started by Launch or adopted by
// Attach. It implements vmm.Instance, vmm.Pauser and vmm.AgentDialer.
type Instance struct {
	pid         int
	started     uint64 // start time of pid (vmmproc.StartTime)
	spec        vmm.LaunchSpec
	layout      layout
	transport   Transport
	stopTimeout time.Duration
	log         *slog.Logger

	// serial is the virtio-serial agent stream; nil with vhost-vsock.
	serial *serialChannel

	// kill sends SIGKILL; it returns nil if the process is already gone.
	kill func() error
	done chan struct{}
	exit vmm.ExitStatus // written once, before done is closed
}

// newChildInstance supervises a process this daemon started.
func newChildInstance(cmd *exec.Cmd, inst *Instance) *Instance {
	inst.kill = vmmproc.Supervise(cmd, "qemu", inst.finish)
	return inst
}

// finish records the exit, removes the sockets the dead process left
// behind, and only then closes done, so a relaunch that waits on Done
// never races the cleanup.
func (i *Instance) finish(st vmm.ExitStatus) {
	if i.serial != nil {
		i.serial.close()
	}
	for _, p := range []string{i.layout.qmpSock, i.layout.agentSock} {
		if p == "" {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			i.log.Warn("remove socket of exited qemu", "path", p, "err", err)
		}
	}
	i.exit = st
	i.log.Info("qemu exited", "status", st.String())
	close(i.done)
}

// PID is the VMM's process id.
func (i *Instance) PID() int { return i.pid }

// Process is the VMM's PID with its start time.
func (i *Instance) Process() vmm.Process { return vmm.Process{PID: i.pid, StartTime: i.started} }

// Done is closed once the VMM process has exited and its sockets are gone.
func (i *Instance) Done() <-chan struct{} { return i.done }

// Exit reports how the VMM ended; valid after Done is closed. An adopted
// process (Attach) is not our child, so how it ended is unknown (NotChild).
func (i *Instance) Exit() vmm.ExitStatus {
	select {
	case <-i.done:
		return i.exit
	default:
		return vmm.ExitStatus{Code: -1, Err: "qemu is still running"}
	}
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

// Stop presses the guest's ACPI power button (resuming a paused guest
// first, which could not react otherwise), waits up to timeout (the
// driver's StopTimeout if zero) for QEMU to exit, then kills it. QEMU
// exits when the guest powers off. It returns only once the process is
// gone. If the request cannot be delivered the process is killed at once:
// waiting could not help.
func (i *Instance) Stop(ctx context.Context, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = i.stopTimeout
	}
	select {
	case <-i.done:
		return nil
	default:
	}
	qctx, cancel := context.WithTimeout(ctx, qmpCallTimeout)
	err := i.qmp(qctx, func(c *QMPClient) error {
		st, err := c.QueryStatus(qctx)
		if err != nil {
			return err
		}
		if st.Status == "paused" {
			if err := c.Cont(qctx); err != nil {
				return err
			}
		}
		return c.SystemPowerdown(qctx)
	})
	cancel()
	if err != nil {
		i.log.Warn("power button not delivered; killing qemu", "err", err)
		return i.Kill()
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-i.done:
		return nil
	case <-t.C:
		i.log.Warn("guest ignored the power button; killing qemu", "timeout", timeout)
		return i.Kill()
	case <-ctx.Done():
		if err := i.Kill(); err != nil {
			return err
		}
		return fmt.Errorf("stop vm %q: killed after %w", i.spec.Name, ctx.Err())
	}
}

// Kill sends SIGKILL and waits until the process is gone.
func (i *Instance) Kill() error {
	select {
	case <-i.done:
		return nil
	default:
	}
	if err := i.kill(); err != nil {
		return fmt.Errorf("kill qemu pid %d: %w", i.pid, err)
	}
	<-i.done
	return nil
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
	case <-i.done:
		return nil, fmt.Errorf("qemu is not running (%s)", i.Exit())
	default:
	}
	switch {
	case i.transport == TransportVsock:
		return dialVsock(ctx, i.spec.Agent.GuestCID, i.spec.Agent.Port)
	case i.serial != nil:
		conn, err := i.serial.acquire(ctx, i.done)
		if errors.Is(err, errQEMUGone) {
			<-i.done // the reaper is finishing; Exit is valid once it has
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
