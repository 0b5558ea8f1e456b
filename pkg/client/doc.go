// Package client drives a banger daemon from Go programs, without the CLI.
//
// It is the daemon API the banger CLI, TUI and MCP server use: the same
// typed Client and the same wire types, exported here so programs outside
// the banger module can import them. The daemon listens on a Unix socket
// and speaks HTTP+JSON (POST /v1/<method>); docs/api/openapi.json in the
// repository describes every method for clients in other languages.
//
// Default finds the socket the way the banger CLI does: the system-wide
// daemon (/run/banger/bangerd.sock) for the owner recorded by `banger system
// install`, else the invoking user's own daemon under $XDG_RUNTIME_DIR. New
// takes an explicit socket path. Unlike the CLI, this package never starts
// a daemon: a call to a daemon that is not running fails with an error
// matching ErrDaemonUnreachable (errors.Is).
//
// Client is an alias of the daemon's own client type, so its methods (one
// per API method: VMCreate, VMExec, VMSnapshot, ImagePull, ...) are
// documented where it is defined: `go doc
// github.com/banger-dev/banger/internal/api.Client`.
//
// Failed calls return a *Error carrying a Code (CodeNotFound,
// CodeAlreadyExists, ...); use CodeOf or IsCode to branch on it. Long
// operations (VMCreate, VMSnapshot, ImagePull, ...) take an optional
// func(Event) that receives progress events before the call returns.
package client

//go:generate env BANGER_UPDATE_OPENAPI=1 go test -count=1 -run TestOpenAPIDocumentIsCurrent ./internal/openapi
