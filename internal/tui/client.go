package tui

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/ssh"
)

// Client is the part of the daemon API the TUI uses. *api.Client satisfies
// it; tests use a hand-written fake.
type Client interface {
	DaemonInfo(ctx context.Context) (api.DaemonInfo, error)
	VMList(ctx context.Context) ([]api.VM, error)
	VMShow(ctx context.Context, name string) (api.VM, error)
	VMCreate(ctx context.Context, req api.VMCreateRequest, onEvent func(api.Event)) (api.VM, error)
	VMStart(ctx context.Context, name string, onEvent func(api.Event)) (api.VM, error)
	VMStop(ctx context.Context, req api.VMStopRequest, onEvent func(api.Event)) (api.VM, error)
	VMRestart(ctx context.Context, name string, onEvent func(api.Event)) (api.VM, error)
	VMDelete(ctx context.Context, req api.VMDeleteRequest, onEvent func(api.Event)) error
	VMPause(ctx context.Context, name string) (api.VM, error)
	VMResume(ctx context.Context, name string) (api.VM, error)
	VMSnapshot(ctx context.Context, req api.VMSnapshotRequest, onEvent func(api.Event)) (api.Snapshot, error)
	VMLogs(ctx context.Context, req api.VMLogsRequest) (api.VMLogs, error)
	VMExec(ctx context.Context, req api.VMExecRequest) (*agent.Process, error)
	VMSSHInfo(ctx context.Context, name string) (api.VMSSHInfo, error)
	ImageList(ctx context.Context) ([]api.Image, error)
	ImageDelete(ctx context.Context, name string) error
	ImageBuild(ctx context.Context, req api.ImageBuildRequest, onEvent func(api.Event)) (api.Image, error)
	WatchEvents(ctx context.Context, onEvent func(api.Event)) error
}

// execResult is one finished exec: what the exec screen shows.
type execResult struct {
	ExitCode int
	Stdout   string
	Stderr   string
}

// maxExecOutput bounds each output stream an exec keeps for the screen:
// the guest decides how much it writes, the TUI decides how much it holds.
const maxExecOutput = 1 << 20

// runExec runs command through the guest's shell so the user can type a
// command line as they would in ssh. The command gets no input (its stdin
// is closed at once), so one that reads stdin cannot hang the screen.
func runExec(ctx context.Context, c Client, name, command string) (execResult, error) {
	p, err := c.VMExec(ctx, api.VMExecRequest{Name: name, Argv: []string{"/bin/sh", "-c", command}})
	if err != nil {
		return execResult{}, err
	}
	defer func() { _ = p.Close() }()
	// Closing the stream is how a canceled exec (quit) kills the command.
	stop := context.AfterFunc(ctx, func() { _ = p.Close() })
	defer stop()
	if err := p.CloseStdin(); err != nil {
		return execResult{}, fmt.Errorf("vm %q: %w", name, err)
	}
	stdout, stderr := &agent.CappedWriter{Limit: maxExecOutput}, &agent.CappedWriter{Limit: maxExecOutput}
	st, err := p.Wait(stdout, stderr)
	if err != nil {
		return execResult{}, fmt.Errorf("vm %q: %w", name, err)
	}
	errText := shown(stderr)
	if st.Error != "" {
		errText += "banger: " + st.Error + "\n"
	}
	return execResult{ExitCode: st.ShellCode(), Stdout: shown(stdout), Stderr: errText}, nil
}

// shown is what the screen shows of one output stream: what was kept, and
// how much more there was.
func shown(w *agent.CappedWriter) string {
	if !w.Cut() {
		return w.Text()
	}
	kept := w.Text()
	return fmt.Sprintf("%s\n[… %d more bytes not shown]\n", kept, w.Total()-int64(len(kept)))
}

// sshInfoTimeout bounds the question asked before a shell opens, so a
// daemon that does not answer leaves Enter with an answer (the agent shell,
// whose own error then says what is wrong) instead of none.
const sshInfoTimeout = 5 * time.Second

// sshReady reports whether `banger vm ssh` can reach the VM: it has an
// address, and banger pinned its SSH host key at boot, which happens only
// when the guest runs an sshd (a busybox guest has none). Anything that
// cannot be checked counts as not ready: the agent shell works regardless.
func sshReady(ctx context.Context, c Client, vm api.VM) bool {
	ctx, cancel := context.WithTimeout(ctx, sshInfoTimeout)
	defer cancel()
	info, err := c.VMSSHInfo(ctx, vm.Name)
	if err != nil || info.IP == "" || info.KnownHostsPath == "" {
		return false
	}
	keys, err := ssh.KnownHosts{Path: info.KnownHostsPath}.Pinned(vm.ID)
	return err == nil && len(keys) > 0
}

// isUnknownMethod reports whether the daemon answered that it has no such
// API method, as opposed to "no such VM", which shares the not_found code.
func isUnknownMethod(err error) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Code == api.CodeNotFound && strings.HasPrefix(ae.Message, "unknown API method")
}
