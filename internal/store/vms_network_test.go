package store

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
)

func TestUpdateVMNetwork(t *testing.T) {
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	ctx := context.Background()
	if err := s.CreateVM(ctx, VM{ID: NewID(), Name: "dev", VCPUs: 1, MemoryMiB: 128, DiskSizeBytes: 1 << 26}); err != nil {
		t.Fatal(err)
	}
	vm, _ := s.GetVM(ctx, "dev")
	if err := s.UpdateVMNetwork(ctx, vm.ID, json.RawMessage(`{"forwards":["127.0.0.1:8080:80"]}`)); err != nil {
		t.Fatal(err)
	}
	got, _ := s.GetVM(ctx, "dev")
	if string(got.Network) != `{"forwards":["127.0.0.1:8080:80"]}` {
		t.Fatalf("network = %s", got.Network)
	}
	if err := s.UpdateVMNetwork(ctx, vm.ID, json.RawMessage(`{not json`)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("malformed JSON: %v", err)
	}
	if err := s.UpdateVMNetwork(ctx, "nope", json.RawMessage(`{}`)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown vm: %v", err)
	}
}
