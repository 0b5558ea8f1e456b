package agent

import (
	"context"
	"io"
	"time"
)

// Host conveniences only tests use: bangerd relays exec and copy streams to
// the CLI byte for byte (Client.Open), and the CLI wraps them (NewProcess,
// ReceiveGet); nothing on the host sends OpPower (power-off is the VMM's
// ACPI button). Defined on Client here so package agent's tests (and the
// external agent_test ones in this directory) read as a host would write.

// Exec starts a process. ctx bounds the start only: the process runs until
// it exits or the Process is closed.
func (c *Client) Exec(ctx context.Context, req ExecRequest) (*Process, error) {
	stream, err := c.Open(ctx, Request{Op: OpExec, Exec: &req})
	if err != nil {
		return nil, err
	}
	return NewProcess(stream), nil
}

// Run runs a process to completion with the given stdio (stdin may be nil)
// and returns how it ended. Cancelling ctx kills it.
func (c *Client) Run(ctx context.Context, req ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (ExitStatus, error) {
	p, err := c.Exec(ctx, req)
	if err != nil {
		return ExitStatus{}, err
	}
	defer func() { _ = p.Close() }()
	stop := context.AfterFunc(ctx, func() { _ = p.Close() })
	defer stop()
	go func() {
		if stdin != nil {
			_, _ = io.Copy(p, stdin)
		}
		_ = p.CloseStdin()
	}()
	st, err := p.Wait(stdout, stderr)
	if err != nil && ctx.Err() != nil {
		return st, context.Cause(ctx)
	}
	return st, err
}

// Get copies guest path req.Path to local path dest (the root entry lands
// exactly at dest).
func (c *Client) Get(ctx context.Context, req GetRequest, dest string, tr TreeReceiver) (CopyResult, error) {
	stream, err := c.Open(ctx, Request{Op: OpGet, Get: &req})
	if err != nil {
		return CopyResult{}, err
	}
	defer stream.Close()
	stop := context.AfterFunc(ctx, func() { _ = stream.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	res, err := ReceiveGet(stream, dest, tr)
	if err != nil && ctx.Err() != nil {
		return res, context.Cause(ctx)
	}
	return res, err
}

// Power asks the guest to power off or reboot; it returns once the agent
// has accepted, before the guest goes down.
func (c *Client) Power(ctx context.Context, action string) error {
	_, err := c.call(ctx, Request{Op: OpPower, Power: &PowerRequest{Action: action}})
	return err
}
