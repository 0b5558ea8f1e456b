package qemu

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmproc"
)

// ErrNotThisVMM means the pid given to Attach is gone or is not the QEMU
// process of the spec's VM.
var ErrNotThisVMM = errors.New("process is not this VM's qemu")

// Attach adopts a QEMU process left running by an earlier daemon. The
// process must still run and its command line must carry this VM's id as
// the guest name and its QMP socket; anything else is refused, so a
// recycled pid is never mistaken for a VM. The agent transport is read
// from the command line, since it was decided when the process started.
// A process that started at another time than proc.StartTime, when that is
// known, is refused too. Since the process is not our child, its exit is
// observed through a pidfd and how it ended is unknown.
func (d *Driver) Attach(ctx context.Context, spec vmm.LaunchSpec, proc vmm.Process) (vmm.Instance, error) {
	inst, err := d.attach(ctx, spec, proc)
	if err != nil {
		return nil, fmt.Errorf("attach qemu pid %d for vm %q: %w", proc.PID, spec.Name, err)
	}
	return inst, nil
}

func (d *Driver) attach(ctx context.Context, spec vmm.LaunchSpec, proc vmm.Process) (*Instance, error) {
	if spec.RunDir == "" || spec.VMID == "" {
		return nil, errors.New("launch spec is missing vm_id or run_dir")
	}
	l := layoutFor(spec, "")
	p, args, err := vmmproc.Recognize(ctx, proc, ErrNotThisVMM, func(args []string) error {
		return checkCmdline(args, spec.VMID, l.qmpSock)
	})
	if err != nil {
		return nil, err
	}
	tr, agentSock := agentFromCmdline(args)
	l.agentSock = agentSock
	opts := Options{Accel: Accel(argAfter(args, "-accel")), Transport: tr}
	return d.newInstance(spec, l, opts, func(cfg vmmproc.Config) (*vmmproc.Supervisor, error) {
		return p.Supervise(cfg), nil
	})
}

// checkCmdline verifies args are what Args wrote for vmID and qmpSock.
func checkCmdline(args []string, vmID, qmpSock string) error {
	name := argAfter(args, "-name")
	qmp := chardevPath(args, "qmp")
	if name != "guest="+esc(vmID) || qmp != qmpSock {
		return fmt.Errorf("command line %q does not name guest %s with QMP socket %s: %w", strings.Join(args, " "), vmID, qmpSock, ErrNotThisVMM)
	}
	return nil
}

// agentFromCmdline says which agent transport args configured and, for
// virtio-serial, its socket.
func agentFromCmdline(args []string) (Transport, string) {
	for i, a := range args {
		if i == 0 || args[i-1] != "-device" {
			continue
		}
		switch {
		case strings.HasPrefix(a, "vhost-vsock-device,"):
			return TransportVsock, ""
		case strings.HasPrefix(a, "virtserialport,"):
			return TransportSerial, chardevPath(args, "agent")
		}
	}
	return "", ""
}

func argAfter(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// chardevPath returns the unescaped path= of the socket chardev with id.
func chardevPath(args []string, id string) string {
	for i, a := range args {
		if i == 0 || args[i-1] != "-chardev" {
			continue
		}
		opts := splitOpts(a)
		if len(opts) == 0 || opts[0] != "socket" {
			continue
		}
		var gotID, path string
		for _, o := range opts[1:] {
			if v, ok := strings.CutPrefix(o, "id="); ok {
				gotID = v
			}
			if v, ok := strings.CutPrefix(o, "path="); ok {
				path = v
			}
		}
		if gotID == id {
			return path
		}
	}
	return ""
}

// splitOpts splits a QEMU option string at single commas and unescapes
// doubled ones.
func splitOpts(s string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != ',' {
			cur.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == ',' {
			cur.WriteByte(',')
			i++
			continue
		}
		out = append(out, cur.String())
		cur.Reset()
	}
	return append(out, cur.String())
}
