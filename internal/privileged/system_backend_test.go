package privileged

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/system/systemtest"
)

// dmsetup is the real disk.DMSetup over a recording runner that answers
// like dmsetup with the devices in have (and a foreign "vg0-root");
// `dmsetup create failOn` fails.
func dmsetup(t *testing.T, failOn string, have ...string) (disk.DMSetup, *systemtest.Runner) {
	t.Helper()
	control := filepath.Join(t.TempDir(), "control")
	must(t, os.WriteFile(control, nil, 0o600))
	r := &systemtest.Runner{Reply: func(c system.Command) (system.Output, error) {
		switch {
		case c.Args[0] == "ls":
			var b strings.Builder
			for i, n := range append(have, "vg0-root") {
				fmt.Fprintf(&b, "%s\t(253:%d)\n", n, i)
			}
			return systemtest.Print(b.String())
		case c.Args[0] == "create" && c.Args[1] == failOn:
			return systemtest.Exit(1, "device-mapper: reload ioctl on "+failOn+" failed: Invalid argument")
		}
		return system.Output{}, nil
	}}
	return disk.DMSetup{Runner: r, Control: control}, r
}

func TestSystemBackendSnapshot(t *testing.T) {
	dm, run := dmsetup(t, "")
	b := SystemBackend{DM: dm, DeviceSize: func(string) (int64, error) { return 1 << 30, nil }}
	ctx := context.Background()
	// The dm node does not exist on this host; the chown error is expected
	// and must undo what was created, newest first.
	_, err := b.createSnapshot(ctx, serving{owner: Owner{UID: 1000, GID: 1000}}, SnapshotSpec{Name: "banger-abc", Origin: "/dev/loop1", COW: "/dev/loop2", SizeBytes: 2 << 30})
	if err == nil || !strings.Contains(err.Error(), "hand /dev/mapper/banger-abc to uid 1000") {
		t.Fatalf("create: %v", err)
	}
	wantRun := []string{"dmsetup create banger-abc-origin", "dmsetup create banger-abc", "dmsetup remove --retry banger-abc", "dmsetup remove --retry banger-abc-origin"}
	if got := run.Lines(); !slices.Equal(got, wantRun) {
		t.Fatalf("ran %q, want %q", got, wantRun)
	}
	wantTables := []string{"0 2097152 linear /dev/loop1 0\n2097152 2097152 zero", "0 4194304 snapshot /dev/mapper/banger-abc-origin /dev/loop2 P 8"}
	for i, want := range wantTables {
		if got := strings.TrimSpace(run.Stdin()[i]); got != want {
			t.Errorf("table %d:\n got %q\nwant %q", i, got, want)
		}
	}

	b.DM, run = dmsetup(t, "banger-abc")
	if _, err := b.createSnapshot(ctx, serving{}, SnapshotSpec{Name: "banger-abc", Origin: "/dev/loop1", COW: "/dev/loop2"}); err == nil || !strings.Contains(err.Error(), "reload ioctl") {
		t.Fatalf("dmsetup failure not reported: %v", err)
	}
	if got := run.Lines(); !slices.Equal(got, []string{"dmsetup create banger-abc"}) {
		t.Fatalf("same-size snapshot needs no origin device and a failed create nothing to undo: ran %q", got)
	}
	if _, err := b.createSnapshot(ctx, serving{}, SnapshotSpec{Name: "banger-abc", Origin: "/dev/loop1", COW: "/dev/loop2", SizeBytes: 512}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("snapshot smaller than its origin: %v", err)
	}

	b.DM, run = dmsetup(t, "", "banger-abc", "banger-abc-origin", "banger-other")
	_, err = b.removeSnapshot(ctx, serving{}, Named{Name: "banger-abc"})
	must(t, err)
	if want := []string{"dmsetup ls", "dmsetup remove --retry banger-abc", "dmsetup remove --retry banger-abc-origin"}; !slices.Equal(run.Lines(), want) {
		t.Fatalf("remove ran %q, want %q", run.Lines(), want)
	}

	b.DM = disk.DMSetup{Runner: run, Control: filepath.Join(t.TempDir(), "missing")}
	if _, err := b.createSnapshot(ctx, serving{}, SnapshotSpec{Name: "banger-abc", Origin: "/dev/loop1", COW: "/dev/loop2"}); !errors.Is(err, ErrNotAvailable) {
		t.Fatalf("no dm: %v", err)
	}
}

func TestSystemBackendLoopBackingFile(t *testing.T) {
	sys := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(sys, "block", "loop1", "loop"), 0o755))
	must(t, os.WriteFile(filepath.Join(sys, "block", "loop1", "loop", "backing_file"), []byte("/var/lib/banger/vms/a/x.cow\n"), 0o644))
	must(t, os.MkdirAll(filepath.Join(sys, "block", "loop2"), 0o755))
	b := SystemBackend{Sys: sys}
	ctx := context.Background()
	if got, err := b.LoopBackingFile(ctx, "/dev/loop1"); err != nil || got != "/var/lib/banger/vms/a/x.cow" {
		t.Fatalf("bound: %q, %v", got, err)
	}
	if got, err := b.LoopBackingFile(ctx, "/dev/loop2"); err != nil || got != "" {
		t.Fatalf("unbound: %q, %v", got, err)
	}
	if _, err := b.LoopBackingFile(ctx, "/dev/loop3"); err == nil {
		t.Fatal("missing device not reported")
	}
}

func TestSystemBackendChownChmodActOnDescriptor(t *testing.T) {
	requireRoot(t)
	tr := newTree(t, false)
	sock := filepath.Join(tr.run, "vms", "abc", "fc.sock")
	socketAt(t, sock)
	f, err := tr.local.resolve.openBeneath(tr.run, sock)
	must(t, err)
	defer func() { _ = f.Close() }()
	b := HostBackend()
	_, err = b.chown(context.Background(), serving{}, ChownSpec{UID: 4242, GID: 4343, target: f})
	must(t, err)
	_, err = b.chmod(context.Background(), serving{}, ChmodSpec{Mode: 0o640, target: f})
	must(t, err)
	fi, err := os.Lstat(sock)
	must(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 4242 || st.Gid != 4343 || fi.Mode().Perm() != 0o640 {
		t.Fatalf("socket now %d:%d %v, want 4242:4343 0640", st.Uid, st.Gid, fi.Mode().Perm())
	}
}

func TestSystemBackendResolver(t *testing.T) {
	r := &systemtest.Runner{}
	b := SystemBackend{Runner: r}
	ctx := context.Background()
	spec := ResolverSpec{Link: "banger0", Server: netip.MustParseAddr("172.30.0.1"), Domain: "banger"}
	_, err := b.configureResolver(ctx, serving{}, spec)
	must(t, err)
	_, err = b.revertResolver(ctx, serving{}, LinkRef{Link: "banger0"})
	must(t, err)
	want := []string{"resolvectl dns banger0 172.30.0.1", "resolvectl domain banger0 ~banger", "resolvectl default-route banger0 false", "resolvectl revert banger0"}
	if got := r.Lines(); !slices.Equal(got, want) {
		t.Fatalf("resolvectl calls %q", got)
	}
	b.Runner = &systemtest.Runner{Reply: func(system.Command) (system.Output, error) {
		return systemtest.Exit(1, "Failed to get global data: Could not activate remote peer 'org.freedesktop.resolve1'.")
	}}
	if _, err := b.configureResolver(ctx, serving{}, spec); !errors.Is(err, ErrNotAvailable) {
		t.Fatalf("resolved not running: %v", err)
	}
}
