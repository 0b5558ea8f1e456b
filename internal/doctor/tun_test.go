package doctor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/installmeta"
)

// tunHost is a scratch tree with a stand-in for /dev/net/tun (a plain file:
// the check only opens it or reads its mode) and an install for owner.
func tunHost(t *testing.T, mode os.FileMode, uid, gid int, owner *installmeta.Meta) (Host, string) {
	t.Helper()
	root := t.TempDir()
	dev := filepath.Join(root, "dev", "net", "tun")
	if err := os.MkdirAll(filepath.Dir(dev), 0o755); err != nil {
		t.Fatal(err)
	}
	if mode != 0 {
		if err := os.WriteFile(dev, nil, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dev, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dev, uid, gid); err != nil {
			t.Skipf("cannot chown (needs root): %v", err)
		}
	}
	meta := filepath.Join(root, "etc", "banger", "install.toml")
	if owner != nil {
		if err := os.MkdirAll(filepath.Dir(meta), 0o755); err != nil {
			t.Fatal(err)
		}
		owner.InstalledAt = time.Unix(0, 0)
		if err := installmeta.Write(meta, *owner); err != nil {
			t.Fatal(err)
		}
	}
	return Host{Root: root}, meta
}

func TestTunCheckForTheOwner(t *testing.T) {
	owner := installmeta.Meta{OwnerUser: "tester", OwnerUID: 4242, OwnerGID: 4343}
	for _, tc := range []struct {
		name     string
		mode     os.FileMode
		uid, gid int
		want     Status
	}{
		{"kernel default", 0o666, 0, 0, Pass},
		{"root only", 0o600, 0, 0, Fail},
		{"group of the owner", 0o660, 0, 4343, Pass},
		{"another group", 0o660, 0, 5000, Fail},
		{"the owner's", 0o600, 4242, 0, Pass},
		{"missing", 0, 0, 0, Fail},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := owner
			h, meta := tunHost(t, tc.mode, tc.uid, tc.gid, &o)
			// doctor run by root (sudo) for the owner
			r := TunCheck(h, meta, 0).Run(context.Background())
			if r.Status != tc.want {
				t.Fatalf("%s: %+v", tc.want, r)
			}
			if r.Status == Fail && !strings.Contains(strings.Join(r.Details, " "), "sudo") {
				t.Errorf("no fix given: %+v", r)
			}
		})
	}
}

func TestTunCheckOpensAsTheCaller(t *testing.T) {
	owner := installmeta.Meta{OwnerUser: "me", OwnerUID: os.Getuid(), OwnerGID: os.Getgid()}
	h, meta := tunHost(t, 0o666, 0, 0, &owner)
	if r := TunCheck(h, meta, os.Getuid()).Run(context.Background()); r.Status != Pass || !strings.Contains(r.Summary, "the owner (me)") {
		t.Fatalf("%+v", r)
	}
	h, meta = tunHost(t, 0, 0, 0, &owner)
	if r := TunCheck(h, meta, os.Getuid()).Run(context.Background()); r.Status != Fail || !strings.Contains(r.Summary, "missing") {
		t.Fatalf("missing device, as the owner: %+v", r)
	}
	// User mode (no install): a problem is a warning, the caller's own.
	h, meta = tunHost(t, 0, 0, 0, nil)
	if r := TunCheck(h, meta, os.Getuid()).Run(context.Background()); r.Status != Warn {
		t.Fatalf("user mode: %+v", r)
	}
}
