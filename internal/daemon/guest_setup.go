package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/filesync"
	"github.com/banger-dev/banger/internal/lifecycle"
	"github.com/banger-dev/banger/internal/ssh"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
)

// Setup runs once the guest agent answers and before the VM is recorded
// running: install the owner's SSH key, learn and pin the guest's host
// keys, sync the owner's configured files. A key that cannot be installed
// or a host key that does not match its pin fails the boot; a file that
// cannot be synced is reported and skipped.
func (g lcGuest) Setup(ctx context.Context, lvm lifecycle.VM, inst vmm.Instance, p lifecycle.Progress) error {
	vm := toStoreVM(lvm)
	err := withAgent(ctx, inst, func(c *agent.Client) error { return g.setup(ctx, vm, c, progressFrom(p)) })
	if errors.Is(err, errNoAgentDialer) {
		return nil // nothing to set up without an agent
	}
	return err
}

// errNoAgentDialer means the VMM driver offers no way to the guest agent.
var errNoAgentDialer = errors.New("this VMM driver cannot reach a guest agent")

// withAgent opens one agent session to inst's guest for fn. One session
// for a whole setup: on QEMU's virtio-serial there is only one stream.
func withAgent(ctx context.Context, inst vmm.Instance, fn func(*agent.Client) error) error {
	dialer, ok := inst.(vmm.AgentDialer)
	if !ok {
		return errNoAgentDialer
	}
	conn, err := dialer.DialAgent(ctx)
	if err != nil {
		return fmt.Errorf("guest setup: reach the agent: %w", err)
	}
	c, err := agent.NewClient(ctx, conn)
	if err != nil {
		conn.Close()
		return fmt.Errorf("guest setup: %w", err)
	}
	defer func() { _ = c.Close() }()
	return fn(c)
}

// setup is the boot-time guest setup over an open agent session.
func (g lcGuest) setup(ctx context.Context, vm store.VM, c *agent.Client, p api.Progress) error {
	return g.setupWith(ctx, vm, c, p, false)
}

// setupWith is setup; keysPinnedElsewhere leaves the guest's host keys to
// the caller (a new identity replaces them while the setup runs).
func (g lcGuest) setupWith(ctx context.Context, vm store.VM, c *agent.Client, p api.Progress, keysPinnedElsewhere bool) error {
	s := guestSetup{
		keysPinnedElsewhere: keysPinnedElsewhere,
		client:              c,
		vmID:                vm.ID,
		vmName:              vm.Name,
		hosts:               g.hostNames(ctx, vm),
		owner:               currentOwner(),
		configDir:           g.ownerDir,
		syncPaths:           g.syncPaths,
		log:                 g.log,
		progress:            p,
	}
	return s.run(ctx)
}

// hostNames are the names the VM's host keys are pinned under: its DNS
// name, then its address if it has one.
func (g lcGuest) hostNames(ctx context.Context, vm store.VM) []string {
	hosts := []string{vm.Name + "." + g.domain}
	if lease, err := g.store.GetLease(ctx, vm.ID); err == nil && lease.IP.IsValid() {
		hosts = append(hosts, lease.IP.String())
	}
	return hosts
}

// configuredSyncPaths is the [sync] paths list of the configuration.
func configuredSyncPaths(cfg config.Config) []string {
	return cfg.Sync.Paths
}

// owner is who runs the daemon: the person whose key, home and name the
// VMs get.
type owner struct {
	Name string
	Home string
}

func currentOwner() owner {
	o := owner{Name: os.Getenv("USER")}
	if u, err := user.Current(); err == nil {
		o.Name = u.Username
	}
	o.Home, _ = os.UserHomeDir()
	return o
}

// loginUser is the guest account banger uses for a VM: the owner's name
// when the image has that account (banger's own images create it), else
// root (an imported image).
func loginUser(info agent.GuestInfo, ownerName string) string {
	for _, u := range info.Users {
		if u.Name == ownerName && ownerName != "" {
			return u.Name
		}
	}
	return "root"
}

