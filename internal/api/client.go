package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
)

// ErrDaemonStopped means the daemon went away in the middle of a call: it
// accepted the request and closed the connection before the result. What
// the call had done by then is unknown; the daemon reconciles on restart.
var ErrDaemonStopped = errors.New("the daemon stopped before it answered")

// Client is the typed client for the daemon API. It is safe for concurrent use.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the daemon listening on socket.
func NewClient(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConnsPerHost: 4,
	}
	return &Client{socket: socket, http: &http.Client{Transport: tr}}
}

// Socket is the path this client talks to.
func (c *Client) Socket() string { return c.socket }

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Call invokes method with req and decodes the result into resp (which may be
// nil). When onEvent is non-nil the call streams and onEvent receives every
// progress event before Call returns.
func (c *Client) Call(ctx context.Context, method string, req, resp any, onEvent func(Event)) error {
	var body io.Reader = http.NoBody
	if req != nil {
		b, err := json.Marshal(req)
		if err != nil {
			return fmt.Errorf("encode %s request: %w", method, err)
		}
		body = bytes.NewReader(b)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://bangerd"+pathPrefix+method, body)
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", contentJSON)
	if onEvent != nil {
		hreq.Header.Set("Accept", contentNDJSON)
	}
	hres, err := c.http.Do(hreq)
	if err != nil {
		if isUnreachable(err) {
			return fmt.Errorf("%w (socket %s)", ErrDaemonUnreachable, c.socket)
		}
		if ctx.Err() == nil && isHangUp(err) {
			return daemonStopped(method, err)
		}
		return fmt.Errorf("call %s: %w", method, err)
	}
	defer hres.Body.Close()

	if strings.HasPrefix(hres.Header.Get("Content-Type"), contentNDJSON) {
		return readStream(ctx, hres.Body, method, resp, onEvent)
	}
	var env envelope
	if err := json.NewDecoder(hres.Body).Decode(&env); err != nil {
		if ctx.Err() == nil && isHangUp(err) {
			return daemonStopped(method, err)
		}
		return fmt.Errorf("call %s: unreadable response (HTTP %d): %w", method, hres.StatusCode, err)
	}
	return finish(method, env, resp)
}

func readStream(ctx context.Context, r io.Reader, method string, resp any, onEvent func(Event)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var env envelope
		if err := json.Unmarshal(sc.Bytes(), &env); err != nil {
			return fmt.Errorf("call %s: unreadable stream line: %w", method, err)
		}
		if env.Event != nil {
			onEvent(*env.Event)
			continue
		}
		return finish(method, env, resp)
	}
	err := sc.Err()
	if err != nil && (ctx.Err() != nil || !isHangUp(err)) {
		return fmt.Errorf("call %s: stream broken: %w", method, err)
	}
	if err == nil {
		err = io.ErrUnexpectedEOF // the stream ended cleanly, but without a result
	}
	return daemonStopped(method, err)
}

// daemonStopped is the error of a call whose daemon hung up mid-way.
func daemonStopped(method string, cause error) error {
	return fmt.Errorf("call %s: %w (%v)", method, ErrDaemonStopped, cause)
}

// isHangUp reports whether err is the daemon's end of the connection going
// away: the connection closed or reset mid-response, or closed before
// anything was read (net/http reports that with an unexported error, so it
// is matched by its text).
func isHangUp(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		strings.Contains(err.Error(), "server closed idle connection")
}

func finish(method string, env envelope, resp any) error {
	if env.Error != nil {
		return env.Error
	}
	if resp == nil || len(env.Result) == 0 {
		return nil
	}
	if err := json.Unmarshal(env.Result, resp); err != nil {
		return fmt.Errorf("call %s: decode result: %w", method, err)
	}
	return nil
}

func isUnreachable(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOTSOCK)
}
