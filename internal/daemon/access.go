package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/lifecycle"
	"github.com/banger-dev/banger/internal/ssh"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
)

// access serves the commands that reach into a running VM: exec, cp, sync,
// and the facts `vm ssh` and `ssh-config` need. It talks to each guest
// over one agent session that it keeps while the VM runs (on QEMU's
// virtio-serial there is only one stream to share).
type access struct {
	m    *vmManager // finds VMs, their VMMs and how they look on the API
	pool *agentPool
	ttl  *lifetimes // nil: activity is not tracked
	// ownerDir holds the owner's SSH key and known_hosts; domain is the
	// VMs' DNS domain; syncPaths what `vm sync` copies when given nothing
	// (config [sync] paths).
	ownerDir  string
	domain    string
	syncPaths []string
}

// registerAccess adds the access methods to the API server.
func (d *Daemon) registerAccess(s *api.Server) {
	a := &access{
		m: d.vms, pool: newAgentPool(d.log), ttl: d.ttl,
		ownerDir: d.opts.Layout.OwnerDir(), domain: d.opts.Config.Network.Domain,
		syncPaths: configuredSyncPaths(d.opts.Config),
	}
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
	if vm.State == lifecycle.Paused {
		return guest{}, pausedError(vm.Name)
	}
	inst := a.m.instance(vm.ID)
	if vm.State != lifecycle.Running || inst == nil {
		return guest{}, api.Errorf(api.CodeFailedPrecondition, "vm %q is %s, not running", vm.Name, vm.State).
			WithHint("start it with `banger vm start " + vm.Name + "`")
	}
	s, err := a.pool.session(ctx, vm.ID, inst)
	if err != nil {
		return guest{}, agentUnreachable(vm.Name, err, a.pool.answerTimeout)
	}
	a.ttl.touch(vm.ID)
	return guest{vm: vm, client: s.client, login: s.login}, nil
}

// pausedError refuses to reach into a paused VM: its guest answers nothing
// until resumed, so the call would only hang.
func pausedError(name string) error {
	return api.Errorf(api.CodeFailedPrecondition, "vm %s is paused; `banger vm resume %s` resumes it", name, name)
}

// agentUnreachable is the API error for a session that could not be had.
func agentUnreachable(vmName string, err error, timeout time.Duration) error {
	hint := "`banger vm logs " + vmName + "` shows the guest console"
	if errors.Is(err, errAgentSilent) {
		return api.Errorf(api.CodeUnavailable, "the guest agent of vm %q did not answer within %v; the VM may be overloaded or its agent stopped", vmName, timeout).
			WithHint(hint)
	}
	return api.Errorf(api.CodeUnavailable, "vm %q: cannot reach its guest agent: %v", vmName, err).WithHint(hint)
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
	req = a.m.withImageDefaults(ctx, g.vm, req)
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
	return a.ttl.during(g.vm.ID, relayTo(stream)), nil
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
	return a.ttl.during(g.vm.ID, relayTo(stream)), nil
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
		paths = a.syncPaths
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
	if vm.State == lifecycle.Paused {
		return api.VMSSHInfo{}, pausedError(vm.Name)
	}
	a.ttl.touch(vm.ID)
	view, err := a.m.view(ctx, vm.ID)
	if err != nil {
		return api.VMSSHInfo{}, err
	}
	keyPath := ssh.KeyPath(a.ownerDir)
	if _, err := ssh.EnsureKey(keyPath, "banger:"+currentOwner().Name); err != nil {
		return api.VMSSHInfo{}, fmt.Errorf("SSH key: %w", err)
	}
	knownHosts := ssh.KnownHostsPath(a.ownerDir)
	hasSSHD := sshServerPinned(knownHosts, vm.ID)
	info := api.VMSSHInfo{
		Name: vm.Name, State: view.State, IP: view.IP, DNSName: view.DNSName,
		KeyPath: keyPath, KnownHostsPath: knownHosts, SSHServer: &hasSSHD,
	}
	if g, err := a.running(ctx, req.Name); err == nil {
		info.User = g.login
	}
	return info, nil
}

func (a *access) sshConfig(ctx context.Context, _ struct{}, _ api.Progress) (api.SSHConfig, error) {
	o := currentOwner()
	dir := a.ownerDir
	if _, err := ssh.EnsureKey(ssh.KeyPath(dir), "banger:"+o.Name); err != nil {
		return api.SSHConfig{}, fmt.Errorf("SSH key: %w", err)
	}
	vms, err := a.m.List(ctx)
	if err != nil {
		return api.SSHConfig{}, err
	}
	domain := a.domain
	cfg := api.SSHConfig{Domain: domain, User: o.Name, KeyPath: ssh.KeyPath(dir), KnownHostsPath: ssh.KnownHostsPath(dir)}
	p := ssh.ConfigParams{Domain: domain, User: o.Name, KeyPath: cfg.KeyPath, KnownHosts: cfg.KnownHostsPath}
	for _, vm := range vms {
		p.Hosts = append(p.Hosts, ssh.ConfigHost{Name: vm.Name, IP: vm.IP, SSHServer: sshServerPinned(cfg.KnownHostsPath, vm.ID)})
	}
	cfg.Block = ssh.ConfigBlock(p)
	return cfg, nil
}

// sshServerPinned reports whether banger pinned VM id's SSH host keys,
// which guest setup does only for a guest that runs an sshd. An unreadable
// known_hosts counts as no: `vm exec` works either way.
func sshServerPinned(knownHosts, id string) bool {
	keys, err := ssh.KnownHosts{Path: knownHosts}.Pinned(id)
	return err == nil && len(keys) > 0
}

