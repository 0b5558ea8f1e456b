package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/ssh"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
)

// access serves the commands that reach into a running VM: exec, cp, sync,
// and the facts `vm ssh` and `ssh-config` need. It talks to each guest
// over one agent session that it keeps while the VM runs (on QEMU's
// virtio-serial there is only one stream to share).
type access struct {
	m    *vmManager
	pool *agentPool
}

// registerAccess adds the access methods to the API server.
func (d *Daemon) registerAccess(s *api.Server) {
	a := &access{m: d.vms, pool: newAgentPool(d.log)}
	api.HandleUpgrade(s, api.MethodVMExec, api.UpgradeExec, a.exec)
	api.HandleUpgrade(s, api.MethodVMCopy, api.UpgradeCopy, a.copy)
	api.Handle(s, api.MethodVMSync, a.sync)
	api.Handle(s, api.MethodVMSSHInfo, a.sshInfo)
	api.Handle(s, api.MethodSSHConfig, a.sshConfig)
}

// guest is a running VM with its agent session.
type guest struct {
	vm     store.VM
	client *agent.Client
	login  string
}

// running looks up a VM that must be running and returns its agent session.
func (a *access) running(ctx context.Context, name string) (guest, error) {
	vm, err := a.m.get(ctx, name)
	if err != nil {
		return guest{}, err
	}
	inst := a.m.instance(vm.ID)
	if vm.State != store.VMRunning || inst == nil {
		return guest{}, api.Errorf(api.CodeFailedPrecondition, "vm %q is %s, not running", vm.Name, vm.State).
			WithHint("start it with `banger vm start " + vm.Name + "`")
	}
	s, err := a.pool.session(ctx, vm.ID, inst)
	if err != nil {
		return guest{}, api.Errorf(api.CodeUnavailable, "vm %q: cannot reach its guest agent: %v", vm.Name, err).
			WithHint("`banger vm logs " + vm.Name + "` shows the guest console")
	}
	return guest{vm: vm, client: s.client, login: s.login}, nil
}

// agentError turns an agent refusal into the API error a user reads.
func agentError(vmName string, err error) error {
	var remote *agent.RemoteError
	if !errors.As(err, &remote) {
		return api.Errorf(api.CodeUnavailable, "vm %q: guest agent: %v", vmName, err)
	}
	code := api.CodeFailedPrecondition
	switch remote.Code {
	case agent.CodeNotFound, agent.CodeNoUser:
		code = api.CodeNotFound
	case agent.CodeInvalid, agent.CodeTooLarge:
		code = api.CodeInvalidArgument
	}
	return api.Errorf(code, "vm %q: %s", vmName, remote.Message)
}

