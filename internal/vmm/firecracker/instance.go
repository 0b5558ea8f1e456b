package firecracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmproc"
)

// ctrlAltDelTimeout bounds the SendCtrlAltDel call itself; the shutdown
// that follows is bounded by Stop's timeout.
const ctrlAltDelTimeout = 2 * time.Second

// Instance is one running Firecracker process, started by Launch or adopted
// by Attach. It implements vmm.Instance, vmm.Pauser, vmm.Snapshotter and
// vmm.AgentDialer.
type Instance struct {
	pid         int
	started     uint64 // start time of pid (vmmproc.StartTime)
	spec        vmm.LaunchSpec
	layout      layout
	client      *Client
	stopTimeout time.Duration
	log         *slog.Logger

	// kill sends SIGKILL; it returns nil if the process is already gone.
	kill func() error
	// cleanup, if set, runs once the process is gone (a jail's removal).
	cleanup func()
	done    chan struct{}
	exit    vmm.ExitStatus // written once, before done is closed
}

// newChildInstance supervises a process this daemon started.
func newChildInstance(cmd *exec.Cmd, inst *Instance) *Instance {
	inst.kill = vmmproc.Supervise(cmd, "firecracker", inst.finish)
	return inst
}

// finish records the exit, removes the sockets the dead process left
// behind, and only then closes done, so a relaunch that waits on Done never
// races the cleanup.
func (i *Instance) finish(st vmm.ExitStatus) {
	for _, p := range []string{i.layout.apiSock, i.spec.Agent.UDSPath} {
		if p == "" {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			i.log.Warn("remove socket of exited firecracker", "path", p, "err", err)
		}
	}
	if i.cleanup != nil {
		i.cleanup()
	}
	i.exit = st
	i.log.Info("firecracker exited", "status", st.String())
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
		return vmm.ExitStatus{Code: -1, Err: "firecracker is still running"}
	}
}

// Client is the API client for this VMM, for calls the Instance does not wrap.
func (i *Instance) Client() *Client { return i.client }

// Stop sends Ctrl-Alt-Del so the guest shuts down cleanly (Firecracker
// exits when the guest reboots), waits up to timeout (the driver's
// StopTimeout if zero), then kills the process. It returns only once the
// process is gone. If the request cannot be delivered the process is killed
// at once: waiting could not help.
func (i *Instance) Stop(ctx context.Context, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = i.stopTimeout
	}
	select {
	case <-i.done:
		return nil
	default:
	}
	actx, cancel := context.WithTimeout(ctx, ctrlAltDelTimeout)
	err := i.client.SendCtrlAltDel(actx)
	cancel()
	if err != nil {
		i.log.Warn("Ctrl-Alt-Del not delivered; killing firecracker", "err", err)
		return i.Kill()
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-i.done:
		return nil
	case <-t.C:
		i.log.Warn("guest ignored Ctrl-Alt-Del; killing firecracker", "timeout", timeout)
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
		return fmt.Errorf("kill firecracker pid %d: %w", i.pid, err)
	}
	<-i.done
	return nil
}

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

// CreateSnapshot writes a full snapshot of a paused VM to statePath and
// memPath (host paths; inside the jail when jailed).
func (i *Instance) CreateSnapshot(ctx context.Context, statePath, memPath string) error {
	tr := &jailPaths{l: i.layout}
	p := SnapshotCreateParams{SnapshotPath: tr.path(statePath), MemFilePath: tr.path(memPath), SnapshotType: SnapshotFull}
	if tr.firstErr != nil {
		return fmt.Errorf("snapshot vm %q: %w", i.spec.Name, tr.firstErr)
	}
	if err := i.client.CreateSnapshot(ctx, p); err != nil {
		return fmt.Errorf("snapshot vm %q: %w", i.spec.Name, err)
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
