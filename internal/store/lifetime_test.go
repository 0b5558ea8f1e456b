package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestVMLifetime(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	a, b := testVM("a"), testVM("b")
	for _, vm := range []VM{a, b} {
		if err := s.CreateVM(ctx, vm); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s.VMLifetimes(ctx); err != nil || len(got) != 0 {
		t.Fatalf("new VMs' lifetimes = %v, %v; want none", got, err)
	}
	due := time.Date(2026, 12, 7, 23, 0, 0, 0, time.UTC)
	if err := s.SetVMLifetime(ctx, a.ID, Lifetime{ExpiresAt: due}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetVMLifetime(ctx, b.ID, Lifetime{IdleTTL: 10 * time.Minute, Action: TTLStop}); err != nil {
		t.Fatal(err)
	}
	got, err := s.VMLifetimes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l := got[a.ID]; !l.ExpiresAt.Equal(due) || l.IdleTTL != 0 || l.Action != TTLDelete {
		t.Errorf("a: %+v", l)
	}
	if l := got[b.ID]; !l.ExpiresAt.IsZero() || l.IdleTTL != 10*time.Minute || l.Action != TTLStop {
		t.Errorf("b: %+v", l)
	}
	if err := s.SetVMLifetime(ctx, a.ID, Lifetime{}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.VMLifetimes(ctx); len(got) != 1 {
		t.Errorf("after clearing a: %v, want only b", got)
	}
	if err := s.SetVMLifetime(ctx, "nope", Lifetime{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown VM: %v, want ErrNotFound", err)
	}
	if err := s.SetVMLifetime(ctx, a.ID, Lifetime{Action: "explode"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad action: %v, want ErrInvalid", err)
	}
}
