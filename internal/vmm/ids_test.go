package vmm

import (
	"strings"
	"testing"
)

// Ids become jailer arguments and jail file names: one that starts with '-'
// would read as an option ("--id --help").
func TestInstanceAndDriveIDsHostile(t *testing.T) {
	for _, id := range []string{"vm-0123", "0", "A-b-C", "0vm-a", strings.Repeat("a", 64)} {
		if err := ValidInstanceID(id); err != nil {
			t.Errorf("ValidInstanceID(%q): %v", id, err)
		}
	}
	for _, id := range []string{"", "-", "--help", "-vm", "--", "_a", ".a", "a b", "a_b", "a/b", "dev_vm.1", "a\x00", "é", strings.Repeat("a", 65)} {
		if ValidInstanceID(id) == nil {
			t.Errorf("ValidInstanceID accepted %q", id)
		}
	}
	for _, id := range []string{"rootfs", "seed_1", "x-2", "9"} {
		if err := ValidDriveID(id); err != nil {
			t.Errorf("ValidDriveID(%q): %v", id, err)
		}
	}
	for _, id := range []string{"", "-rootfs", "--help", "_seed", ".x", "a:b", "a,b", "a/b", strings.Repeat("a", 33)} {
		if ValidDriveID(id) == nil {
			t.Errorf("ValidDriveID accepted %q", id)
		}
	}
}