// guestSetup is the boot-time work on a freshly answering guest, apart
// from lcGuest so it can be tested against an agent alone.
type guestSetup struct {
	client    *agent.Client
	vmID      string
	vmName    string
	hosts     []string // DNS name first, then the address if any
	owner     owner
	configDir string
	syncPaths []string
	log       *slog.Logger
	progress  api.Progress
	// keysPinnedElsewhere skips pinning the guest's host keys: a new
	// identity is replacing them, and its caller pins the new ones.
	keysPinnedElsewhere bool
}

func (g guestSetup) run(ctx context.Context) error {
	info, err := g.client.GuestInfo(ctx)
	if err != nil {
		return fmt.Errorf("guest setup: %w", err)
	}
	login := loginUser(info, g.owner.Name)
	pub, err := ssh.EnsureKey(ssh.KeyPath(g.configDir), "banger:"+g.owner.Name)
	if err != nil {
		return fmt.Errorf("guest setup: SSH key: %w", err)
	}
	if _, err := g.client.AuthorizeKey(ctx, agent.AuthorizeKeyRequest{User: login, Key: pub}); err != nil {
		return fmt.Errorf("guest setup: install SSH key for %s: %w", login, err)
	}
	switch {
	case g.keysPinnedElsewhere:
		g.progress(api.Event{VM: g.vmName, Stage: "ssh", Message: "SSH key installed for " + login})
	case len(info.HostKeys) > 0:
		kh := ssh.KnownHosts{Path: ssh.KnownHostsPath(g.configDir)}
		res, err := kh.Pin(g.vmID, g.hosts, info.HostKeys)
		if errors.Is(err, ssh.ErrHostKeyMismatch) {
			return api.Errorf(api.CodeFailedPrecondition, "vm %q: %v", g.vmName, err).
				WithHint(fmt.Sprintf("if this VM's disk was replaced on purpose, remove the lines ending in banger-vm=%s from %s and start it again", g.vmID, kh.Path))
		}
		if err != nil {
			return fmt.Errorf("guest setup: pin host keys: %w", err)
		}
		g.progress(api.Event{VM: g.vmName, Stage: "ssh", Message: fmt.Sprintf("SSH host key %s; key installed for %s", res, login)})
	default:
		g.progress(api.Event{VM: g.vmName, Stage: "ssh", Message: "the guest has no SSH host keys (no sshd?); `banger vm exec` works, `banger vm ssh` will not"})
	}
	if len(g.syncPaths) > 0 {
		res := syncFiles(ctx, g.client, login, g.owner.Home, g.syncPaths, g.vmName, g.progress)
		for _, e := range res.Errors {
			g.log.Warn("file sync", "vm", g.vmName, "err", e)
		}
	}
	return nil
}

// syncFiles copies the paths (after the home-lock policy) into the guest
// user's home, one put per path, and reports each to p.
func syncFiles(ctx context.Context, c *agent.Client, login, home string, paths []string, vmName string, p api.Progress) api.VMSyncResult {
	res := api.VMSyncResult{Synced: []api.SyncedPath{}}
	entries, refused := filesync.Plan(home, paths)
	for _, err := range refused {
		res.Errors = append(res.Errors, err.Error())
		p(api.Event{VM: vmName, Stage: "sync", Message: "skipped: " + err.Error()})
	}
	for _, e := range entries {
		dest := path.Join("~", e.Rel)
		put := agent.PutRequest{Path: dest, User: login, MakeParents: true}
		out, err := c.Put(ctx, put, e.Source, agent.TreeSender{FollowRoot: true})
		if err != nil {
			msg := fmt.Sprintf("sync %s: %v", e.Config, err)
			res.Errors = append(res.Errors, msg)
			p(api.Event{VM: vmName, Stage: "sync", Message: "failed: " + msg})
			continue
		}
		res.Synced = append(res.Synced, api.SyncedPath{Path: e.Config, Dest: out.Path, Files: out.Files, Bytes: out.Bytes})
		p(api.Event{VM: vmName, Stage: "sync", Message: fmt.Sprintf("synced %s to %s", e.Config, out.Path), Done: out.Bytes})
	}
	return res
}
