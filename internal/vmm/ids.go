package vmm

import (
	"fmt"
	"strings"
)

// ValidInstanceID is Firecracker's and the jailer's rule for a VM's
// instance id (--id): 1 to 64 letters, digits and hyphens, narrowed to
// start with a letter or digit so an id never reads as an option
// ("--help"). The driver checks it up front (a clear error instead of an
// early exit) and the root helper checks it again (it trusts no caller).
func ValidInstanceID(id string) error { return validToken("vm id", id, 64, "-") }

// ValidDriveID is the rule for a drive id, which names a file in a jail
// ("drive-<id>") and Firecracker's drive_id.
func ValidDriveID(id string) error { return validToken("drive id", id, 32, "-_") }

// validToken is the one rule for ids that reach a command line or a file
// name: 1 to max ASCII letters and digits plus the characters in extra, the
// first a letter or digit (so no id can pass for an option or a hidden
// file).
func validToken(what, s string, max int, extra string) error {
	if s == "" || len(s) > max {
		return fmt.Errorf("%s %q must be 1 to %d characters", what, s, max)
	}
	alnum := func(r rune) bool { return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' }
	for _, r := range s {
		if !alnum(r) && !strings.ContainsRune(extra, r) {
			return fmt.Errorf("%s %q may contain only letters, digits and %q", what, s, extra)
		}
	}
	if !alnum(rune(s[0])) {
		return fmt.Errorf("%s %q must start with a letter or digit", what, s)
	}
	return nil
}
