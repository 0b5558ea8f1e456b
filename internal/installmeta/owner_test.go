package installmeta

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/paths"
)

// TestOwnerDefaultsToTheSystemInstall: after `sudo banger system install
// --owner tester`, tester's plain `banger vm list` started a second,
// user-mode daemon with an empty database (found by the systemd tier).
func TestOwnerDefaultsToTheSystemInstall(t *testing.T) {
	system := paths.System(t.TempDir())
	if OwnedBy(system, 1000) {
		t.Fatal("no install recorded: user mode")
	}
	if err := os.MkdirAll(filepath.Dir(system.InstallMetaPath()), 0o755); err != nil {
		t.Fatal(err)
	}
	meta := Meta{Version: "v1", OwnerUser: "tester", OwnerUID: 1000, OwnerGID: 1000, InstalledAt: time.Unix(0, 0)}
	if err := Write(system.InstallMetaPath(), meta); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		uid  int
		want bool
	}{{1000, true}, {1001, false}, {0, false}} {
		if got := OwnedBy(system, tc.uid); got != tc.want {
			t.Errorf("uid %d: system mode %v, want %v", tc.uid, got, tc.want)
		}
	}

}
