// Package agent is the wire protocol between the host (bangerd, and the CLI
// through bangerd) and banger-vsock-agent, the agent running as root inside
// every guest. It holds both halves, the host Client and the guest Server, so
// the two can only change together.
//
// # Layers
//
// Transport: one byte stream. A vsock or unix connection (one per host
// connect), or the virtio-serial port, which is a single stream that may be
// taken over by a new host at any moment, and which the agent reopens when
// its host end hangs up (a VM restored into a new VMM, a daemon restart).
//
// Session: the host opens every transport stream with one hello line,
//
//	host  → agent   "BANGER-AGENT/1 HELLO <nonce>\n"
//	agent → host    "BANGER-AGENT/1 READY <nonce>\n"
//
// after which the stream carries a yamux session (host = client). On a
// socket the hello is the first line or the connection is refused; on the
// serial port the agent discards everything until a hello, and the host
// repeats its hello until it sees the matching READY, which is how either
// side recovers from the bytes a vanished peer left in the pipe.
//
// Streams: each operation is one yamux stream carrying typed frames,
//
//	+------+----------------+----------------------+
//	| type | length (BE u32) | payload (≤ MaxFrame) |
//	+------+----------------+----------------------+
//
// The host's first frame is a Request (JSON), the agent answers one Reply
// (JSON). Unary operations (health, guest info, authorize key, power,
// identity) end there. Exec continues with stdin/signal/resize frames from the host and
// stdout/stderr frames then one exit frame from the agent. File copy
// continues with entry/data frames and an end frame in the direction of the
// copy, then (for put) a final Reply. A malformed frame fails its stream
// only; a malformed session fails that session only; the agent keeps
// serving.
package agent

import (
	"fmt"
	"strings"
	"time"
)

// Ops the agent understands. An agent answers an op it does not know with a
// RemoteError (code "unknown_op"), so a newer host can tell an older agent.
const (
	OpHealth       = "health"
	OpGuestInfo    = "guest_info"
	OpExec         = "exec"
	OpPut          = "put"
	OpGet          = "get"
	OpAuthorizeKey = "authorize_key"
	OpPower        = "power"
	OpIdentity     = "identity"
)

// Error codes carried by RemoteError, for callers that branch on a failure.
const (
	CodeUnknownOp  = "unknown_op"
	CodeInvalid    = "invalid"
	CodeNotFound   = "not_found"
	CodePermission = "permission"
	CodeTooLarge   = "too_large"
	CodeNoUser     = "no_user"
	CodeFailed     = "failed"
)

// DefaultPort is the vsock port the agent listens on when the kernel command
// line names none.
const DefaultPort uint32 = 1024

// PortBootArg is the kernel command-line parameter that tells the guest (and
// the fake Firecracker) which vsock port the agent listens on.
const PortBootArg = "banger.agent_port"

// Request is the first frame on every stream. Exactly the field matching Op
// is set.
type Request struct {
	Op           string               `json:"op"`
	Exec         *ExecRequest         `json:"exec,omitempty"`
	Put          *PutRequest          `json:"put,omitempty"`
	Get          *GetRequest          `json:"get,omitempty"`
	AuthorizeKey *AuthorizeKeyRequest `json:"authorize_key,omitempty"`
	Power        *PowerRequest        `json:"power,omitempty"`
	Identity     *Identity            `json:"identity,omitempty"`
}

// Reply is the agent's answer to a Request. OK says whether the op was
// accepted; Error and Code explain a refusal. The result fields belong to
// individual ops and are empty when they do not apply.
type Reply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"`

	Health       *HealthInfo         `json:"health,omitempty"`
	Guest        *GuestInfo          `json:"guest,omitempty"`
	Put          *CopyResult         `json:"put,omitempty"`
	AuthorizeKey *AuthorizeKeyResult `json:"authorize_key,omitempty"`
	Identity     *IdentityResult     `json:"identity,omitempty"`
}

// HealthInfo is what a healthy agent reports about itself.
type HealthInfo struct {
	AgentVersion string `json:"agent_version"`
	Hostname     string `json:"hostname"`
}

// GuestInfo describes the guest: what the host shows the user and what it
// pins (the SSH host keys).
type GuestInfo struct {
	AgentVersion string `json:"agent_version"`
	Hostname     string `json:"hostname"`
	// Kernel is the running kernel release (uname -r).
	Kernel string `json:"kernel"`
	// OS is PRETTY_NAME from /etc/os-release, if any.
	OS            string         `json:"os,omitempty"`
	UptimeSeconds float64        `json:"uptime_seconds"`
	Addresses     []GuestAddress `json:"addresses,omitempty"`
	// HostKeys are the guest's SSH host public keys in authorized_keys
	// format ("ssh-ed25519 AAAA..."), without comments.
	HostKeys []string `json:"host_keys,omitempty"`
	// Users are the accounts a person logs in as: root and regular users
	// with a login shell.
	Users []GuestUser `json:"users,omitempty"`
}

// GuestAddress is one address on a guest interface.
type GuestAddress struct {
	Interface string `json:"interface"`
	// CIDR is the address with its prefix, e.g. "172.30.0.5/24".
	CIDR string `json:"cidr"`
}

// GuestUser is one login account in the guest.
type GuestUser struct {
	Name string `json:"name"`
	UID  int    `json:"uid"`
	Home string `json:"home"`
}

