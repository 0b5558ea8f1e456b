package firecracker

import (
	"testing"

	"github.com/banger-dev/banger/test/fcspec"
	"github.com/banger-dev/banger/test/fcspec/oas"
)

// specPathForTest returns the spec path or skips the test, saying why.
func specPathForTest(t testing.TB) string {
	t.Helper()
	p, err := fcspec.SpecPath()
	if err != nil {
		t.Skipf("skipping: needs the official Firecracker API spec: %v", err)
	}
	return p
}

// loadForTest loads the spec with kin-openapi (the reference reading the
// client's contract is checked against): it skips when the spec is absent
// and fails when the spec is present but unusable.
func loadForTest(t testing.TB) *oas.Validator {
	t.Helper()
	v, err := oas.Load(specPathForTest(t))
	if err != nil {
		t.Fatalf("load Firecracker API spec: %v", err)
	}
	return v
}
