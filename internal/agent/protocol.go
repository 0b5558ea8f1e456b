// Package agent is the wire protocol between bangerd and banger-vsock-agent,
// the agent running as root inside every guest. It holds both halves: the host
// client (Health) and the guest server (Server), so the two can only change
// together.
//
// The protocol today is deliberately tiny: one request per connection, a JSON
// object on one line from the host, one JSON line back from the guest, then
// the guest closes. That is enough for readiness. The later protocol (exec
// with streamed stdio, file copy) will multiplex streams over one connection;
// the "op" field and the ok/error envelope are the parts meant to stay, and a
// newer host talking to an older agent gets `unknown op` rather than silence.
package agent

import (
	"fmt"
	"strconv"
	"strings"
)

// Ops the agent understands.
const (
	// OpHealth asks the agent to prove it is up; the reply carries its version
	// and the guest's hostname.
	OpHealth = "health"
)

// DefaultPort is the vsock port the agent listens on when the kernel command
// line names none.
const DefaultPort uint32 = 1024

// PortBootArg is the kernel command-line parameter that tells the guest (and
// the fake Firecracker) which vsock port the agent listens on.
const PortBootArg = "banger.agent_port"

// maxLine bounds one protocol line, so a confused or hostile peer cannot make
// either side buffer without limit.
const maxLine = 64 << 10

// Request is one line sent by the host.
type Request struct {
	Op string `json:"op"`
}

// Response is the one line the agent sends back. OK says whether the op
// succeeded; Error explains a failure. The other fields belong to individual
// ops and are empty when they do not apply.
type Response struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`

	// health
	AgentVersion string `json:"agent_version,omitempty"`
	Hostname     string `json:"hostname,omitempty"`
}

// HealthInfo is what a healthy agent reports about itself.
type HealthInfo struct {
	AgentVersion string `json:"agent_version"`
	Hostname     string `json:"hostname"`
}

// RemoteError is a failure reported by the agent itself, as opposed to a
// transport failure (refused connection, timeout, garbled reply). Callers that
// wait for readiness retry transport failures but not RemoteErrors.
type RemoteError struct {
	Op      string
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("agent refused %q: %s", e.Op, e.Message)
}

// PortFromBootArgs returns the agent port named by banger.agent_port in a
// kernel command line, or DefaultPort when the parameter is absent. A present
// but invalid value is an error rather than a silent fallback: a guest
// listening on the wrong port looks exactly like a guest that never booted.
func PortFromBootArgs(cmdline string) (uint32, error) {
	for _, field := range strings.Fields(cmdline) {
		value, ok := strings.CutPrefix(field, PortBootArg+"=")
		if !ok {
			continue
		}
		port, err := strconv.ParseUint(value, 10, 32)
		if err != nil || port == 0 {
			return 0, fmt.Errorf("kernel parameter %s=%q is not a port number", PortBootArg, value)
		}
		return uint32(port), nil
	}
	return DefaultPort, nil
}
