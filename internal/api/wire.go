// Package api is the daemon's API: the request and response types, the
// server-side routing, and the one typed client the CLI and TUI use.
//
// The wire format is plain HTTP+JSON on a Unix socket so `curl
// --unix-socket` can talk to it:
//
//	POST /v1/<method>            body: the request object (may be empty)
//	200 {"result": ...}          or an error status with {"error": {...}}
//
// A client that sends "Accept: application/x-ndjson" gets progress instead:
// one JSON object per line, {"event": ...} zero or more times, then exactly
// one {"result": ...} or {"error": ...}.
package api

import (
	"encoding/json"
	"time"
)

// Media types used on the wire.
const (
	contentJSON   = "application/json"
	contentNDJSON = "application/x-ndjson"
	pathPrefix    = "/v1/"
)

// Event is one progress report from a long operation, or (on the
// events.watch stream) one change in the daemon's world.
type Event struct {
	Time time.Time `json:"time"`
	// Kind classifies watch events: "vm.state" (State holds the new state),
	// "vm.deleted", "image.changed"; empty for progress events.
	Kind string `json:"kind,omitempty"`
	// State is the VM's new state for "vm.state" events.
	State VMState `json:"state,omitempty"`
	// VM names the VM the event is about, if any.
	VM string `json:"vm,omitempty"`
	// Stage is a short machine-readable step name ("allocate", "boot", "ready").
	Stage string `json:"stage"`
	// Message is the human sentence for the step.
	Message string `json:"message"`
	// Done and Total report progress within a stage when known (bytes, steps).
	Done  int64 `json:"done,omitempty"`
	Total int64 `json:"total,omitempty"`
}

// envelope is one response object (or one NDJSON line).
type envelope struct {
	Event  *Event          `json:"event,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
}
