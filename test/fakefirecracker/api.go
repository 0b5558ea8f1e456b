package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/banger-dev/banger/test/fcspec"
)

// apiServer answers the Firecracker API on the unix socket. Every request is
// checked in the order Firecracker checks it: request shape (body present or
// not), path and method, body against the official spec (fcspec), then the
// VMM's own rules (pre-/post-boot, files exist, one root drive).
type apiServer struct {
	vm   *microVM
	spec *fcspec.Validator
	log  *vmmLog
}

func (s *apiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r)
	if err != nil {
		writeFault(w, err.Error())
		return
	}
	path := r.URL.Path
	s.log.logf(levelInfo, "%s", describe(r.Method, path, body))

	result, err := s.dispatch(r.Method, path, body)
	w.Header().Set("Server", "Firecracker API")
	if err != nil {
		s.log.logf(levelError, "Received Error. Status code: 400 Bad Request. Message: %s", err)
		writeFault(w, err.Error())
		return
	}
	if result == nil {
		s.log.logf(levelInfo, "The request was executed successfully. Status code: 204 No Content.")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	s.log.logf(levelInfo, "The request was executed successfully. Status code: 200 OK.")
	writeJSON(w, http.StatusOK, result)
}

// readBody reads the request body the way Firecracker's micro_http does: only
// Content-Length delimits a body. A chunked request therefore arrives as a
// request without a body, which is exactly the confusing failure a client
// would meet against the real thing.
func readBody(r *http.Request) ([]byte, error) {
	defer r.Body.Close()
	if r.ContentLength <= 0 {
		_, _ = io.Copy(io.Discard, r.Body)
		return nil, nil
	}
	return io.ReadAll(r.Body)
}

func (s *apiServer) dispatch(method, path string, body []byte) (any, error) {
	switch {
	case method == http.MethodGet && len(body) > 0:
		return nil, faultf("GET request cannot have a body.")
	case method == http.MethodPut && len(body) == 0:
		return nil, faultf("Empty PUT request.")
	case method == http.MethodPatch && len(body) == 0 && !strings.HasPrefix(path, "/balloon"):
		return nil, faultf("Empty PATCH request.")
	}
	if err := s.spec.ValidateRequest(method, path, body); err != nil {
		if errors.Is(err, fcspec.ErrUnknownPath) || errors.Is(err, fcspec.ErrMethodNotAllowed) {
			return nil, invalidPathMethod(method, path)
		}
		// Firecracker reports schema violations as serde errors; the text
		// after the prefix is the validator's, not serde's.
		return nil, faultf("An error occurred when deserializing the json body of a request: %v.", err)
	}
	rt, id, ok := findRoute(method, path)
	if !ok {
		return nil, notImplemented(method, path)
	}
	if rt.hasID && !validID(id) {
		return nil, faultf("API Resource IDs can only contain alphanumeric characters and underscores.")
	}
	return s.vm.apply(rt, id, body)
}

// invalidPathMethod is Firecracker's answer to an unknown route. Firecracker
// names only the first path segment ("GET foo" for GET /foo/bar).
func invalidPathMethod(method, path string) error {
	first, _, _ := strings.Cut(strings.TrimLeft(path, "/"), "/")
	return faultf("Invalid request method and/or path: %s %s.", method, first)
}

// validID mirrors Firecracker's checked_id for drive and interface IDs.
func validID(id string) bool {
	if id == "" {
		return false
	}
	for _, c := range id {
		if c != '_' && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// describe is Firecracker's log line for a received request.
func describe(method, path string, body []byte) string {
	verb := strings.ToUpper(method[:1]) + strings.ToLower(method[1:])
	if len(body) == 0 || path == "/mmds" {
		return "The API server received a " + verb + " request on " + strconv.Quote(path) + "."
	}
	return "The API server received a " + verb + " request on " + strconv.Quote(path) + " with body " + strconv.Quote(string(body)) + "."
}

func writeFault(w http.ResponseWriter, msg string) {
	writeJSON(w, http.StatusBadRequest, map[string]string{"fault_message": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		data, _ = json.Marshal(map[string]string{"fault_message": err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	_, _ = w.Write(data)
}