// agentAnswerTimeout bounds dialing a guest's agent, its hello and the
// guest-info call that open a session. The guest is not trusted to answer:
// a wedged or hostile agent must not hold a call (or the calls queued
// behind it) for longer.
const agentAnswerTimeout = 10 * time.Second

// errAgentSilent means the guest agent did not open a session in time.
var errAgentSilent = errors.New("the guest agent did not answer in time")

// agentPool keeps one agent session per running VM, opened on first use
// and dropped when the VM's VMM exits or the session fails.
type agentPool struct {
	log *slog.Logger
	// answerTimeout is agentAnswerTimeout; tests shorten it.
	answerTimeout time.Duration
	mu            sync.Mutex
	vms           map[string]*pooled
}

type pooled struct {
	// slot is a one-token lock held while a session is looked up or dialed,
	// so callers wait for one dial; unlike a mutex, a waiter whose context
	// ends gives up.
	slot   chan struct{}
	mu     sync.Mutex // guards the fields below (held briefly, never while dialing)
	inst   vmm.Instance
	client *agent.Client
	login  string
}

func newAgentPool(log *slog.Logger) *agentPool {
	return &agentPool{log: log, answerTimeout: agentAnswerTimeout, vms: map[string]*pooled{}}
}

type session struct {
	client *agent.Client
	login  string
}

// session returns the live session to VM id's agent on inst, dialing one if
// there is none (or the one there belongs to an earlier VMM process). A
// dial that takes longer than answerTimeout fails with errAgentSilent; a
// caller whose ctx ends while another call dials returns ctx's error.
func (p *agentPool) session(ctx context.Context, id string, inst vmm.Instance) (session, error) {
	e, err := p.acquire(ctx, id)
	if err != nil {
		return session{}, err
	}
	defer func() { <-e.slot }()

	e.mu.Lock()
	c, login, current := e.client, e.login, e.inst == inst
	e.client = nil
	if c != nil && current {
		select {
		case <-c.Done():
		default:
			e.client = c
			e.mu.Unlock()
			return session{c, login}, nil
		}
	}
	e.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
	c, info, err := p.dial(ctx, inst)
	if err != nil {
		return session{}, err
	}
	login = loginUser(info, currentOwner().Name)
	e.mu.Lock()
	e.inst, e.client, e.login = inst, c, login
	e.mu.Unlock()
	go p.watch(id, e, inst, c)
	return session{c, login}, nil
}

// acquire takes VM id's slot, or gives up when ctx ends.
func (p *agentPool) acquire(ctx context.Context, id string) (*pooled, error) {
	for {
		p.mu.Lock()
		e, ok := p.vms[id]
		if !ok {
			e = &pooled{slot: make(chan struct{}, 1)}
			p.vms[id] = e
		}
		p.mu.Unlock()
		select {
		case e.slot <- struct{}{}:
		case <-ctx.Done():
			return nil, fmt.Errorf("gave up waiting for another call to reach the guest agent: %w", ctx.Err())
		}
		p.mu.Lock()
		current := p.vms[id] == e
		p.mu.Unlock()
		if current {
			return e, nil
		}
		<-e.slot // watch dropped this entry while we waited: use the new one
	}
}

// dial opens a session to inst's agent and asks for the guest's facts,
// all within answerTimeout.
func (p *agentPool) dial(ctx context.Context, inst vmm.Instance) (*agent.Client, agent.GuestInfo, error) {
	dialer, ok := inst.(vmm.AgentDialer)
	if !ok {
		return nil, agent.GuestInfo{}, errors.New("this VMM driver cannot reach a guest agent")
	}
	deadline := time.Now().Add(p.answerTimeout)
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	// Judged by the clock, not dctx.Err(): a transport that copied the
	// deadline onto its socket can fail a moment before dctx's timer fires.
	silent := func(err error) error {
		callerDeadline, ok := ctx.Deadline()
		callerFirst := ctx.Err() != nil || (ok && callerDeadline.Before(deadline))
		if !callerFirst && !time.Now().Before(deadline) {
			return fmt.Errorf("%w (%v): %w", errAgentSilent, p.answerTimeout, err)
		}
		return err
	}
	conn, err := dialer.DialAgent(dctx)
	if err != nil {
		return nil, agent.GuestInfo{}, silent(err)
	}
	// Whatever the transport makes of ctx, closing the connection ends
	// every read on it: an agent that accepted and went quiet cannot keep
	// us past the deadline.
	stop := context.AfterFunc(dctx, func() { _ = conn.Close() })
	c, err := agent.NewClient(dctx, conn)
	if err != nil {
		stop()
		_ = conn.Close()
		return nil, agent.GuestInfo{}, silent(err)
	}
	info, err := c.GuestInfo(dctx)
	if !stop() && err == nil {
		err = dctx.Err() // the deadline closed the connection just as the reply came
	}
	if err != nil {
		_ = c.Close()
		return nil, agent.GuestInfo{}, silent(err)
	}
	return c, info, nil
}

// watch closes the session when the VMM exits, so the stream (and a
// virtio-serial slot) is not held for a VM that is gone, and forgets the
// VM once no session and no caller is left.
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
	// A caller holding the slot still uses the entry; one waiting for it
	// notices the entry is gone (acquire) and takes a new one.
	if e.client == nil && len(e.slot) == 0 && p.vms[id] == e {
		delete(p.vms, id)
	}
	e.mu.Unlock()
	p.mu.Unlock()
	p.log.Debug("agent session closed", "vm_id", id)
}
