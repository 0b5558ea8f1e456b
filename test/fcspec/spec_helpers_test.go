package fcspec_test

import (
	"testing"

	"github.com/banger-dev/banger/test/fcspec"
	"github.com/banger-dev/banger/test/fcspec/oas"
)

// requestValidator is what both validators offer.
type requestValidator interface {
	ValidateRequest(method, path string, body []byte) error
	SpecVersion() string
}

// loadForTest compiles the spec uncached: it skips when the spec is absent
// and fails when the spec is present but unusable.
func loadForTest(t testing.TB) *fcspec.Validator {
	t.Helper()
	v, err := fcspec.Load(oas.SpecPathForTest(t), "")
	if err != nil {
		t.Fatalf("load Firecracker API spec: %v", err)
	}
	return v
}
