// Package firecracker is banger's Firecracker driver: a typed client for the
// Firecracker API socket (contract-tested against the official spec), the
// host half of Firecracker's hybrid vsock, and supervision of the firecracker
// process itself (launch, stop, kill, adopt after a daemon restart).
package firecracker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// APIError is a non-2xx answer from Firecracker. FaultMessage is
// Firecracker's own explanation and is what a user needs to see.
type APIError struct {
	Method       string
	Path         string
	Status       int
	FaultMessage string
}

func (e *APIError) Error() string {
	msg := e.FaultMessage
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("firecracker: %s %s: %d: %s", e.Method, e.Path, e.Status, msg)
}

// Client talks to one Firecracker process over its API Unix socket. It is
// safe for concurrent use. Each call is bounded by its context only.
type Client struct {
	socketPath string
	http       *http.Client
}

// NewClient returns a client for the API socket at socketPath. Nothing is
// dialled until the first call.
func NewClient(socketPath string) *Client {
	var d net.Dialer
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socketPath)
		},
		// Go only retries idempotent methods on a connection the server
		// closed while idle, and most Firecracker calls are PUT; a fresh
		// connection per call on a local socket costs microseconds and
		// never fails that way.
		DisableKeepAlives: true,
	}
	return &Client{socketPath: socketPath, http: &http.Client{Transport: tr}}
}

// SocketPath is the API socket this client dials.
func (c *Client) SocketPath() string { return c.socketPath }

// do sends one request. in is marshalled as the JSON body when non-nil; out
// receives the JSON answer when non-nil.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("firecracker: %s %s: encode body: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	// The host part is ignored by the unix dialer but must be a valid name.
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, body)
	if err != nil {
		return fmt.Errorf("firecracker: %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("firecracker: %s %s: %w", method, path, unwrapURLError(err))
	}
	defer resp.Body.Close()
	// Firecracker's answers are small; the cap only guards against a
	// misbehaving peer on the socket.
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("firecracker: %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		apiErr := &APIError{Method: method, Path: path, Status: resp.StatusCode}
		var f apiFault
		if json.Unmarshal(data, &f) == nil && f.FaultMessage != "" {
			apiErr.FaultMessage = f.FaultMessage
		} else {
			apiErr.FaultMessage = strings.TrimSpace(string(data))
		}
		return apiErr
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("firecracker: %s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// unwrapURLError drops net/http's `Put "http://localhost/x":` prefix, which
// repeats what our own message already says and shows a fake URL.
func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

// pathID escapes an id for use as one path segment.
func pathID(id string) string { return url.PathEscape(id) }
