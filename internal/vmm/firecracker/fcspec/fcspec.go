// Package fcspec validates Firecracker API requests against the official
// Firecracker OpenAPI (Swagger 2.0) description, read from disk at run time.
//
// It exists so that banger's Firecracker client can be contract-tested, and so
// that the fake Firecracker used in end-to-end tests rejects exactly what the
// real one would, on a machine where no Firecracker binary can run. The spec
// file is never vendored into the repository; see SpecPath for how it is found.
package fcspec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/getkin/kin-openapi/openapi2"
	"github.com/getkin/kin-openapi/openapi2conv"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/oasdiff/yaml"
)

// Errors ValidateRequest wraps, so callers (such as a fake Firecracker) can
// choose a status code with errors.Is.
var (
	// ErrUnknownPath means the path is not part of the Firecracker API.
	ErrUnknownPath = errors.New("path is not in the Firecracker API")
	// ErrMethodNotAllowed means the path exists but not with this method.
	ErrMethodNotAllowed = errors.New("method not allowed on this path")
	// ErrInvalidRequest means the request (usually its JSON body) breaks the schema.
	ErrInvalidRequest = errors.New("request does not match the Firecracker API schema")
)

// serverURL is the origin requests are built against; it must match the
// spec's host/basePath ("http://localhost/") or the router finds no server.
const serverURL = "http://localhost"

// Validator checks requests against one loaded spec. It is safe for
// concurrent use once Load has returned.
type Validator struct {
	doc     *openapi3.T
	router  routers.Router
	version string
}

// parseSwagger decodes the YAML spec; this is most of a load's time (≈15 ms
// for Firecracker's 62 KB), which Load's cache avoids.
func parseSwagger(raw []byte) (*openapi2.T, error) {
	var doc2 openapi2.T
	if _, err := yaml.Unmarshal(raw, &doc2, yaml.DecodeOpts{DisableTimestamps: true}); err != nil {
		return nil, err
	}
	return &doc2, nil
}

// newValidator converts a decoded Swagger 2.0 document and builds its
// router. Object properties the schema does not declare are rejected: Swagger
// 2.0 allows them unless a definition says `additionalProperties: false`, but
// Firecracker deserialises with serde's deny_unknown_fields and answers 400,
// so a request the validator accepts is one Firecracker accepts. Objects that
// explicitly allow extra properties (the MMDS contents, metric properties)
// stay open.
func newValidator(path string, doc2 *openapi2.T) (*Validator, error) {
	if doc2.Swagger != "2.0" {
		return nil, fmt.Errorf("fcspec: %s: want a Swagger 2.0 document, got swagger %q", path, doc2.Swagger)
	}
	doc3, err := openapi2conv.ToV3(doc2)
	if err != nil {
		return nil, fmt.Errorf("fcspec: convert %s to OpenAPI 3: %w", path, err)
	}
	closeObjects(doc3)
	router, err := legacy.NewRouter(doc3)
	if err != nil {
		return nil, fmt.Errorf("fcspec: build router for %s: %w", path, err)
	}
	return &Validator{doc: doc3, router: router, version: doc2.Info.Version}, nil
}

// SpecVersion is the spec's info.version, e.g. "1.16.1" or "1.17.0-dev".
func (v *Validator) SpecVersion() string { return v.version }

