package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmproc"
)

// ErrSocketInUse means a socket path is bound by a live process, most
// likely another QEMU for the same VM.
var ErrSocketInUse = errors.New("socket is in use by a running process")

// start runs QEMU with its stdout and stderr appended to the VMM log (the
// serial log when the spec has none) and begins reaping it.
func (d *Driver) start(spec vmm.LaunchSpec, p plan, args []string) (*Instance, error) {
	cmd := exec.Command(d.cfg.BinaryPath, args...)
	// Its own process group keeps terminal signals aimed at the daemon
	// (Ctrl-C in user mode) away from the VMs; they must outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.ExtraFiles = spec.HeldFiles
	logPath := vmmLogPath(spec)
	out, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, fmt.Errorf("open vmm log: %w", err)
	}
	defer out.Close() // the child keeps its own copy
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	// Read before the reaper starts: until then even a dead child's
	// /proc entry stays.
	started, err := vmmproc.StartTime(cmd.Process.Pid)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, err
	}
	inst := d.newInstance(spec, p.layout, p.opts.Transport, cmd.Process.Pid)
	inst.started = started
	return newChildInstance(cmd, inst), nil
}

func vmmLogPath(spec vmm.LaunchSpec) string {
	if spec.VMMLogPath != "" {
		return spec.VMMLogPath
	}
	return spec.SerialLogPath
}

func (d *Driver) newInstance(spec vmm.LaunchSpec, l layout, tr Transport, pid int) *Instance {
	var serial *serialChannel
	if tr == TransportSerial && l.agentSock != "" {
		serial = newSerialChannel(l.agentSock)
	}
	inst := &Instance{
		pid:         pid,
		spec:        spec,
		layout:      l,
		transport:   tr,
		stopTimeout: d.cfg.StopTimeout,
		log:         d.cfg.Logger.With("vm", spec.Name, "pid", pid),
		done:        make(chan struct{}),
		serial:      serial,
	}
	// The guest writes the console; hold it to the cap while the VMM runs
	// (the caller closes done when the process exits).
	go vmmproc.CapLog(inst.done, spec.SerialLogPath, d.cfg.ConsoleLogMax, inst.log)
	return inst
}

// waitForQMP polls the QMP socket until QEMU answers query-status with a
// running guest, the process dies, QMPReadyTimeout passes or ctx ends.
func (d *Driver) waitForQMP(ctx context.Context, inst *Instance, spec vmm.LaunchSpec) error {
	parent := ctx
	ctx, cancel := context.WithTimeout(parent, d.cfg.QMPReadyTimeout)
	defer cancel()
	// Tight polling first: a refused connect costs microseconds, and QEMU
	// usually listens within a few tens of milliseconds.
	delay, start := 2*time.Millisecond, time.Now()
	var lastErr error
	for {
		var st Status
		st, lastErr = inst.Status(ctx)
		if lastErr == nil {
			if st.Running {
				return nil
			}
			lastErr = fmt.Errorf("guest is %s, not running", st.Status)
		}
		select {
		case <-inst.done:
			return fmt.Errorf("qemu %s before QMP answered%s", inst.Exit(), vmmproc.LogTail(vmmLogPath(spec)))
		case <-ctx.Done():
			if err := parent.Err(); err != nil {
				return err
			}
			return fmt.Errorf("%s did not answer within %v (last error: %v)%s", inst.layout.qmpSock, d.cfg.QMPReadyTimeout, lastErr, vmmproc.LogTail(vmmLogPath(spec)))
		case <-time.After(delay):
		}
		if time.Since(start) > 250*time.Millisecond {
			delay = min(delay*2, 200*time.Millisecond)
		}
	}
}
