package store

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func testSnapshot(name string) Snapshot {
	return Snapshot{
		ID: NewID(), Name: name,
		VMID: NewID(), VMName: "dev", ImageID: NewID(), ImageName: "debian",
		VMM: "firecracker", VCPUs: 2, MemoryMiB: 512, DiskSizeBytes: 4 << 30,
		Network: []byte(`{"isolated":true}`),
		State:   SnapshotSaving,
	}
}

func TestSnapshotCRUD(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()

	sn := testSnapshot("before-upgrade")
	if err := s.CreateSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSnapshot(ctx, "before-upgrade")
	if err != nil {
		t.Fatal(err)
	}
	if got.CreatedAt.IsZero() || got.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt = %v, want a UTC time from the clock", got.CreatedAt)
	}
	want := sn
	want.CreatedAt = got.CreatedAt
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GetSnapshot = %+v\nwant          %+v", got, want)
	}
	if byID, err := s.GetSnapshot(ctx, sn.ID); err != nil || byID.Name != sn.Name {
		t.Errorf("GetSnapshot(id) = %+v, %v", byID, err)
	}

	if !got.LastUsedAt.IsZero() {
		t.Errorf("a new snapshot has LastUsedAt %v, want never", got.LastUsedAt)
	}

	// Save: saving → ready with its size; a golden key and its last use are kept.
	ready := got
	ready.State, ready.SizeBytes, ready.Golden, ready.Key = SnapshotReady, 123456, true, "k1"
	ready.LastUsedAt = time.Date(2026, 12, 8, 1, 2, 3, 456, time.UTC)
	if err := s.UpdateSnapshot(ctx, ready); err != nil {
		t.Fatal(err)
	}
	if got, err = s.GetSnapshot(ctx, sn.ID); err != nil || !reflect.DeepEqual(got, ready) {
		t.Errorf("after UpdateSnapshot: %+v, %v\nwant %+v", got, err, ready)
	}

	// An empty network is stored as {} like a VM's.
	bare := testSnapshot("bare")
	bare.Network = nil
	if err := s.CreateSnapshot(ctx, bare); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListSnapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "before-upgrade" || list[1].Name != "bare" {
		t.Fatalf("ListSnapshots = %+v, want oldest first", list)
	}
	if string(list[1].Network) != "{}" {
		t.Errorf("bare network = %q, want {}", list[1].Network)
	}

	if err := s.DeleteSnapshot(ctx, sn.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSnapshot(ctx, sn.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetSnapshot after delete: %v, want ErrNotFound", err)
	}
	if err := s.DeleteSnapshot(ctx, sn.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteSnapshot: %v, want ErrNotFound", err)
	}
	if err := s.UpdateSnapshot(ctx, ready); !errors.Is(err, ErrNotFound) {
		t.Errorf("UpdateSnapshot of a deleted snapshot: %v, want ErrNotFound", err)
	}
}

// A snapshot outlives the VM it was taken of: no foreign key ties them.
func TestSnapshotOutlivesItsVM(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	vm := testVM("dev")
	if err := s.CreateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}
	sn := testSnapshot("dev-1")
	sn.VMID, sn.VMName = vm.ID, vm.Name
	if err := s.CreateSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetSnapshot(ctx, "dev-1"); err != nil || got.VMName != "dev" {
		t.Errorf("snapshot after its VM's delete: %+v, %v", got, err)
	}
}

func TestSnapshotNameAndIDUnique(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	a := testSnapshot("same")
	if err := s.CreateSnapshot(ctx, a); err != nil {
		t.Fatal(err)
	}
	dupName := testSnapshot("same")
	if err := s.CreateSnapshot(ctx, dupName); !errors.Is(err, ErrAlreadyExists) {
		t.Errorf("duplicate name: %v, want ErrAlreadyExists", err)
	}
	dupID := testSnapshot("other")
	dupID.ID = a.ID
	if err := s.CreateSnapshot(ctx, dupID); !errors.Is(err, ErrAlreadyExists) {
		t.Errorf("duplicate id: %v, want ErrAlreadyExists", err)
	}
	b := testSnapshot("b")
	if err := s.CreateSnapshot(ctx, b); err != nil {
		t.Fatal(err)
	}
	b.Name = "same"
	if err := s.UpdateSnapshot(ctx, b); !errors.Is(err, ErrAlreadyExists) {
		t.Errorf("rename onto a taken name: %v, want ErrAlreadyExists", err)
	}
}

// An ID match wins over a name match, so lookups by ID are never hijacked
// by a snapshot named like another's ID.
func TestGetSnapshotIDWinsOverName(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	target := testSnapshot("target")
	if err := s.CreateSnapshot(ctx, target); err != nil {
		t.Fatal(err)
	}
	impostor := testSnapshot(target.ID)
	if err := s.CreateSnapshot(ctx, impostor); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSnapshot(ctx, target.ID)
	if err != nil || got.ID != target.ID {
		t.Errorf("GetSnapshot(%s) = %s, %v; want the snapshot with that ID", target.ID, got.Name, err)
	}
}

func TestSnapshotInvalidRefused(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	cases := map[string]func(*Snapshot){
		"no id":        func(sn *Snapshot) { sn.ID = "" },
		"no name":      func(sn *Snapshot) { sn.Name = "" },
		"no vmm":       func(sn *Snapshot) { sn.VMM = "" },
		"zero vcpus":   func(sn *Snapshot) { sn.VCPUs = 0 },
		"zero memory":  func(sn *Snapshot) { sn.MemoryMiB = 0 },
		"neg disk":     func(sn *Snapshot) { sn.DiskSizeBytes = -1 },
		"neg size":     func(sn *Snapshot) { sn.SizeBytes = -1 },
		"bad state":    func(sn *Snapshot) { sn.State = "half" },
		"empty state":  func(sn *Snapshot) { sn.State = "" },
		"bad network":  func(sn *Snapshot) { sn.Network = []byte("{") },
		"network list": func(sn *Snapshot) { sn.Network = []byte("[1,") },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			sn := testSnapshot("x")
			mutate(&sn)
			if err := s.CreateSnapshot(ctx, sn); !errors.Is(err, ErrInvalid) {
				t.Errorf("CreateSnapshot: %v, want ErrInvalid", err)
			}
		})
	}
	if list, err := s.ListSnapshots(ctx); err != nil || len(list) != 0 {
		t.Errorf("after refusals: %d snapshots, %v; want none", len(list), err)
	}
}

// A database at migration 5 (before snapshots) gains the table on Open and
// keeps its VMs.
func TestSnapshotsMigrationUpgradesOlderDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "banger.db")
	buildDB(t, path, 5,
		`INSERT INTO vms (id, name, vcpus, memory_mib, created_at, state, updated_at)
		 VALUES ('v1', 'old', 1, 256, '2026-01-01T00:00:00.000000000Z', 'stopped', '2026-01-01T00:00:00.000000000Z')`)
	s, err := Open(context.Background(), path, WithClock(newTestClock().Now))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	ctx := context.Background()
	if _, err := s.GetVM(ctx, "old"); err != nil {
		t.Fatalf("VM lost in the upgrade: %v", err)
	}
	if err := s.CreateSnapshot(ctx, testSnapshot("after-upgrade")); err != nil {
		t.Fatalf("snapshots table after the upgrade: %v", err)
	}
}
