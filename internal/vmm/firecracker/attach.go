package firecracker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmproc"
)

// ErrNotThisVMM means the pid given to Attach is gone or is not the
// Firecracker process of the spec's VM.
var ErrNotThisVMM = errors.New("process is not this VM's firecracker")

// Attach adopts a Firecracker process left running by an earlier daemon.
// The process must still run and its command line must carry this VM's
// --api-sock and --id; anything else is refused, so a recycled pid is never
// mistaken for a VM; so is a process that started at another time than
// proc.StartTime, when that is known. Since the process is not our child,
// its exit is observed through a pidfd and how it ended is unknown.
func (d *Driver) Attach(ctx context.Context, spec vmm.LaunchSpec, proc vmm.Process) (vmm.Instance, error) {
	inst, err := d.attach(ctx, spec, proc)
	if err != nil {
		return nil, fmt.Errorf("attach firecracker pid %d for vm %q: %w", proc.PID, spec.Name, err)
	}
	return inst, nil
}

func (d *Driver) attach(ctx context.Context, spec vmm.LaunchSpec, proc vmm.Process) (*Instance, error) {
	l, err := d.layoutFor(spec)
	if err != nil {
		return nil, err
	}
	if l.jailRoot != "" && spec.Agent.UDSPath != "" {
		// A jailed Firecracker made the vsock socket in its jail root.
		spec.Agent.UDSPath = jailedVsock(l)
	}
	p, _, err := vmmproc.Recognize(ctx, proc, ErrNotThisVMM, func(args []string) error {
		return checkCmdline(args, l.apiSockArg, spec.VMID)
	})
	if err != nil {
		return nil, err
	}
	return d.newInstance(spec, l, func(cfg vmmproc.Config) (*vmmproc.Supervisor, error) {
		return p.Supervise(cfg), nil
	})
}

// checkCmdline verifies a command line names apiSock and vmID. The jailer
// passes "--id=<id>", banger passes "--id <id>"; both are accepted.
func checkCmdline(args []string, apiSock, vmID string) error {
	if flagValue(args, "--api-sock") != apiSock || flagValue(args, "--id") != vmID {
		return fmt.Errorf("command line %q does not have --api-sock %s --id %s: %w", strings.Join(args, " "), apiSock, vmID, ErrNotThisVMM)
	}
	return nil
}

// flagValue returns the value of name in args, written "name value" or
// "name=value"; empty if absent.
func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}