func (a *access) exec(ctx context.Context, req api.VMExecRequest) (api.Relay, error) {
	g, err := a.running(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	user := req.User
	if user == "" {
		user = g.login
	}
	stream, err := g.client.Open(ctx, agent.Request{Op: agent.OpExec, Exec: &agent.ExecRequest{
		Argv: req.Argv, Env: req.Env, Dir: req.Dir, User: user,
		TTY: req.TTY, Rows: req.Rows, Cols: req.Cols, Term: req.Term,
	}})
	if err != nil {
		return nil, agentError(g.vm.Name, err)
	}
	return relayTo(stream), nil
}

func (a *access) copy(ctx context.Context, req api.VMCopyRequest) (api.Relay, error) {
	var op agent.Request
	switch req.Direction {
	case api.CopyToVM:
		op = agent.Request{Op: agent.OpPut, Put: &agent.PutRequest{Path: req.Path, Name: req.BaseName, PreserveOwner: req.PreserveOwner}}
	case api.CopyFromVM:
		op = agent.Request{Op: agent.OpGet, Get: &agent.GetRequest{Path: req.Path, MaxBytes: req.MaxBytes}}
	default:
		return nil, api.Errorf(api.CodeInvalidArgument, "copy direction %q: use %q or %q", req.Direction, api.CopyToVM, api.CopyFromVM)
	}
	if req.Path == "" {
		return nil, api.Errorf(api.CodeInvalidArgument, "no guest path given")
	}
	g, err := a.running(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	user := req.User
	if user == "" {
		user = g.login
	}
	if op.Put != nil {
		op.Put.User = user
	} else {
		op.Get.User = user
	}
	stream, err := g.client.Open(ctx, op)
	if err != nil {
		return nil, agentError(g.vm.Name, err)
	}
	return relayTo(stream), nil
}

// relayTo splices the client's switched connection to an agent stream until
// either side is done. The CLI going away closes the agent stream, which
// makes the agent kill a process still running.
func relayTo(stream net.Conn) api.Relay {
	return func(conn io.ReadWriteCloser) {
		done := make(chan struct{})
		go func() {
			_, _ = io.Copy(stream, conn)
			stream.Close()
			close(done)
		}()
		_, _ = io.Copy(conn, stream)
		conn.Close()
		<-done
		stream.Close()
	}
}

func (a *access) sync(ctx context.Context, req api.VMSyncRequest, p api.Progress) (api.VMSyncResult, error) {
	g, err := a.running(ctx, req.Name)
	if err != nil {
		return api.VMSyncResult{}, err
	}
	paths := req.Paths
	if len(paths) == 0 {
		paths = configuredSyncPaths(a.m.d.opts.Config)
	}
	if len(paths) == 0 {
		return api.VMSyncResult{Synced: []api.SyncedPath{}}, api.Errorf(api.CodeInvalidArgument, "nothing to sync: no paths given and none configured").
			WithHint("list paths under [sync] in the config (`banger config defaults` shows the key), or name them: `banger vm sync " + g.vm.Name + " ~/.gitconfig`")
	}
	return syncFiles(ctx, g.client, g.login, currentOwner().Home, paths, g.vm.Name, p), nil
}

func (a *access) sshInfo(ctx context.Context, req api.VMRef, _ api.Progress) (api.VMSSHInfo, error) {
	vm, err := a.m.get(ctx, req.Name)
	if err != nil {
		return api.VMSSHInfo{}, err
	}
	view, err := a.m.view(ctx, vm.ID)
	if err != nil {
		return api.VMSSHInfo{}, err
	}
	keyPath := ssh.KeyPath(a.m.d.opts.Layout.OwnerDir())
	if _, err := ssh.EnsureKey(keyPath, "banger:"+currentOwner().Name); err != nil {
		return api.VMSSHInfo{}, fmt.Errorf("SSH key: %w", err)
	}
	info := api.VMSSHInfo{
		Name: vm.Name, State: view.State, IP: view.IP, DNSName: view.DNSName,
		KeyPath: keyPath, KnownHostsPath: ssh.KnownHostsPath(a.m.d.opts.Layout.OwnerDir()),
	}
	if g, err := a.running(ctx, req.Name); err == nil {
		info.User = g.login
	}
	return info, nil
}

func (a *access) sshConfig(ctx context.Context, _ struct{}, _ api.Progress) (api.SSHConfig, error) {
	o := currentOwner()
	dir := a.m.d.opts.Layout.OwnerDir()
	if _, err := ssh.EnsureKey(ssh.KeyPath(dir), "banger:"+o.Name); err != nil {
		return api.SSHConfig{}, fmt.Errorf("SSH key: %w", err)
	}
	domain := a.m.d.opts.Config.Network.Domain
	cfg := api.SSHConfig{Domain: domain, User: o.Name, KeyPath: ssh.KeyPath(dir), KnownHostsPath: ssh.KnownHostsPath(dir)}
	cfg.Block = ssh.ConfigBlock(domain, o.Name, cfg.KeyPath, cfg.KnownHostsPath)
	return cfg, nil
}

// agentPool keeps one agent session per running VM, opened on first use
// and dropped when the VM's VMM exits or the session fails.
type agentPool struct {
	log *slog.Logger
	mu  sync.Mutex
	vms map[string]*pooled
}

type pooled struct {
	mu     sync.Mutex // held while dialing, so callers wait for one dial
	inst   vmm.Instance
	client *agent.Client
	login  string
}

func newAgentPool(log *slog.Logger) *agentPool {
	return &agentPool{log: log, vms: map[string]*pooled{}}
}

type session struct {
	client *agent.Client
	login  string
}

// session returns the live session to VM id's agent on inst, dialing one if
// there is none (or the one there belongs to an earlier VMM process).
func (p *agentPool) session(ctx context.Context, id string, inst vmm.Instance) (session, error) {
	p.mu.Lock()
	e, ok := p.vms[id]
	if !ok {
		e = &pooled{}
		p.vms[id] = e
	}
	p.mu.Unlock()

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.client != nil && e.inst == inst {
		select {
		case <-e.client.Done():
		default:
			return session{e.client, e.login}, nil
		}
	}
	if e.client != nil {
		_ = e.client.Close()
		e.client = nil
	}
	dialer, ok := inst.(vmm.AgentDialer)
	if !ok {
		return session{}, errors.New("this VMM driver cannot reach a guest agent")
	}
	conn, err := dialer.DialAgent(ctx)
	if err != nil {
		return session{}, err
	}
	c, err := agent.NewClient(ctx, conn)
	if err != nil {
		conn.Close()
		return session{}, err
	}
	info, err := c.GuestInfo(ctx)
	if err != nil {
		_ = c.Close()
		return session{}, err
	}
	e.inst, e.client, e.login = inst, c, loginUser(info, currentOwner().Name)
	go p.watch(id, e, inst, c)
	return session{c, e.login}, nil
}

// watch closes the session when the VMM exits, so the stream (and a
// virtio-serial slot) is not held for a VM that is gone.
func (p *agentPool) watch(id string, e *pooled, inst vmm.Instance, c *agent.Client) {
	select {
	case <-inst.Done():
	case <-c.Done():
	}
	_ = c.Close()
	p.mu.Lock()
	e.mu.Lock()
	if e.client == c {
		e.client, e.inst = nil, nil
	}
	if e.client == nil && p.vms[id] == e {
		delete(p.vms, id)
	}
	e.mu.Unlock()
	p.mu.Unlock()
	p.log.Debug("agent session closed", "vm_id", id)
}
