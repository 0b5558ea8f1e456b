package fcspec

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// EnvSpecPath overrides where SpecPath looks for the spec.
const EnvSpecPath = "BANGER_FC_SPEC"

// specRel is where the spec lives relative to the directory that holds the
// repository checkout (the repo is /work/main, the spec /work/shared/...).
const specRel = "shared/firecracker/firecracker-api.yaml"

// ErrSpecNotFound means no spec file was found; tests skip on it.
var ErrSpecNotFound = errors.New("firecracker API spec not found")

// SpecPath finds the Firecracker API spec: $BANGER_FC_SPEC when set (and it
// must then exist), otherwise the first <dir>/shared/firecracker/
// firecracker-api.yaml walking up from the working directory, which covers
// ../shared/... seen from the repository root.
func SpecPath() (string, error) {
	if p := os.Getenv(EnvSpecPath); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%w: $%s=%s: %w", ErrSpecNotFound, EnvSpecPath, p, err)
		}
		return p, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("%w: working directory: %w", ErrSpecNotFound, err)
	}
	var tried []string
	for dir := wd; ; dir = filepath.Dir(dir) {
		p := filepath.Join(dir, specRel)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
		tried = append(tried, p)
		if filepath.Dir(dir) == dir {
			break
		}
	}
	return "", fmt.Errorf("%w: set $%s or place it at one of: %s", ErrSpecNotFound, EnvSpecPath, strings.Join(tried, ", "))
}

// TB is the part of testing.TB the test helpers use; declared here so this
// package does not import "testing" into production binaries.
type TB interface {
	Helper()
	Skipf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// SpecPathForTest returns the spec path or skips the test, saying why.
func SpecPathForTest(t TB) string {
	t.Helper()
	p, err := SpecPath()
	if err != nil {
		t.Skipf("skipping: needs the official Firecracker API spec: %v", err)
	}
	return p
}

// LoadForTest loads the spec for a test: it skips when the spec is absent
// and fails when the spec is present but unusable.
func LoadForTest(t TB, opts ...Option) *Validator {
	t.Helper()
	v, err := Load(SpecPathForTest(t), opts...)
	if err != nil {
		t.Fatalf("load Firecracker API spec: %v", err)
	}
	return v
}
