package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Health asks the agent on conn whether it is up. conn must be a fresh
// connection to the agent (for Firecracker, one that already passed the
// hybrid-vsock CONNECT handshake); it carries this one request, and the caller
// still closes it. Cancelling ctx aborts a blocked read or write.
func Health(ctx context.Context, conn net.Conn) (HealthInfo, error) {
	resp, err := roundTrip(ctx, conn, Request{Op: OpHealth})
	if err != nil {
		return HealthInfo{}, fmt.Errorf("agent health check: %w", err)
	}
	return HealthInfo{AgentVersion: resp.AgentVersion, Hostname: resp.Hostname}, nil
}

// roundTrip sends req as one line and reads one response line. A response
// with ok=false comes back as a *RemoteError.
func roundTrip(ctx context.Context, conn net.Conn, req Request) (Response, error) {
	if err := ctx.Err(); err != nil {
		return Response{}, err
	}
	if deadline, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(deadline); err != nil {
			return Response{}, err
		}
	}
	// A deadline in the past wakes any read or write blocked on conn, which is
	// the only portable way to interrupt net.Conn I/O.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	resp, err := exchange(conn, req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return Response{}, ctxErr
		}
		// The conn deadline copied from ctx can fire a moment before ctx's
		// own timer marks it done; report that as the deadline it is.
		if deadline, ok := ctx.Deadline(); ok && !time.Now().Before(deadline) {
			return Response{}, fmt.Errorf("%w: %v", context.DeadlineExceeded, err)
		}
		return Response{}, err
	}
	if !resp.OK {
		return Response{}, &RemoteError{Op: req.Op, Message: resp.Error}
	}
	return resp, nil
}

func exchange(conn net.Conn, req Request) (Response, error) {
	line, err := json.Marshal(req)
	if err != nil {
		return Response{}, err
	}
	if _, err := conn.Write(append(line, '\n')); err != nil {
		return Response{}, fmt.Errorf("send request: %w", err)
	}
	reply, err := readLine(bufio.NewReader(conn))
	if err != nil {
		return Response{}, fmt.Errorf("read reply: %w", err)
	}
	var resp Response
	if err := json.Unmarshal(reply, &resp); err != nil {
		return Response{}, fmt.Errorf("decode reply %q: %w", truncate(reply), err)
	}
	return resp, nil
}

// readLine reads one newline-terminated line of at most maxLine bytes. A final
// line without a newline is accepted, since the peer closes right after it.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxLine {
			return nil, fmt.Errorf("line longer than %d bytes", maxLine)
		}
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return line, nil
		case errors.Is(err, io.EOF):
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

func truncate(b []byte) string {
	const max = 120
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}