// ValidateRequest reports whether Firecracker's API accepts method on path
// with body (JSON, or empty for no body). The returned error wraps one of
// ErrUnknownPath, ErrMethodNotAllowed or ErrInvalidRequest and reads well as
// a Firecracker fault_message.
func (v *Validator) ValidateRequest(method, path string, body []byte) error {
	req, err := http.NewRequest(method, serverURL+path, nil)
	if err != nil {
		return fmt.Errorf("%s %s: %w: %w", method, path, ErrInvalidRequest, err)
	}
	if len(body) > 0 {
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		req.ContentLength = int64(len(body))
		req.Header.Set("Content-Type", "application/json")
	}

	route, params, err := v.router.FindRoute(req)
	if err != nil {
		return routeError(method, path, err)
	}
	fopts := &openapi3filter.Options{
		SkipSettingDefaults: true,
		// A body sent to an operation that takes none is a client bug;
		// Firecracker would ignore it, but we want to know.
		RejectWhenRequestBodyNotSpecified: true,
		AuthenticationFunc:                openapi3filter.NoopAuthenticationFunc,
	}
	// One line per error: the message becomes a fault_message, and the
	// default dumps the whole schema and value.
	fopts.WithCustomSchemaErrorFunc(shortSchemaError)
	in := &openapi3filter.RequestValidationInput{
		Request:    req,
		PathParams: params,
		Route:      route,
		Options:    fopts,
	}
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
		return fmt.Errorf("%s %s: %w: %w", method, path, ErrInvalidRequest, err)
	}
	if err := checkPathIDMatchesBody(route.Path, params, body); err != nil {
		return fmt.Errorf("%s %s: %w: %w", method, path, ErrInvalidRequest, err)
	}
	return nil
}

func shortSchemaError(err *openapi3.SchemaError) string {
	if p := err.JSONPointer(); len(p) > 0 {
		return fmt.Sprintf("field %q: %s", strings.Join(p, "."), err.Reason)
	}
	return err.Reason
}

func routeError(method, path string, err error) error {
	var re *routers.RouteError
	if errors.As(err, &re) && re.Reason == routers.ErrMethodNotAllowed.Error() {
		return fmt.Errorf("%s %s: %w", method, path, ErrMethodNotAllowed)
	}
	return fmt.Errorf("%s %s: %w", method, path, ErrUnknownPath)
}

// pathIDField names the path parameter of template that the body must
// repeat. The schema cannot say this, but Firecracker refuses a mismatch
// ("The id from the path does not match the id from the body!").
func pathIDField(template string) (string, bool) {
	switch template {
	case "/drives/{drive_id}":
		return "drive_id", true
	case "/network-interfaces/{iface_id}":
		return "iface_id", true
	case "/pmem/{id}":
		return "id", true
	}
	return "", false
}

func checkPathIDMatchesBody(template string, params map[string]string, body []byte) error {
	field, ok := pathIDField(template)
	if !ok || len(body) == 0 {
		return nil
	}
	var obj map[string]any
	if err := json.Unmarshal(body, &obj); err != nil {
		return nil // the schema check already judged the body
	}
	if got, _ := obj[field].(string); got != params[field] {
		return fmt.Errorf("the id from the path (%q) does not match the id from the body (%q)", params[field], got)
	}
	return nil
}

// closeObjects sets additionalProperties: false on every object schema that
// declares properties and says nothing about additional ones, mirroring
// Firecracker's deny_unknown_fields.
func closeObjects(doc *openapi3.T) {
	seen := map[*openapi3.Schema]bool{}
	for _, s := range doc.Components.Schemas {
		closeSchema(s, seen)
	}
	for _, item := range doc.Paths.Map() {
		for _, op := range item.Operations() {
			if op.RequestBody == nil || op.RequestBody.Value == nil {
				continue
			}
			for _, mt := range op.RequestBody.Value.Content {
				closeSchema(mt.Schema, seen)
			}
		}
	}
}

func closeSchema(ref *openapi3.SchemaRef, seen map[*openapi3.Schema]bool) {
	if ref == nil || ref.Value == nil || seen[ref.Value] {
		return
	}
	s := ref.Value
	seen[s] = true
	if len(s.Properties) > 0 && s.AdditionalProperties.Has == nil && s.AdditionalProperties.Schema == nil {
		no := false
		s.AdditionalProperties.Has = &no
	}
	for _, p := range s.Properties {
		closeSchema(p, seen)
	}
	closeSchema(s.Items, seen)
	closeSchema(s.AdditionalProperties.Schema, seen)
	closeSchema(s.Not, seen)
	for _, group := range []openapi3.SchemaRefs{s.AllOf, s.AnyOf, s.OneOf} {
		for _, sub := range group {
			closeSchema(sub, seen)
		}
	}
}
