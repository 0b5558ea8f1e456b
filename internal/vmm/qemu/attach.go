package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/vmm"
)

// ErrNotThisVMM means the pid given to Attach is gone or is not the QEMU
// process of the spec's VM.
var ErrNotThisVMM = errors.New("process is not this VM's qemu")

// Attach adopts a QEMU process left running by an earlier daemon. The
// process must still run and its command line must carry this VM's id as
// the guest name and its QMP socket; anything else is refused, so a
// recycled pid is never mistaken for a VM. The agent transport is read
// from the command line, since it was decided when the process started.
// Since the process is not our child, its exit is observed through a pidfd
// and its exit code is unknown (-1).
func (d *Driver) Attach(ctx context.Context, spec vmm.LaunchSpec, pid int) (vmm.Instance, error) {
	inst, err := d.attach(ctx, spec, pid)
	if err != nil {
		return nil, fmt.Errorf("attach qemu pid %d for vm %q: %w", pid, spec.Name, err)
	}
	return inst, nil
}

func (d *Driver) attach(ctx context.Context, spec vmm.LaunchSpec, pid int) (*Instance, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if pid <= 0 {
		return nil, fmt.Errorf("invalid pid: %w", ErrNotThisVMM)
	}
	if spec.RunDir == "" || spec.VMID == "" {
		return nil, errors.New("launch spec is missing vm_id or run_dir")
	}
	// Open the pidfd first: it pins this exact process, so the command
	// line read next cannot belong to a successor that reused the pid.
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if errors.Is(err, unix.ESRCH) {
		return nil, fmt.Errorf("process is gone: %w", ErrNotThisVMM)
	}
	if err != nil {
		return nil, fmt.Errorf("pidfd_open: %w", err)
	}
	pf := &pidfd{fd: fd}
	l := layoutFor(spec, "")
	args, err := d.cmdline(pid)
	if err == nil {
		err = checkCmdline(args, spec.VMID, l.qmpSock)
	}
	if err != nil {
		pf.close()
		return nil, err
	}
	tr, agentSock := agentFromCmdline(args)
	l.agentSock = agentSock
	if pf.exited() {
		pf.close()
		return nil, fmt.Errorf("process exited while attaching: %w", ErrNotThisVMM)
	}
	inst := d.newInstance(spec, l, tr, pid)
	inst.kill = pf.kill
	go func() {
		err := pf.wait()
		pf.close()
		st := vmm.ExitStatus{Code: -1}
		if err != nil {
			st.Err = fmt.Sprintf("watch adopted qemu: %v", err)
		}
		inst.finish(st)
	}()
	return inst, nil
}

// cmdline reads /proc/<pid>/cmdline.
func (d *Driver) cmdline(pid int) ([]string, error) {
	raw, err := os.ReadFile(d.cfg.Host.proc(strconv.Itoa(pid), "cmdline"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("process is gone: %w", ErrNotThisVMM)
	}
	if err != nil {
		return nil, fmt.Errorf("read command line: %w", err)
	}
	return strings.Split(string(bytes.TrimRight(raw, "\x00")), "\x00"), nil
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

// pidfd watches and signals a process that is not our child. The mutex
// keeps kill from using the descriptor after the watcher closed it.
type pidfd struct {
	mu     sync.Mutex
	fd     int
	closed bool
}

// wait blocks until the process exits: a pidfd polls readable then. It
// holds one OS thread per adopted VM, which is fine for a workstation's
// handful of VMs.
func (p *pidfd) wait() error {
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll pidfd: %w", err)
		}
		if n > 0 {
			return nil
		}
	}
}

// exited reports, without blocking, whether the process has exited.
func (p *pidfd) exited() bool {
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}

func (p *pidfd) kill() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil // already exited
	}
	err := unix.PidfdSendSignal(p.fd, unix.SIGKILL, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

func (p *pidfd) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		unix.Close(p.fd)
		p.closed = true
	}
}