// ExecRequest starts a process in the guest.
type ExecRequest struct {
	// Argv is the command; empty runs the user's login shell.
	Argv []string `json:"argv,omitempty"`
	// Env entries ("K=V") are added to a login-like base environment (PATH,
	// HOME, USER, LOGNAME, SHELL, and TERM with a TTY) and override it.
	Env []string `json:"env,omitempty"`
	// Dir is the working directory; the user's home when empty.
	Dir string `json:"dir,omitempty"`
	// User runs the process as that account; the agent's own (root) when
	// empty.
	User string `json:"user,omitempty"`
	// TTY gives the process a pseudo-terminal of Rows×Cols (24×80 when
	// zero); its stdout and stderr are then one stream.
	TTY  bool   `json:"tty,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
	// Term is TERM for a TTY process; xterm-256color when empty.
	Term string `json:"term,omitempty"`
}

// ExitStatus is how a guest process ended.
type ExitStatus struct {
	// Code is the exit code, or -1 when a signal ended the process.
	Code int `json:"code"`
	// Signal names the signal that ended the process ("SIGKILL"), if any.
	Signal string `json:"signal,omitempty"`
	// Error reports an agent-side failure while relaying the process's
	// output; the process itself may have succeeded.
	Error string `json:"error,omitempty"`
}

// ShellCode is the exit code a shell would report: Code, or 128+signal
// number for a process ended by a signal.
func (e ExitStatus) ShellCode() int {
	if e.Signal != "" {
		if n := signalNumber(e.Signal); n > 0 {
			return 128 + n
		}
		return 255
	}
	return e.Code
}

func (e ExitStatus) String() string {
	if e.Signal != "" {
		return "killed by " + e.Signal
	}
	return fmt.Sprintf("exit code %d", e.Code)
}

// PutRequest copies a tree (or one file) into the guest. The host then sends
// the entries; the root entry (Path "") lands at Path, or at Path/Name when
// Path is an existing directory and Name is set, as cp does.
type PutRequest struct {
	// Path is absolute, or "~/..." for the home of User (root's without one).
	Path string `json:"path"`
	Name string `json:"name,omitempty"`
	// User owns everything written (with their primary group) unless
	// PreserveOwner is set; without User, new files take the owner of the
	// directory they land in.
	User string `json:"user,omitempty"`
	// PreserveOwner applies each entry's UID and GID instead.
	PreserveOwner bool `json:"preserve_owner,omitempty"`
	// MakeParents creates missing parent directories (owned as above).
	MakeParents bool `json:"make_parents,omitempty"`
}

// GetRequest copies a tree (or one file) out of the guest.
type GetRequest struct {
	// Path is absolute, or "~/..." for the home of User.
	Path string `json:"path"`
	User string `json:"user,omitempty"`
	// MaxBytes refuses the copy up front when the file data adds up to more;
	// 0 means no limit.
	MaxBytes int64 `json:"max_bytes,omitempty"`
}

// CopyResult summarises a finished copy.
type CopyResult struct {
	Files   int   `json:"files"`
	Dirs    int   `json:"dirs"`
	Links   int   `json:"links"`
	Bytes   int64 `json:"bytes"`
	Skipped int   `json:"skipped,omitempty"`
	// Path is where the root entry landed (put) or was read from (get).
	Path string `json:"path,omitempty"`
}

// Entry types.
const (
	EntryFile    = "file"
	EntryDir     = "dir"
	EntrySymlink = "symlink"
)

// Entry describes one file, directory or symlink in a copy. Regular files
// are followed by exactly Size bytes of data frames.
type Entry struct {
	// Path is relative to the copy's root, slash-separated; "" is the root.
	Path string `json:"path"`
	Type string `json:"type"`
	// Mode holds the permission bits plus setuid, setgid and sticky, in
	// their Unix positions (0o4000, 0o2000, 0o1000).
	Mode    uint32 `json:"mode"`
	Size    int64  `json:"size,omitempty"`
	UID     int    `json:"uid"`
	GID     int    `json:"gid"`
	ModTime int64  `json:"mtime_ns,omitempty"`
	Link    string `json:"link,omitempty"`
}

// AuthorizeKeyRequest installs an SSH public key for a guest user.
type AuthorizeKeyRequest struct {
	User string `json:"user"`
	// Key is one authorized_keys line ("ssh-ed25519 AAAA... comment").
	Key string `json:"key"`
}

// AuthorizeKeyResult says where the key went.
type AuthorizeKeyResult struct {
	User string `json:"user"`
	Home string `json:"home"`
	// Added is false when the key was already there.
	Added bool `json:"added"`
}

// Power actions.
const (
	PowerOff    = "poweroff"
	PowerReboot = "reboot"
)

// PowerRequest asks the guest to power off or reboot. The agent replies
// first and acts a moment later, so the host hears the answer.
type PowerRequest struct {
	Action string `json:"action"`
}

// RemoteError is a failure reported by the agent itself, as opposed to a
// transport failure (refused connection, timeout, garbled reply). Callers
// that wait for readiness retry transport failures but not RemoteErrors.
type RemoteError struct {
	Op      string
	Code    string
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("guest agent refused %s: %s", e.Op, e.Message)
}

// sessionConfig tunables shared by both halves.
const (
	// helloTimeout bounds how long a socket client may take to say hello.
	helloTimeout = 10 * time.Second
	// keepAlive detects a host or guest that vanished without closing.
	keepAlive = 15 * time.Second
	// writeTimeout is how long a blocked session write may take before the
	// session is declared dead (a serial port with no host behind it).
	writeTimeout = 10 * time.Second
	// streamWindow is yamux's per-stream window; larger than its 256 KiB
	// default so bulk copies are not throttled by round trips.
	streamWindow = 8 << 20
)

// truncate shortens b for an error message.
func truncate(b []byte) string {
	const max = 80
	s := string(b)
	if len(s) > max {
		s = s[:max] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}
