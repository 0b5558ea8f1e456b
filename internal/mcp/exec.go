package mcp

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/api"
)

// execer starts commands in VMs: *api.Client.
type execer interface {
	VMExec(ctx context.Context, req api.VMExecRequest) (*agent.Process, error)
}

// ExecArgs are vm_exec's arguments.
type ExecArgs struct {
	Name           string   `json:"name" jsonschema:"the VM's name"`
	Argv           []string `json:"argv,omitempty" jsonschema:"the command and its arguments, run without a shell; give argv or command"`
	Command        string   `json:"command,omitempty" jsonschema:"a shell command line, run with sh -c; give argv or command"`
	Cwd            string   `json:"cwd,omitempty" jsonschema:"working directory in the guest; default the user's home"`
	Env            []string `json:"env,omitempty" jsonschema:"extra environment variables, NAME=VALUE"`
	User           string   `json:"user,omitempty" jsonschema:"guest user to run as; default the VM's login user"`
	Stdin          string   `json:"stdin,omitempty" jsonschema:"text to feed the command on standard input"`
	StdinBase64    string   `json:"stdin_base64,omitempty" jsonschema:"binary standard input, base64; instead of stdin"`
	TimeoutSeconds int      `json:"timeout_seconds,omitempty" jsonschema:"kill the command after this many seconds; default 120"`
	MaxOutputBytes int      `json:"max_output_bytes,omitempty" jsonschema:"keep at most this many bytes of each of stdout and stderr; default and maximum set by the server (1 MiB unless configured)"`
}

// ExecResult is vm_exec's result.
type ExecResult struct {
	ExitCode    int    `json:"exit_code" jsonschema:"the command's exit code; 128+N when signal N ended it, -1 when it timed out"`
	Signal      string `json:"signal,omitempty" jsonschema:"the signal that ended the command, if one did"`
	Stdout      string `json:"stdout"`
	Stderr      string `json:"stderr"`
	Truncated   bool   `json:"truncated" jsonschema:"true when stdout or stderr was longer than max_output_bytes and was cut"`
	StdoutBytes int64  `json:"stdout_bytes" jsonschema:"how many bytes the command wrote to stdout in all"`
	StderrBytes int64  `json:"stderr_bytes" jsonschema:"how many bytes the command wrote to stderr in all"`
	TimedOut    bool   `json:"timed_out" jsonschema:"true when the command ran past timeout_seconds and was killed"`
	DurationMS  int64  `json:"duration_ms"`
}

const defaultExecTimeout = 120 * time.Second

func (s *Server) addExecTool() {
	sdk.AddTool(s.srv, &sdk.Tool{
		Name: "vm_exec",
		Description: "Run a command in a running VM through its guest agent and return its exit code and output. " +
			"Give argv (no shell) or command (sh -c). Output beyond max_output_bytes is cut (truncated: true); " +
			"a command running past timeout_seconds is killed (timed_out: true). Output that is not UTF-8 is shown with U+FFFD replacements.",
	}, s.vmExec)
}

func (s *Server) vmExec(ctx context.Context, req *sdk.CallToolRequest, in ExecArgs) (*sdk.CallToolResult, ExecResult, error) {
	ereq, stdin, timeout, limit, err := s.execRequest(in)
	if err != nil {
		return nil, ExecResult{}, toolError(err)
	}
	vm, err := s.ownedVM(ctx, req, trimmed(in.Name))
	if err != nil {
		return nil, ExecResult{}, toolError(err)
	}
	ereq.Name = vm.Name
	res, err := runCaptured(ctx, s.opts.Daemon, ereq, stdin, timeout, limit)
	if err != nil {
		return nil, ExecResult{}, toolError(err)
	}
	return nil, res, nil
}

