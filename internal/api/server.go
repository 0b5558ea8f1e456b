package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Progress reports an event to the caller; it never blocks the operation for
// long and is safe to call from several goroutines.
type Progress func(Event)

// Server routes API methods to handlers.
type Server struct {
	log     *slog.Logger
	methods map[string]handler
	raw     map[string]http.HandlerFunc // HandleRaw; see raw.go
	now     func() time.Time
}

type handler func(ctx context.Context, body []byte, p Progress) (any, error)

// NewServer returns a server with no methods; add them with Handle.
func NewServer(log *slog.Logger, now func() time.Time) *Server {
	return &Server{log: log, methods: map[string]handler{}, now: now}
}

// maxRequestBytes caps request bodies; no API request is anywhere near this.
const maxRequestBytes = 1 << 20

// Handle registers fn as method. Req is decoded strictly from the request
// body (unknown fields are an error, so a typo in a script is caught).
func Handle[Req, Resp any](s *Server, method string, fn func(ctx context.Context, req Req, p Progress) (Resp, error)) {
	s.methods[method] = func(ctx context.Context, body []byte, p Progress) (any, error) {
		var req Req
		if len(bytes.TrimSpace(body)) > 0 {
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&req); err != nil {
				return nil, Errorf(CodeInvalidArgument, "malformed %s request: %s", method, strings.TrimPrefix(err.Error(), "json: "))
			}
		}
		return fn(ctx, req, p)
	}
}

// Methods lists the registered method names (for daemon.info and tests).
func (s *Server) Methods() []string {
	out := make([]string, 0, len(s.methods)+len(s.raw))
	for m := range s.methods {
		out = append(out, m)
	}
	for m := range s.raw {
		out = append(out, m)
	}
	return out
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	method, ok := strings.CutPrefix(r.URL.Path, pathPrefix)
	if !ok || method == "" {
		writeJSON(w, http.StatusNotFound, envelope{Error: Errorf(CodeNotFound, "no such endpoint %q; API methods live under %s<method>", r.URL.Path, pathPrefix)})
		return
	}
	if raw, ok := s.raw[method]; ok {
		raw(w, r)
		return
	}
	h, ok := s.methods[method]
	if !ok {
		writeJSON(w, http.StatusNotFound, envelope{Error: Errorf(CodeNotFound, "unknown API method %q", method)})
		return
	}
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		writeJSON(w, http.StatusMethodNotAllowed, envelope{Error: Errorf(CodeInvalidArgument, "use POST (or GET for requests without a body) for %s", method)})
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBytes+1))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, envelope{Error: Errorf(CodeInvalidArgument, "read request: %v", err)})
		return
	}
	if len(body) > maxRequestBytes {
		writeJSON(w, http.StatusRequestEntityTooLarge, envelope{Error: Errorf(CodeInvalidArgument, "request larger than %d bytes", maxRequestBytes)})
		return
	}

	start := s.now()
	streaming := strings.Contains(r.Header.Get("Accept"), contentNDJSON)
	if streaming {
		err = s.serveStreaming(w, r, h, body)
	} else {
		var result any
		result, err = h(r.Context(), body, func(Event) {})
		s.writeFinal(w, result, err)
	}
	s.logCall(method, start, err)
}

// serveStreaming runs h, sending its events and then its result as NDJSON
// lines. It returns h's error for the call log; the client got it already.
func (s *Server) serveStreaming(w http.ResponseWriter, r *http.Request, h handler, body []byte) error {
	w.Header().Set("Content-Type", contentNDJSON)
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	send := func(e envelope) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(e)
		if flusher != nil {
			flusher.Flush()
		}
	}
	result, err := h(r.Context(), body, func(ev Event) {
		if ev.Time.IsZero() {
			ev.Time = s.now()
		}
		send(envelope{Event: &ev})
	})
	send(finalEnvelope(result, err))
	return err
}

func (s *Server) writeFinal(w http.ResponseWriter, result any, err error) {
	env := finalEnvelope(result, err)
	status := http.StatusOK
	if env.Error != nil {
		status = env.Error.Code.httpStatus()
	}
	writeJSON(w, status, env)
}

func finalEnvelope(result any, err error) envelope {
	if err != nil {
		return envelope{Error: toAPIError(err)}
	}
	raw, merr := json.Marshal(result)
	if merr != nil {
		return envelope{Error: Errorf(CodeInternal, "encode response: %v", merr)}
	}
	return envelope{Result: raw}
}

func toAPIError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		// Keep the outer context the daemon added around the coded error.
		if err.Error() != e.Message {
			return &Error{Code: e.Code, Message: err.Error(), Hint: e.Hint}
		}
		return e
	}
	if errors.Is(err, context.Canceled) {
		return &Error{Code: CodeCanceled, Message: err.Error()}
	}
	return &Error{Code: CodeInternal, Message: err.Error(), Hint: "this is a bug or a host problem; `banger daemon logs` has details"}
}

func (s *Server) logCall(method string, start time.Time, err error) {
	attrs := []any{"method", method, "duration", s.now().Sub(start)}
	if err != nil {
		s.log.Warn("api call failed", append(attrs, "code", CodeOf(err), "err", err)...)
		return
	}
	s.log.Debug("api call", attrs...)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", contentJSON)
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		fmt.Fprintf(w, `{"error":{"code":"internal","message":%q}}`, err.Error())
	}
}
