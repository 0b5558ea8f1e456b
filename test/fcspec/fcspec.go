// Package fcspec validates Firecracker API requests against the official
// Firecracker OpenAPI (Swagger 2.0) description, read from disk at run time.
//
// It exists so that the fake Firecracker used in end-to-end tests rejects
// exactly what the real one would, on a machine where no Firecracker binary
// can run. The fake starts once per VM, so this validator is small: it
// compiles the spec into a table of routes and schemas (cached by the spec's
// hash) and checks requests against that, without an OpenAPI library, whose
// package initialisation alone cost the fake several milliseconds per start.
// Package oas is the reference it is proven against: the same spec read by
// kin-openapi, and a differential test that requires the same verdict on
// every request of a generated corpus. The spec file is never vendored into
// the repository; see SpecPath for how it is found.
package fcspec

import "errors"

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
