package firecracker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

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
	pid := proc.PID
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if pid <= 0 {
		return nil, fmt.Errorf("invalid pid: %w", ErrNotThisVMM)
	}
	l, err := d.layoutFor(spec)
	if err != nil {
		return nil, err
	}
	if l.jailRoot != "" && spec.Agent.UDSPath != "" {
		// A jailed Firecracker made the vsock socket in its jail root.
		spec.Agent.UDSPath = jailedVsock(l)
	}
	// Open the pidfd first: it pins this exact process, so the command
	// line read next cannot belong to a successor that reused the pid.
	pf, err := vmmproc.OpenPidfd(pid)
	if errors.Is(err, unix.ESRCH) {
		return nil, fmt.Errorf("process is gone: %w", ErrNotThisVMM)
	}
	if err != nil {
		return nil, fmt.Errorf("pidfd_open: %w", err)
	}
	if err := checkCmdline(pid, l.apiSockArg, spec.VMID); err != nil {
		pf.Close()
		return nil, err
	}
	started, err := vmmproc.CheckStarted(proc, ErrNotThisVMM)
	if err != nil {
		pf.Close()
		return nil, err
	}
	if pf.Exited() {
		pf.Close()
		return nil, fmt.Errorf("process exited while attaching: %w", ErrNotThisVMM)
	}
	inst := d.newInstance(spec, l, pid)
	inst.started = started
	inst.kill = pf.Kill
	if l.jailRoot != "" {
		inst.cleanup = func() { d.removeJail(spec) }
	}
	go watchPidfd(inst, pf, "adopted")
	return inst, nil
}

// watchPidfd finishes inst once the process behind pf exits. Not our child,
// so how it ended is unknown.
func watchPidfd(inst *Instance, pf *vmmproc.Pidfd, what string) {
	err := pf.Wait()
	pf.Close()
	st := vmm.ExitStatus{Code: -1, NotChild: true}
	if err != nil {
		st.Err = fmt.Sprintf("watch %s firecracker: %v", what, err)
	}
	inst.finish(st)
}

// checkCmdline verifies /proc/<pid>/cmdline names apiSock and vmID. The
// jailer passes "--id=<id>", banger passes "--id <id>"; both are accepted.
func checkCmdline(pid int, apiSock, vmID string) error {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("process is gone: %w", ErrNotThisVMM)
	}
	if err != nil {
		return fmt.Errorf("read command line: %w", err)
	}
	args := strings.Split(string(bytes.TrimRight(raw, "\x00")), "\x00")
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
