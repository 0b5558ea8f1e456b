package api

import (
	"context"

	"github.com/banger-dev/banger/internal/agent"
)

// Access methods: running commands and copying files in a VM through its
// guest agent, file sync, and what the CLI needs to run ssh. Part of the
// wire contract.
const (
	// MethodVMExec upgrades to UpgradeExec: the connection then carries an
	// accepted agent exec stream (stdin, signals and resizes from the
	// client; output and the exit status from the guest).
	MethodVMExec = "vm.exec"
	// MethodVMCopy upgrades to UpgradeCopy: the connection then carries an
	// accepted agent put (entries from the client, a result back) or get
	// (entries from the guest).
	MethodVMCopy = "vm.copy"
	// MethodVMSync copies the owner's configured files (or the given
	// paths) into a VM, streaming progress.
	MethodVMSync = "vm.sync"
	// MethodVMSSHInfo returns what `banger vm ssh` needs.
	MethodVMSSHInfo = "vm.ssh_info"
	// MethodSSHConfig returns the `banger ssh-config` block.
	MethodSSHConfig = "ssh.config"
)

// VMExecRequest runs a command in a running VM.
type VMExecRequest struct {
	Name string `json:"name"`
	// Argv is the command; empty starts the user's login shell.
	Argv []string `json:"argv,omitempty"`
	Env  []string `json:"env,omitempty"`
	// Dir is the working directory; the user's home when empty.
	Dir string `json:"dir,omitempty"`
	// User is the guest account; the VM's login user when empty.
	User string `json:"user,omitempty"`
	TTY  bool   `json:"tty,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
	Term string `json:"term,omitempty"`
}

// Copy directions.
const (
	CopyToVM   = "to"
	CopyFromVM = "from"
)

// VMCopyRequest copies into or out of a running VM.
type VMCopyRequest struct {
	Name string `json:"name"`
	// Direction is CopyToVM or CopyFromVM.
	Direction string `json:"direction"`
	// Path is the guest path: absolute, or "~/..." for the user's home.
	Path string `json:"path"`
	// BaseName (to the VM) is the source's name: when Path is an existing
	// directory the copy lands inside it under this name, as with cp.
	BaseName string `json:"base_name,omitempty"`
	// User owns what is written and anchors "~"; the VM's login user when
	// empty.
	User string `json:"user,omitempty"`
	// MaxBytes (from the VM) refuses larger copies; 0 means no limit.
	MaxBytes int64 `json:"max_bytes,omitempty"`
	// PreserveOwner (to the VM) keeps the numeric owner of each source file
	// instead of giving everything to User.
	PreserveOwner bool `json:"preserve_owner,omitempty"`
}

// VMSyncRequest syncs files into a running VM. Without Paths the configured
// list ([sync] paths) is used.
type VMSyncRequest struct {
	Name  string   `json:"name"`
	Paths []string `json:"paths,omitempty"`
}

// SyncedPath is one path copied by a sync.
type SyncedPath struct {
	// Path is as configured or given ("~/.gitconfig").
	Path string `json:"path"`
	// Dest is where it landed in the guest.
	Dest  string `json:"dest"`
	Files int    `json:"files"`
	Bytes int64  `json:"bytes"`
}

// VMSyncResult lists what a sync copied and what it refused or failed on;
// Errors hold one sentence each.
type VMSyncResult struct {
	Synced []SyncedPath `json:"synced"`
	Errors []string     `json:"errors,omitempty"`
}

// VMSSHInfo is what the CLI needs to run the system ssh client for a VM.
type VMSSHInfo struct {
	Name    string  `json:"name"`
	State   VMState `json:"state"`
	IP      string  `json:"ip,omitempty"`
	DNSName string  `json:"dns_name"`
	// User is the guest account banger installed the key for.
	User           string `json:"user"`
	KeyPath        string `json:"key_path"`
	KnownHostsPath string `json:"known_hosts_path"`
	// SSHServer says whether the guest runs an sshd: banger pinned its host
	// keys at a boot, which it does only when the guest has one. Nil from a
	// daemon too old to say.
	SSHServer *bool `json:"ssh_server,omitempty"`
}

// SSHConfig is the `banger ssh-config` answer.
type SSHConfig struct {
	Domain         string `json:"domain"`
	User           string `json:"user"`
	KeyPath        string `json:"key_path"`
	KnownHostsPath string `json:"known_hosts_path"`
	// Block is the text for ~/.ssh/config.
	Block string `json:"block"`
}

// VMExec starts a command in a VM. The returned Process relays stdin,
// signals and window sizes; Wait returns its exit status. ctx bounds the
// start; close the Process to abandon it (which kills it).
func (c *Client) VMExec(ctx context.Context, req VMExecRequest) (*agent.Process, error) {
	conn, err := c.upgrade(ctx, MethodVMExec, UpgradeExec, req)
	if err != nil {
		return nil, err
	}
	return agent.NewProcess(conn), nil
}

// VMCopyTo copies local path src into the VM as req describes
// (req.Direction is set for you).
func (c *Client) VMCopyTo(ctx context.Context, req VMCopyRequest, src string, ts agent.TreeSender) (agent.CopyResult, error) {
	req.Direction = CopyToVM
	conn, err := c.upgrade(ctx, MethodVMCopy, UpgradeCopy, req)
	if err != nil {
		return agent.CopyResult{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	return agent.SendPut(conn, src, ts)
}

// VMCopyFrom copies req.Path out of the VM to local path dest (the copy's
// root lands exactly at dest).
func (c *Client) VMCopyFrom(ctx context.Context, req VMCopyRequest, dest string, tr agent.TreeReceiver) (agent.CopyResult, error) {
	req.Direction = CopyFromVM
	conn, err := c.upgrade(ctx, MethodVMCopy, UpgradeCopy, req)
	if err != nil {
		return agent.CopyResult{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	return agent.ReceiveGet(conn, dest, tr)
}

// VMSync copies files into a VM, reporting each to onEvent.
func (c *Client) VMSync(ctx context.Context, req VMSyncRequest, onEvent func(Event)) (VMSyncResult, error) {
	var out VMSyncResult
	err := c.Call(ctx, MethodVMSync, req, &out, onEvent)
	return out, err
}

// VMSSHInfo returns what `banger vm ssh` needs for one VM.
func (c *Client) VMSSHInfo(ctx context.Context, name string) (VMSSHInfo, error) {
	var out VMSSHInfo
	err := c.Call(ctx, MethodVMSSHInfo, VMRef{Name: name}, &out, nil)
	return out, err
}

// SSHConfig returns the ~/.ssh/config block for banger's VMs, creating the
// key pair if needed.
func (c *Client) SSHConfig(ctx context.Context) (SSHConfig, error) {
	var out SSHConfig
	err := c.Call(ctx, MethodSSHConfig, nil, &out, nil)
	return out, err
}
