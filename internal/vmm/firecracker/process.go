package firecracker

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmproc"
)

// command builds the VMM command line. stdout and stderr go to the serial
// log: Firecracker writes the guest's serial console to its stdout.
func (d *Driver) command(spec vmm.LaunchSpec, l layout) *exec.Cmd {
	cmd := exec.Command(d.cfg.BinaryPath, "--api-sock", l.apiSockArg, "--id", spec.VMID)
	if len(d.cfg.ExtraEnv) > 0 {
		cmd.Env = append(os.Environ(), d.cfg.ExtraEnv...)
	}
	// Its own process group keeps terminal signals aimed at the daemon
	// (Ctrl-C in user mode) away from the VMs; they must outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.ExtraFiles = spec.HeldFiles
	return cmd
}

// start runs cmd with its output appended to the serial log and begins
// reaping it.
func (d *Driver) start(cmd *exec.Cmd, spec vmm.LaunchSpec, l layout) (*Instance, error) {
	serial, err := os.OpenFile(spec.SerialLogPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, fmt.Errorf("open serial log: %w", err)
	}
	defer serial.Close() // the child keeps its own copy
	cmd.Stdout, cmd.Stderr = serial, serial
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
	inst := d.newInstance(spec, l, cmd.Process.Pid)
	inst.started = started
	return newChildInstance(cmd, inst), nil
}

// newInstance is called once a process exists (started, jailed or
// adopted), and the caller closes done when it exits.
func (d *Driver) newInstance(spec vmm.LaunchSpec, l layout, pid int) *Instance {
	inst := &Instance{
		pid:         pid,
		spec:        spec,
		layout:      l,
		client:      NewClient(l.apiSock),
		stopTimeout: d.cfg.StopTimeout,
		log:         d.cfg.Logger.With("vm", spec.Name, "pid", pid),
		done:        make(chan struct{}),
	}
	// The guest writes the console; hold it to the cap while the VMM runs.
	go vmmproc.CapLog(inst.done, spec.SerialLogPath, d.cfg.ConsoleLogMax, inst.log)
	return inst
}

// waitForAPI polls GET / with backoff until Firecracker answers, the
// process dies, APIReadyTimeout passes or ctx ends.
func (d *Driver) waitForAPI(ctx context.Context, inst *Instance, spec vmm.LaunchSpec) error {
	parent := ctx
	ctx, cancel := context.WithTimeout(parent, d.cfg.APIReadyTimeout)
	defer cancel()
	// Poll tightly at first: a refused connect costs microseconds, and every
	// millisecond here is on the create-to-running path. Back off only once
	// the VMM is clearly slow.
	delay, start := 2*time.Millisecond, time.Now()
	var lastErr error
	for {
		_, lastErr = inst.client.InstanceInfo(ctx)
		if lastErr == nil {
			return nil
		}
		select {
		case <-inst.done:
			return fmt.Errorf("firecracker %s before its API answered%s", inst.Exit(), vmmproc.LogTail(spec.SerialLogPath))
		case <-ctx.Done():
			if err := parent.Err(); err != nil {
				return err
			}
			return fmt.Errorf("%s did not answer within %v (last error: %v)%s", inst.layout.apiSock, d.cfg.APIReadyTimeout, lastErr, vmmproc.LogTail(spec.SerialLogPath))
		case <-time.After(delay):
		}
		if time.Since(start) > 250*time.Millisecond {
			delay = min(delay*2, 200*time.Millisecond)
		}
	}
}