// execRequest checks vm_exec's arguments and builds the daemon request.
func (s *Server) execRequest(in ExecArgs) (api.VMExecRequest, []byte, time.Duration, int, error) {
	var none api.VMExecRequest
	argv := in.Argv
	switch {
	case len(in.Argv) > 0 && in.Command != "":
		return none, nil, 0, 0, invalid("give argv or command, not both")
	case in.Command != "":
		argv = []string{"sh", "-c", in.Command}
	case len(argv) == 0 || argv[0] == "":
		return none, nil, 0, 0, invalid("no command given: set argv (a list) or command (a shell line)")
	}
	for _, kv := range in.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return none, nil, 0, 0, invalid("env %q: use NAME=VALUE", kv)
		}
	}
	stdin := []byte(in.Stdin)
	if in.StdinBase64 != "" {
		if in.Stdin != "" {
			return none, nil, 0, 0, invalid("give stdin or stdin_base64, not both")
		}
		var err error
		if stdin, err = base64.StdEncoding.DecodeString(in.StdinBase64); err != nil {
			return none, nil, 0, 0, invalid("stdin_base64 is not valid base64: %v", err)
		}
	}
	if int64(len(stdin)) > s.opts.Limits.FileBytes {
		return none, nil, 0, 0, invalid("stdin is %d bytes; at most %d go inline (write_file or copy_in move more)", len(stdin), s.opts.Limits.FileBytes)
	}
	timeout := defaultExecTimeout
	maxTimeout := s.opts.Limits.ExecTimeoutSeconds
	switch {
	case in.TimeoutSeconds < 0 || in.TimeoutSeconds > maxTimeout:
		return none, nil, 0, 0, invalid("timeout_seconds %d: use 1 to %d", in.TimeoutSeconds, maxTimeout)
	case in.TimeoutSeconds > 0:
		timeout = time.Duration(in.TimeoutSeconds) * time.Second
	}
	limit := s.opts.Limits.ExecOutputBytes
	switch {
	case in.MaxOutputBytes < 0 || in.MaxOutputBytes > limit:
		return none, nil, 0, 0, invalid("max_output_bytes %d: use 1 to %d", in.MaxOutputBytes, limit)
	case in.MaxOutputBytes > 0:
		limit = in.MaxOutputBytes
	}
	return api.VMExecRequest{Argv: argv, Dir: in.Cwd, Env: in.Env, User: in.User}, stdin, timeout, limit, nil
}

// runCaptured runs ereq with stdin, keeping up to limit bytes of each
// output stream, and kills it (by ending its session) after timeout.
func runCaptured(ctx context.Context, d execer, ereq api.VMExecRequest, stdin []byte, timeout time.Duration, limit int) (ExecResult, error) {
	start := time.Now()
	p, err := d.VMExec(ctx, ereq)
	if api.IsCommandNotFound(err) {
		// As a shell reports it, so an agent reads it like any failure.
		return ExecResult{ExitCode: api.CommandNotFoundCode, Stderr: err.Error() + "\n"}, nil
	}
	if err != nil {
		return ExecResult{}, err
	}
	var expired atomic.Bool
	timer := time.AfterFunc(timeout, func() {
		expired.Store(true)
		_ = p.Close() // the agent kills a command whose session ends
	})
	defer timer.Stop()
	stopOnCancel := context.AfterFunc(ctx, func() { _ = p.Close() })
	defer stopOnCancel()
	go func() {
		if len(stdin) > 0 {
			_, _ = p.Write(stdin)
		}
		_ = p.CloseStdin()
	}()
	stdout, stderr := &agent.CappedWriter{Limit: limit}, &agent.CappedWriter{Limit: limit}
	st, werr := p.Wait(stdout, stderr)
	timer.Stop()
	res := ExecResult{
		Stdout: stdout.Text(), Stderr: stderr.Text(),
		StdoutBytes: stdout.Total(), StderrBytes: stderr.Total(),
		Truncated:  stdout.Cut() || stderr.Cut(),
		DurationMS: time.Since(start).Milliseconds(),
	}
	switch {
	case werr != nil && expired.Load():
		res.TimedOut, res.ExitCode = true, -1
		return res, nil
	case werr != nil && ctx.Err() != nil:
		return ExecResult{}, fmt.Errorf("vm %q: the call was canceled; the command was killed", ereq.Name)
	case werr != nil:
		return ExecResult{}, fmt.Errorf("vm %q: %w", ereq.Name, werr)
	}
	res.ExitCode, res.Signal = st.ShellCode(), st.Signal
	if st.Error != "" {
		res.Stderr += "\nbanger: " + st.Error
	}
	return res, nil
}
