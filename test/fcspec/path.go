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
