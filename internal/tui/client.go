package tui

import (
	"context"
	"errors"
	"strings"

	"github.com/banger-dev/banger/internal/api"
)

// Client is the part of the daemon API the TUI uses. *api.Client satisfies
// it; tests use a hand-written fake.
type Client interface {
	DaemonInfo(ctx context.Context) (api.DaemonInfo, error)
	VMList(ctx context.Context) ([]api.VM, error)
	VMShow(ctx context.Context, name string) (api.VM, error)
	VMCreate(ctx context.Context, req api.VMCreateRequest, onEvent func(api.Event)) (api.VM, error)
	VMStart(ctx context.Context, name string, onEvent func(api.Event)) (api.VM, error)
	VMStop(ctx context.Context, req api.VMStopRequest, onEvent func(api.Event)) (api.VM, error)
	VMRestart(ctx context.Context, name string, onEvent func(api.Event)) (api.VM, error)
	VMDelete(ctx context.Context, name string, onEvent func(api.Event)) error
	VMLogs(ctx context.Context, req api.VMLogsRequest) (api.VMLogs, error)
	ImageList(ctx context.Context) ([]api.Image, error)
	ImageDelete(ctx context.Context, name string) error
	ImageBuild(ctx context.Context, req api.ImageBuildRequest, onEvent func(api.Event)) (api.Image, error)
	WatchEvents(ctx context.Context, onEvent func(api.Event)) error
	// Call reaches methods that have no typed wrapper yet (vm.exec).
	Call(ctx context.Context, method string, req, resp any, onEvent func(api.Event)) error
}

// methodVMExec is offered only when the daemon lists it; it has no constant
// in package api yet because its daemon side lands in another issue.
const methodVMExec = "vm.exec"

// execRequest and execResult are the TUI's guess at vm.exec's shape.
// runExec is the one place that knows it: when api grows a typed VMExec,
// replace its body and delete these types.
type execRequest struct {
	Name string   `json:"name"`
	Argv []string `json:"argv"`
}

type execResult struct {
	ExitCode int    `json:"exit_code"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
}

// runExec runs command through the guest's shell so the user can type a
// command line as they would in ssh.
func runExec(ctx context.Context, c Client, name, command string) (execResult, error) {
	var out execResult
	err := c.Call(ctx, methodVMExec, execRequest{Name: name, Argv: []string{"/bin/sh", "-c", command}}, &out, nil)
	return out, err
}

// isUnknownMethod reports whether the daemon answered that it has no such
// API method, as opposed to "no such VM", which shares the not_found code.
func isUnknownMethod(err error) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Code == api.CodeNotFound && strings.HasPrefix(ae.Message, "unknown API method")
}
