package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Upgrade protocols: after a successful call the connection carries the
// guest agent's frames (internal/agent) between the CLI and the agent, and
// the daemon relays them untouched.
const (
	UpgradeExec = "banger-exec"
	UpgradeCopy = "banger-copy"
)

// HandleRaw mounts h for method, bypassing the JSON envelope: h gets the
// request as it arrived and owns the response (and may hijack the
// connection).
func (s *Server) HandleRaw(method string, h http.HandlerFunc) {
	if s.raw == nil {
		s.raw = map[string]http.HandlerFunc{}
	}
	s.raw[method] = h
}

// Relay is what an upgrade method does with the connection once it has been
// switched: it owns conn until it returns, and closes it.
type Relay func(conn io.ReadWriteCloser)

// HandleUpgrade registers a method that switches the connection to a raw
// stream. The request (POST, "Connection: Upgrade", "Upgrade: protocol",
// JSON body decoded strictly into Req) goes to fn; an error comes back as an
// ordinary JSON error response, so the client sees the same errors as for
// any method. On success the daemon answers 101 Switching Protocols and
// runs the returned Relay on the hijacked connection.
func HandleUpgrade[Req any](s *Server, method, protocol string, fn func(ctx context.Context, req Req) (Relay, error)) {
	s.HandleRaw(method, func(w http.ResponseWriter, r *http.Request) {
		start := s.now()
		if r.Method != http.MethodPost || !headerHas(r.Header, "Connection", "upgrade") || !strings.EqualFold(r.Header.Get("Upgrade"), protocol) {
			err := Errorf(CodeInvalidArgument, "%s switches the connection to %s: send POST with \"Connection: Upgrade\" and \"Upgrade: %s\"", method, protocol, protocol)
			s.writeFinal(w, nil, err)
			s.logCall(method, start, err)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBytes+1))
		if err != nil || len(body) > maxRequestBytes {
			err := Errorf(CodeInvalidArgument, "read %s request: too large or unreadable", method)
			s.writeFinal(w, nil, err)
			s.logCall(method, start, err)
			return
		}
		var req Req
		if len(bytes.TrimSpace(body)) > 0 {
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&req); err != nil {
				err := Errorf(CodeInvalidArgument, "malformed %s request: %s", method, strings.TrimPrefix(err.Error(), "json: "))
				s.writeFinal(w, nil, err)
				s.logCall(method, start, err)
				return
			}
		}
		relay, err := fn(r.Context(), req)
		if err != nil {
			s.writeFinal(w, nil, err)
			s.logCall(method, start, err)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			err := Errorf(CodeInternal, "%s: cannot switch protocols on this connection: %v", method, err)
			s.writeFinal(w, nil, err)
			s.logCall(method, start, err)
			return
		}
		s.logCall(method, start, nil)
		// The server's read and write timeouts belong to HTTP, not to a
		// session that may legitimately sit idle for hours.
		_ = conn.SetDeadline(time.Time{})
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", protocol)
		if err := brw.Flush(); err != nil {
			conn.Close()
			return
		}
		relay(hijacked{Reader: readerFor(brw.Reader, conn), Conn: conn})
	})
}

// readerFor keeps bytes the server already buffered from the client.
func readerFor(br *bufio.Reader, conn net.Conn) io.Reader {
	if br.Buffered() > 0 {
		return io.MultiReader(bytes.NewReader(buffered(br)), conn)
	}
	return conn
}

func buffered(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return b
}

type hijacked struct {
	io.Reader
	net.Conn
}

func (h hijacked) Read(p []byte) (int, error) { return h.Reader.Read(p) }

func headerHas(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, part := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}

// upgrade makes an upgrade call and returns the switched connection.
func (c *Client) upgrade(ctx context.Context, method, protocol string, req any) (io.ReadWriteCloser, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode %s request: %w", method, err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://bangerd"+pathPrefix+method, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", contentJSON)
	hreq.Header.Set("Connection", "Upgrade")
	hreq.Header.Set("Upgrade", protocol)
	hres, err := c.http.Do(hreq)
	if err != nil {
		if isUnreachable(err) {
			return nil, fmt.Errorf("%w (socket %s)", ErrDaemonUnreachable, c.socket)
		}
		return nil, fmt.Errorf("call %s: %w", method, err)
	}
	if hres.StatusCode == http.StatusSwitchingProtocols {
		rwc, ok := hres.Body.(io.ReadWriteCloser)
		if !ok {
			hres.Body.Close()
			return nil, fmt.Errorf("call %s: the daemon switched protocols but the connection is not writable", method)
		}
		return rwc, nil
	}
	defer hres.Body.Close()
	var env envelope
	if err := json.NewDecoder(hres.Body).Decode(&env); err != nil {
		return nil, fmt.Errorf("call %s: unreadable response (HTTP %d): %w", method, hres.StatusCode, err)
	}
	if err := finish(method, env, nil); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("call %s: the daemon answered HTTP %d instead of switching to %s", method, hres.StatusCode, protocol)
}
