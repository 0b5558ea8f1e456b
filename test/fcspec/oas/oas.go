// Package oas is the reference validator for package oas: the official
// Firecracker OpenAPI (Swagger 2.0) description read by kin-openapi
// (converted to OpenAPI 3, routed by its legacy router, requests checked by
// openapi3filter). The contract test of banger's Firecracker client uses it,
// and fcspec's differential test requires fcspec's small validator to give
// the same verdict on every request of a generated corpus. Its errors wrap
// fcspec's, so the two are interchangeable to a caller.
package oas

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"errors"

	"github.com/banger-dev/banger/test/fcspec"
	"github.com/getkin/kin-openapi/openapi2"
	"github.com/getkin/kin-openapi/openapi2conv"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/oasdiff/yaml"
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

// Load reads the Swagger 2.0 file at path, converts it to OpenAPI 3 and
// builds its router.
func Load(path string) (*Validator, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("oas: read spec: %w", err)
	}
	doc2, err := parseSwagger(raw)
	if err != nil {
		return nil, fmt.Errorf("oas: parse %s: %w", path, err)
	}
	return newValidator(path, doc2)
}

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
		return nil, fmt.Errorf("oas: %s: want a Swagger 2.0 document, got swagger %q", path, doc2.Swagger)
	}
	doc3, err := openapi2conv.ToV3(doc2)
	if err != nil {
		return nil, fmt.Errorf("oas: convert %s to OpenAPI 3: %w", path, err)
	}
	closeObjects(doc3)
	router, err := legacy.NewRouter(doc3)
	if err != nil {
		return nil, fmt.Errorf("oas: build router for %s: %w", path, err)
	}
	return &Validator{doc: doc3, router: router, version: doc2.Info.Version}, nil
}

// SpecVersion is the spec's info.version, e.g. "1.16.1" or "1.17.0-dev".
func (v *Validator) SpecVersion() string { return v.version }

// ValidateRequest reports whether Firecracker's API accepts method on path
// with body (JSON, or empty for no body). The returned error wraps one of
// fcspec.ErrUnknownPath, fcspec.ErrMethodNotAllowed or
// fcspec.ErrInvalidRequest and reads well as a Firecracker fault_message.
func (v *Validator) ValidateRequest(method, path string, body []byte) error {
	req, err := http.NewRequest(method, serverURL+path, nil)
	if err != nil {
		return fmt.Errorf("%s %s: %w: %w", method, path, fcspec.ErrInvalidRequest, err)
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
		return fmt.Errorf("%s %s: %w: %w", method, path, fcspec.ErrInvalidRequest, err)
	}
	if err := fcspec.CheckPathIDMatchesBody(route.Path, params, body); err != nil {
		return fmt.Errorf("%s %s: %w: %w", method, path, fcspec.ErrInvalidRequest, err)
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
		return fmt.Errorf("%s %s: %w", method, path, fcspec.ErrMethodNotAllowed)
	}
	return fmt.Errorf("%s %s: %w", method, path, fcspec.ErrUnknownPath)
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

// SpecPathForTest returns the spec's path, or skips tb saying why (the
// spec lives beside the repository, not in it).
func SpecPathForTest(tb testing.TB) string {
	tb.Helper()
	p, err := fcspec.SpecPath()
	if err != nil {
		tb.Skipf("skipping: needs the official Firecracker API spec: %v", err)
	}
	return p
}

// LoadForTest loads the reference validator: it skips when the spec is
// absent and fails when the spec is present but unusable.
func LoadForTest(tb testing.TB) *Validator {
	tb.Helper()
	v, err := Load(SpecPathForTest(tb))
	if err != nil {
		tb.Fatalf("load Firecracker API spec with kin-openapi: %v", err)
	}
	return v
}
