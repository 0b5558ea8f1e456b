package fcspec_test

import (
	"testing"

	"github.com/banger-dev/banger/internal/vmm/firecracker/fcspec"
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

// loadForTest loads the spec uncached: it skips when the spec is absent
// and fails when the spec is present but unusable.
func loadForTest(t testing.TB) *fcspec.Validator {
	t.Helper()
	v, err := fcspec.Load(specPathForTest(t), "")
	if err != nil {
		t.Fatalf("load Firecracker API spec: %v", err)
	}
	return v
}
