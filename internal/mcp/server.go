// Package mcp is banger's Model Context Protocol server: it gives a coding
// agent tools to create VMs, run commands and move files in them. It is a
// client of the daemon API like the CLI and TUI, never a second way in, and
// an agent reaches only the VMs it created (labelled creator=mcp:<agent>)
// unless the server was started with All.
package mcp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/banger-dev/banger/internal/api"
)

// Daemon is the part of the daemon API the MCP server uses: *api.Client.
type Daemon interface {
	VMCreate(ctx context.Context, req api.VMCreateRequest, onEvent func(api.Event)) (api.VM, error)
	VMList(ctx context.Context) ([]api.VM, error)
	VMShow(ctx context.Context, name string) (api.VM, error)
	VMStart(ctx context.Context, name string, onEvent func(api.Event)) (api.VM, error)
	VMStop(ctx context.Context, req api.VMStopRequest, onEvent func(api.Event)) (api.VM, error)
	VMDelete(ctx context.Context, req api.VMDeleteRequest, onEvent func(api.Event)) error
	VMLogs(ctx context.Context, req api.VMLogsRequest) (api.VMLogs, error)
	VMPortForward(ctx context.Context, req api.VMPortForwardRequest) (api.VM, error)
	VMPause(ctx context.Context, name string) (api.VM, error)
	VMResume(ctx context.Context, name string) (api.VM, error)
	VMSnapshot(ctx context.Context, req api.VMSnapshotRequest, onEvent func(api.Event)) (api.Snapshot, error)
	VMRollback(ctx context.Context, req api.VMRollbackRequest, onEvent func(api.Event)) (api.VM, error)
	VMFork(ctx context.Context, req api.VMForkRequest, onEvent func(api.Event)) ([]api.VM, error)
	SnapshotShow(ctx context.Context, name string) (api.Snapshot, error)
	SnapshotDelete(ctx context.Context, name string) error
	execer
	copier
}

// Options configure a Server.
type Options struct {
	// Daemon is the daemon API client.
	Daemon Daemon
	// All lets the agent reach every VM, not only those it created.
	All bool
	// AgentName names the agent in the creator label ("mcp:NAME"). Empty:
	// the session's ID (HTTP) or an ID made for this server (stdio), so a
	// new session starts with no VMs of its own.
	AgentName string
	// Root is the host directory copy_in reads from and copy_out writes
	// to; nothing outside it is reachable.
	Root string
	// Version is reported to clients.
	Version string
	// Limits bound what one tool call moves; zero fields take defaults.
	Limits Limits
}

// Limits bound tool calls; an agent can ask for less, never for more.
type Limits struct {
	// ExecOutputBytes caps each of stdout and stderr kept from vm_exec.
	ExecOutputBytes int
	// ExecTimeout is vm_exec's longest timeout, in seconds.
	ExecTimeoutSeconds int
	// FileBytes caps read_file and write_file contents.
	FileBytes int64
	// CopyBytes caps copy_out.
	CopyBytes int64
}

// Defaults for Limits.
const (
	defaultExecOutputBytes    = 1 << 20
	defaultExecTimeoutSeconds = 3600
	defaultFileBytes          = 16 << 20
	defaultCopyBytes          = 4 << 30
)

func (l Limits) withDefaults() Limits {
	if l.ExecOutputBytes <= 0 {
		l.ExecOutputBytes = defaultExecOutputBytes
	}
	if l.ExecTimeoutSeconds <= 0 {
		l.ExecTimeoutSeconds = defaultExecTimeoutSeconds
	}
	if l.FileBytes <= 0 {
		l.FileBytes = defaultFileBytes
	}
	if l.CopyBytes <= 0 {
		l.CopyBytes = defaultCopyBytes
	}
	return l
}

// Server is banger's MCP server.
type Server struct {
	opts Options
	// instance names this server's agent when there is neither an agent
	// name nor a session ID (stdio).
	instance string
	root     hostRoot
	srv      *sdk.Server
}

