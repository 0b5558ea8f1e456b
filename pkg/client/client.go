package client

import (
	"fmt"
	"os"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/paths"
)

// Client is the typed daemon client; it is safe for concurrent use. Close
// it to release idle connections.
type Client = api.Client

// New returns a client for the daemon listening on socketPath. It does not
// connect until the first call.
func New(socketPath string) *Client { return api.NewClient(socketPath) }

// Default returns a client for the daemon the banger CLI would talk to
// without --system: the system-wide daemon when the invoking user owns the
// system install, else the user's own daemon. BANGER_SYSTEM_ROOT and the
// XDG directories are honoured as by the CLI.
func Default() (*Client, error) {
	socket, err := DefaultSocket()
	if err != nil {
		return nil, err
	}
	return New(socket), nil
}

// DefaultSocket is the socket path Default connects to.
func DefaultSocket() (string, error) {
	system := paths.System(os.Getenv("BANGER_SYSTEM_ROOT"))
	layout, err := paths.Detect(installmeta.OwnedBy(system, os.Getuid()))
	if err != nil {
		return "", fmt.Errorf("locate the banger daemon socket: %w", err)
	}
	return layout.SocketPath(), nil
}

// Errors.
type (
	// Error is a failed call's error: a Code, a sentence and maybe a hint.
	Error = api.Error
	// Code classifies an Error.
	Code = api.Code
)

// Error codes; see api.Code. Part of the wire contract.
const (
	CodeInvalidArgument    = api.CodeInvalidArgument
	CodeNotFound           = api.CodeNotFound
	CodeAlreadyExists      = api.CodeAlreadyExists
	CodeInUse              = api.CodeInUse
	CodeFailedPrecondition = api.CodeFailedPrecondition
	CodeUnavailable        = api.CodeUnavailable
	CodeIncompatible       = api.CodeIncompatible
	CodeCanceled           = api.CodeCanceled
	CodeInternal           = api.CodeInternal
)

var (
	// ErrDaemonUnreachable matches (errors.Is) a call nothing answered:
	// no daemon runs on the socket.
	ErrDaemonUnreachable = api.ErrDaemonUnreachable
	// ErrDaemonStopped matches a call whose daemon went away before it
	// answered; what the call did is unknown until the daemon restarts.
	ErrDaemonStopped = api.ErrDaemonStopped
)

// CodeOf returns err's Code, or CodeInternal when err carries none.
func CodeOf(err error) Code { return api.CodeOf(err) }

// IsCode reports whether err carries code.
func IsCode(err error, code Code) bool { return api.IsCode(err, code) }

// IsCommandNotFound reports whether a VMExec error means the command does
// not exist in the guest.
func IsCommandNotFound(err error) bool { return api.IsCommandNotFound(err) }

// Progress and watch events.
type Event = api.Event

// Daemon.
type (
	DaemonInfo       = api.DaemonInfo
	OrphanVMM        = api.OrphanVMM
	ReloadResponse   = api.ReloadResponse
	ShutdownResponse = api.ShutdownResponse
)

// VMs.
type (
	VM                   = api.VM
	VMState              = api.VMState
	VMCreateRequest      = api.VMCreateRequest
	VMRef                = api.VMRef
	VMStopRequest        = api.VMStopRequest
	VMDeleteRequest      = api.VMDeleteRequest
	VMList               = api.VMList
	VMLogsRequest        = api.VMLogsRequest
	VMLogs               = api.VMLogs
	VMPortForwardRequest = api.VMPortForwardRequest
	EgressPolicy         = api.EgressPolicy
	VMEgressRequest      = api.VMEgressRequest
	Lifetime             = api.Lifetime
	VMTTLRequest         = api.VMTTLRequest
)

// VM states. A VM is only running once its guest agent answered.
const (
	VMCreating = api.VMCreating
	VMStarting = api.VMStarting
	VMRunning  = api.VMRunning
	VMStopping = api.VMStopping
	VMStopped  = api.VMStopped
	VMPaused   = api.VMPaused
	VMFailed   = api.VMFailed
	VMDeleting = api.VMDeleting
)

// Running commands and copying files.
type (
	VMExecRequest = api.VMExecRequest
	VMCopyRequest = api.VMCopyRequest
	VMSyncRequest = api.VMSyncRequest
	VMSyncResult  = api.VMSyncResult
	SyncedPath    = api.SyncedPath
	VMSSHInfo     = api.VMSSHInfo
	SSHConfig     = api.SSHConfig
	// Process is a command started by VMExec: write its stdin, send it
	// signals and window sizes, and Wait for its ExitStatus.
	Process = agent.Process
	// ExitStatus is how a VMExec command ended.
	ExitStatus = agent.ExitStatus
	// TreeSender and TreeReceiver tune VMCopyTo and VMCopyFrom; their
	// zero values copy everything with default ownership.
	TreeSender   = agent.TreeSender
	TreeReceiver = agent.TreeReceiver
	// CopyResult counts what a copy moved.
	CopyResult = agent.CopyResult
)

// Copy directions for VMCopyRequest.Direction.
const (
	CopyToVM   = api.CopyToVM
	CopyFromVM = api.CopyFromVM
)

// Snapshots.
type (
	Snapshot          = api.Snapshot
	SnapshotState     = api.SnapshotState
	SnapshotList      = api.SnapshotList
	SnapshotRef       = api.SnapshotRef
	VMSnapshotRequest = api.VMSnapshotRequest
	VMRollbackRequest = api.VMRollbackRequest
	VMForkRequest     = api.VMForkRequest
	ImageWarmRequest  = api.ImageWarmRequest
)

// Snapshot states.
const (
	SnapshotSaving = api.SnapshotSaving
	SnapshotReady  = api.SnapshotReady
)

// Images.
type (
	Image              = api.Image
	ImageList          = api.ImageList
	ImageRef           = api.ImageRef
	ImageImportRequest = api.ImageImportRequest
	ImageBuildRequest  = api.ImageBuildRequest
	ImagePullRequest   = api.ImagePullRequest
	RegistryAuth       = api.RegistryAuth
	ImageOrigin        = api.ImageOrigin
	ImagePruneResult   = api.ImagePruneResult
)
