package privileged

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/system"
)

// fakeDM records device-mapper tables instead of calling dmsetup.
type fakeDM struct {
	unavailable error
	created     []string
	removed     []string
	failOn      string
}

func (f *fakeDM) Available() error { return f.unavailable }
func (f *fakeDM) Create(_ context.Context, name string, table []disk.DMTarget) error {
	if name == f.failOn {
		return errors.New("dmsetup: boom")
	}
	if err := disk.ValidateTable(table); err != nil {
		return err
	}
	f.created = append(f.created, name+": "+strings.TrimSpace(disk.FormatTable(table)))
	return nil
}
func (f *fakeDM) Remove(_ context.Context, name string) error {
	f.removed = append(f.removed, name)
	return nil
}
func (f *fakeDM) List(context.Context) ([]string, error) {
	var names []string
	for _, c := range f.created {
		n, _, _ := strings.Cut(c, ":")
		if !slices.Contains(f.removed, n) {
			names = append(names, n)
		}
	}
	return append(names, "vg0-root"), nil
}

func TestSystemBackendSnapshot(t *testing.T) {
	dm := &fakeDM{}
	b := SystemBackend{DM: dm, DeviceSize: func(string) (int64, error) { return 1 << 30, nil }}
	ctx := context.Background()
	// The dm node does not exist on this host; the chown error is expected
	// and must undo what was created.
	_, err := b.CreateSnapshot(ctx, SnapshotSpec{Name: "banger-abc", Origin: "/dev/loop1", COW: "/dev/loop2", SizeBytes: 2 << 30}, Owner{UID: 1000, GID: 1000})
	if err == nil || !strings.Contains(err.Error(), "hand /dev/mapper/banger-abc to uid 1000") {
		t.Fatalf("create: %v", err)
	}
	wantCreated := []string{
		"banger-abc-origin: 0 2097152 linear /dev/loop1 0\n2097152 2097152 zero",
		"banger-abc: 0 4194304 snapshot /dev/mapper/banger-abc-origin /dev/loop2 P 8",
	}
	if !slices.Equal(dm.created, wantCreated) {
		t.Fatalf("tables:\n got %q\nwant %q", dm.created, wantCreated)
	}
	if want := []string{"banger-abc", "banger-abc-origin"}; !slices.Equal(dm.removed, want) {
		t.Fatalf("undo removed %q, want %q", dm.removed, want)
	}

	dm2 := &fakeDM{failOn: "banger-abc"}
	b.DM = dm2
	if _, err := b.CreateSnapshot(ctx, SnapshotSpec{Name: "banger-abc", Origin: "/dev/loop1", COW: "/dev/loop2"}, Owner{}); err == nil {
		t.Fatal("dmsetup failure not reported")
	}
	if len(dm2.created) != 0 || len(dm2.removed) != 0 {
		t.Fatalf("same-size snapshot needs no origin device: created %q removed %q", dm2.created, dm2.removed)
	}
	if _, err := b.CreateSnapshot(ctx, SnapshotSpec{Name: "banger-abc", Origin: "/dev/loop1", COW: "/dev/loop2", SizeBytes: 512}, Owner{}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("snapshot smaller than its origin: %v", err)
	}

	dm3 := &fakeDM{created: []string{"banger-abc: x", "banger-abc-origin: y"}}
	b.DM = dm3
	must(t, b.RemoveSnapshot(ctx, "banger-abc"))
	if want := []string{"banger-abc", "banger-abc-origin"}; !slices.Equal(dm3.removed, want) {
		t.Fatalf("remove: %q", dm3.removed)
	}

	b.DM = &fakeDM{unavailable: errors.New("device-mapper is unavailable: /dev/mapper/control is missing")}
	if _, err := b.CreateSnapshot(ctx, SnapshotSpec{Name: "banger-abc", Origin: "/dev/loop1", COW: "/dev/loop2"}, Owner{}); !errors.Is(err, ErrNotAvailable) {
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
	must(t, b.Chown(context.Background(), f, 4242, 4343))
	must(t, b.Chmod(context.Background(), f, 0o640))
	fi, err := os.Lstat(sock)
	must(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 4242 || st.Gid != 4343 || fi.Mode().Perm() != 0o640 {
		t.Fatalf("socket now %d:%d %v, want 4242:4343 0640", st.Uid, st.Gid, fi.Mode().Perm())
	}
}

// resolvectlFake answers like resolvectl on a host where resolved is not
// running, or succeeds and records the commands.
type resolvectlFake struct {
	down  bool
	calls []string
}

func (r *resolvectlFake) Run(_ context.Context, c system.Command) (system.Output, error) {
	r.calls = append(r.calls, c.String())
	if r.down {
		return system.Output{ExitCode: 1, Stderr: []byte("Failed to get global data: Could not activate remote peer 'org.freedesktop.resolve1'.")}, nil
	}
	return system.Output{}, nil
}

func TestSystemBackendResolver(t *testing.T) {
	r := &resolvectlFake{}
	b := SystemBackend{Runner: r}
	ctx := context.Background()
	must(t, b.ConfigureResolver(ctx, ResolverSpec{Link: "banger0", Server: netip.MustParseAddr("172.30.0.1"), Domain: "banger"}))
	must(t, b.RevertResolver(ctx, "banger0"))
	want := []string{"resolvectl dns banger0 172.30.0.1", "resolvectl domain banger0 ~banger", "resolvectl default-route banger0 false", "resolvectl revert banger0"}
	if !slices.Equal(r.calls, want) {
		t.Fatalf("resolvectl calls %q", r.calls)
	}
	b.Runner = &resolvectlFake{down: true}
	if err := b.ConfigureResolver(ctx, ResolverSpec{Link: "banger0", Server: netip.MustParseAddr("172.30.0.1"), Domain: "banger"}); !errors.Is(err, ErrNotAvailable) {
		t.Fatalf("resolved not running: %v", err)
	}
}