// New builds the server with every tool and resource registered.
func New(opts Options) (*Server, error) {
	if opts.Daemon == nil {
		return nil, errors.New("mcp: no daemon client")
	}
	opts.Limits = opts.Limits.withDefaults()
	root, err := newHostRoot(opts.Root)
	if err != nil {
		return nil, err
	}
	var id [4]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("mcp: make an instance id: %w", err)
	}
	s := &Server{opts: opts, instance: hex.EncodeToString(id[:]), root: root}
	s.srv = sdk.NewServer(&sdk.Implementation{Name: "banger", Title: "banger microVMs", Version: opts.Version}, &sdk.ServerOptions{
		Instructions: instructions,
	})
	s.addVMTools()
	s.addExecTool()
	s.addFileTools()
	s.addResources()
	return s, nil
}

const instructions = `banger runs Linux microVMs on this machine. Create a VM with vm_create, run
commands in it with vm_exec, move files with read_file/write_file/list_dir (small files,
inline) or copy_in/copy_out (trees, through the host directory the server was started in),
and delete it with vm_delete when done. You see and touch only the VMs you created.`

// Run serves one session over t (sdk.StdioTransport for stdio) until the
// client leaves or ctx ends.
func (s *Server) Run(ctx context.Context, t sdk.Transport) error {
	return s.srv.Run(ctx, t)
}

// HTTPHandler serves streamable HTTP sessions; each gets its own creator
// identity unless the server has an agent name.
func (s *Server) HTTPHandler() http.Handler {
	return sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return s.srv }, nil)
}

// creator is the creator label value for the agent behind req.
func (s *Server) creator(req sessionHolder) string {
	switch {
	case s.opts.AgentName != "":
		return "mcp:" + s.opts.AgentName
	case req != nil && req.GetSession() != nil && req.GetSession().ID() != "":
		return "mcp:" + req.GetSession().ID()
	}
	return "mcp:" + s.instance
}

// sessionHolder is a request that knows its session (tool calls and
// resource reads).
type sessionHolder interface {
	GetSession() sdk.Session
}

// mine reports whether the agent behind req may touch vm.
func (s *Server) mine(req sessionHolder, vm api.VM) bool {
	return s.opts.All || vm.Labels[api.LabelCreator] == s.creator(req)
}

// ownedVM loads VM name if the agent may touch it; one it may not is
// reported as missing, so an agent learns nothing of others' VMs.
func (s *Server) ownedVM(ctx context.Context, req sessionHolder, name string) (api.VM, error) {
	if name == "" {
		return api.VM{}, api.Errorf(api.CodeInvalidArgument, "no VM name given; vm_list lists your VMs")
	}
	vm, err := s.opts.Daemon.VMShow(ctx, name)
	if err == nil && !s.mine(req, vm) {
		err = notYours("VM", name)
	}
	return vm, err
}

// notYours is the error for a VM or snapshot of another creator.
func notYours(kind, name string) error {
	return api.Errorf(api.CodeNotFound, "no %s named %q among the VMs this agent created", kind, name).
		WithHint("this MCP server reaches only VMs its agent created; start it with `banger mcp --all` to reach every VM")
}

// toolError is err as an agent reads it: the sentence the CLI prints and,
// when the daemon gave one, its hint on the next line.
func toolError(err error) error {
	if err == nil {
		return nil
	}
	var ae *api.Error
	if errors.As(err, &ae) && ae.Hint != "" {
		return fmt.Errorf("%s\nhint: %s", err.Error(), ae.Hint)
	}
	return err
}

// invalid is a tool argument error.
func invalid(format string, args ...any) *api.Error {
	return api.Errorf(api.CodeInvalidArgument, format, args...)
}

// trimmed is s with surrounding space removed, for names agents pad.
func trimmed(s string) string { return strings.TrimSpace(s) }
